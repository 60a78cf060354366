//! One request, in PROTOCOL.md's order: size limit, auth headers, key, clock, body, signature,
//! then the endpoint (whose nonce the writer checks and uses up in the same transaction).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response};

use super::App;
use crate::endpoints::{self, Op};
use crate::keys::Key;
use crate::protocol::{
    ApiError, AuthHeaders, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_CLOCK_SKEW_S,
    request_canonical, response_canonical, valid_nonce,
};
use crate::store::Reply;

pub async fn handle(
    req: Request<Incoming>,
    app: Arc<App>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let nonce = header(&req, HEADER_NONCE).filter(|n| valid_nonce(n));
    let (answer, key) = answer(req, &app).await;
    let (status, body) = match answer {
        Ok(reply) => (reply.status, reply.body.into_bytes()),
        Err(e) => (e.status, e.body()),
    };
    let key = key.unwrap_or_else(|| app.keys.current());
    Ok(respond(status, body, nonce.as_deref(), &key))
}

/// The answer, and the key that verified the request (if one did).
async fn answer(req: Request<Incoming>, app: &App) -> (Result<Reply, ApiError>, Option<Key>) {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        let body = serde_json::json!({"ok": true, "version": crate::VERSION});
        return (Ok(Reply::json(200, body)), None);
    }
    let max = app.config.max_body_bytes;
    let declared = header(&req, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return (Err(too_large(max)), None);
    }
    let auth = match authenticate_headers(&req, app) {
        Ok(auth) => auth,
        Err(e) => return (Err(e), None),
    };
    let (key, headers) = auth;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let body = match Limited::new(req.into_body(), max as usize).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return (Err(too_large(max)), Some(key));
        }
        Err(e) => {
            return (
                Err(ApiError::invalid(format!(
                    "The body could not be read: {e}."
                ))),
                Some(key),
            );
        }
    };
    let canonical = request_canonical(
        &headers.timestamp,
        &headers.nonce,
        method.as_str(),
        &path_and_query,
        &body,
    );
    if !key.verify(canonical.as_bytes(), &headers.signature) {
        let e = ApiError::new(
            401,
            "bad_signature",
            "The request signature does not verify.",
        );
        return (Err(e), Some(key));
    }
    let op = route(&method, &path, &body, app);
    (app.store.submit(Some(headers.nonce), op).await, Some(key))
}

/// The header checks that need no body: form, key id, clock.
fn authenticate_headers(
    req: &Request<Incoming>,
    app: &App,
) -> Result<(Key, AuthHeaders), ApiError> {
    let headers = AuthHeaders::parse(|name| header(req, name)).ok_or_else(|| {
        ApiError::new(
            401,
            "missing_auth",
            "The request lacks a well-formed X-Rlclaw-Key-Id, -Timestamp, -Nonce or -Signature header.",
        )
    })?;
    let key = app.keys.lookup(&headers.key_id).ok_or_else(|| {
        ApiError::new(
            401,
            "unknown_key",
            "The bridge has no key with this key id.",
        )
    })?;
    let skew = (headers.timestamp_s() - crate::now_ms() / 1000).abs();
    if skew > MAX_CLOCK_SKEW_S {
        return Err(ApiError::new(
            401,
            "stale_timestamp",
            format!(
                "The request's timestamp is {skew} s from the bridge's clock; the limit is {MAX_CLOCK_SKEW_S} s."
            ),
        ));
    }
    Ok((key, headers))
}

/// Parses the body for its endpoint. A parse error still goes to the writer, which uses up
/// the nonce before answering with it.
fn route(method: &Method, path: &str, body: &[u8], app: &App) -> Op {
    let max_text = app.config.max_text_bytes;
    let parsed = match (method, path) {
        (&Method::POST, "/v1/turns") => endpoints::turns::parse(body, max_text).map(Op::Capture),
        (&Method::POST, "/v1/rollouts") => {
            endpoints::rollouts::parse(body, max_text).map(Op::Rollout)
        }
        (&Method::POST, "/v1/ratings") => endpoints::ratings::parse_rate(body).map(Op::Rate),
        (&Method::DELETE, "/v1/ratings") => endpoints::ratings::parse_unrate(body).map(Op::Unrate),
        (&Method::POST, "/v1/commands") => endpoints::commands::parse(body).map(Op::Command),
        (&Method::GET, "/v1/status") => Ok(Op::Status),
        (_, "/v1/turns" | "/v1/rollouts" | "/v1/ratings" | "/v1/commands" | "/v1/status") => {
            Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{path} does not take {method}."),
            ))
        }
        _ => Err(ApiError::new(
            404,
            "not_found",
            format!("There is no endpoint {path}."),
        )),
    };
    parsed.unwrap_or_else(Op::Refuse)
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        413,
        "body_too_large",
        format!("The request body is over the bridge's limit of {max} bytes."),
    )
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A JSON response, signed when the request carried a well-formed nonce.
fn respond(status: u16, body: Vec<u8>, nonce: Option<&str>, key: &Key) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json");
    if let Some(nonce) = nonce {
        let timestamp = (crate::now_ms() / 1000).to_string();
        let signature = key.sign(response_canonical(&timestamp, nonce, status, &body).as_bytes());
        builder = builder
            .header(HEADER_TIMESTAMP, timestamp)
            .header(HEADER_SIGNATURE, signature);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| {
            let mut fallback = Response::new(Full::new(Bytes::from_static(
            br#"{"error":{"code":"internal_error","message":"The response could not be built."}}"#,
        )));
            *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            fallback
        })
}
