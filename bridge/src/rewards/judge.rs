//! The LLM judge: an OpenAI-compatible chat endpoint asked to score a reply's conciseness,
//! correctness and helpfulness in [0, 1] as strict JSON. This module is the settings, where the
//! turn text goes, and one call; `judging` decides what to judge and when.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::SettingsError;
use super::scores::Outcome;
use crate::config::Serving;

/// `[rewards.judge]`. Off until `url` is set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeSettings {
    /// An OpenAI-compatible base URL (`http://host:port/v1`), or `local`: the model endpoint
    /// `rlclaw serve` runs itself ([serving] endpoint or --model-endpoint).
    pub url: Option<String>,
    /// The model to ask for (default: [serving] model_id for `local`, else "rlclaw").
    pub model: Option<String>,
    /// The environment variable that holds the endpoint's API key, if it needs one.
    pub api_key_env: Option<String>,
    /// At most this many calls in any hour.
    pub calls_per_hour: u32,
    /// How long one call may take.
    pub timeout_s: f64,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        JudgeSettings {
            url: None,
            model: None,
            api_key_env: None,
            calls_per_hour: 30,
            timeout_s: 60.0,
        }
    }
}

/// Where the judge is reached, resolved from the settings.
#[derive(Debug, Clone)]
pub struct Target {
    /// The full `.../chat/completions` address.
    pub uri: Uri,
    pub model: String,
    pub api_key: Option<String>,
    /// The endpoint is on this machine (a loopback address), so turn text stays here.
    pub loopback: bool,
}

impl JudgeSettings {
    pub fn check(&self) -> Result<(), SettingsError> {
        if let Some(url) = &self.url
            && url != "local"
        {
            parse_base(url)?;
        }
        if self.calls_per_hour == 0 {
            return Err(SettingsError(
                "[rewards.judge] calls_per_hour must be at least 1 (leave url unset to turn the judge off)".into(),
            ));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0 && self.timeout_s <= 600.0) {
            return Err(SettingsError(
                "[rewards.judge] timeout_s must be a number of seconds above 0 and at most 600"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// The endpoint to call: `Ok(None)` when the judge is off, an error when it is configured
    /// but cannot run (saying why).
    pub fn target(&self, serving: &Serving) -> Result<Option<Target>, SettingsError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let (base, default_model) = if url == "local" {
            let endpoint = serving.endpoint.ok_or_else(|| {
                SettingsError(
                    "the judge is set to `local`, but the model endpoint is off: set [serving] endpoint or start serve with --model-endpoint".into(),
                )
            })?;
            (
                parse_base(&format!("http://{endpoint}/v1"))?,
                serving.model_id.clone().unwrap_or_else(|| "rlclaw".into()),
            )
        } else {
            (parse_base(url)?, "rlclaw".to_owned())
        };
        let api_key = match &self.api_key_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|_| {
                SettingsError(format!(
                    "the judge's API key variable {var} is not set in the bridge's environment"
                ))
            })?),
        };
        let path = format!("{}/chat/completions", base.path().trim_end_matches('/'));
        let uri = Uri::builder()
            .scheme(base.scheme_str().unwrap_or("http"))
            .authority(base.authority().map(|a| a.as_str()).unwrap_or_default())
            .path_and_query(path)
            .build()
            .map_err(|e| SettingsError(format!("[rewards.judge] url: {e}")))?;
        Ok(Some(Target {
            loopback: is_loopback_host(base.host().unwrap_or_default()),
            uri,
            model: self.model.clone().unwrap_or(default_model),
            api_key,
        }))
    }
}

fn parse_base(url: &str) -> Result<Uri, SettingsError> {
    let bad = |why: &str| SettingsError(format!("[rewards.judge] url {url:?}: {why}"));
    let uri: Uri = url
        .parse()
        .map_err(|_| bad("not a URL like http://127.0.0.1:8421/v1"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("it must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    if uri.query().is_some() {
        return Err(bad("give the base URL without a query"));
    }
    Ok(uri)
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The judge's three figures, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
pub struct Verdict {
    pub conciseness: f64,
    pub correctness: f64,
    pub helpfulness: f64,
}

impl Verdict {
    /// The judge source's score: the mean of the three.
    pub fn score(&self) -> f64 {
        (self.conciseness + self.correctness + self.helpfulness) / 3.0
    }
}

/// Reads the verdict from a chat answer's content: exactly one JSON object with the three
/// figures as numbers in [0, 1] (other keys are ignored); anything else is malformed.
pub fn parse_verdict(content: &str) -> Result<Verdict, String> {
    let value: serde_json::Value = serde_json::from_str(content.trim())
        .map_err(|e| format!("the answer is not a JSON object: {e}"))?;
    if !value.is_object() {
        return Err("the answer is not a JSON object".into());
    }
    let figure = |name: &str| -> Result<f64, String> {
        let v = value[name]
            .as_f64()
            .ok_or_else(|| format!("`{name}` is missing or not a number"))?;
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("`{name}` is {v}, outside [0, 1]"));
        }
        Ok(v)
    };
    Ok(Verdict {
        conciseness: figure("conciseness")?,
        correctness: figure("correctness")?,
        helpfulness: figure("helpfulness")?,
    })
}

/// Reads the content of the first choice of an OpenAI chat completion.
pub fn parse_completion(body: &[u8]) -> Result<Verdict, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the endpoint's answer is not JSON: {e}"))?;
    let content = value["choices"][0]["message"]["content"]
        .as_str()
        .ok_or("the endpoint's answer has no choices[0].message.content")?;
    parse_verdict(content)
}

const INSTRUCTIONS: &str = "You grade an AI assistant's reply to a task. Score three things from 0.0 to 1.0: \
conciseness (1.0: no needless words), correctness (1.0: it solves the task properly) and \
helpfulness (1.0: it is useful to the person). Answer with only this JSON object and nothing \
else: {\"conciseness\": X, \"correctness\": Y, \"helpfulness\": Z}";

/// Longest prompt or reply sent, in characters: the judge needs the gist, not a whole log.
const MAX_CHARS: usize = 6000;
/// Largest answer read from the endpoint.
const MAX_ANSWER_BYTES: usize = 1 << 20;

fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The chat completion request for one turn.
pub fn request_body(model: &str, prompt: &str, response: &str) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": format!("Task:\n{}\n\nReply:\n{}", cut(prompt), cut(response))},
        ],
        "temperature": 0,
        "max_tokens": 200,
        "stream": false,
    })
}

/// Asks the judge about one turn, within `timeout`: the verdict, or how the call failed.
pub async fn ask(
    target: &Target,
    timeout: Duration,
    prompt: &str,
    response: &str,
) -> Result<Verdict, (Outcome, String)> {
    let body = request_body(&target.model, prompt, response).to_string();
    match tokio::time::timeout(timeout, call(target, body)).await {
        Err(_) => Err((
            Outcome::Timeout,
            format!("no answer within {:.1} s", timeout.as_secs_f64()),
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(bytes)) => parse_completion(&bytes).map_err(|e| (Outcome::Malformed, e)),
    }
}

/// One POST to the endpoint; the answer's body when its status is 2xx.
async fn call(target: &Target, body: String) -> Result<Bytes, (Outcome, String)> {
    let unreachable = |e: String| (Outcome::Unreachable, e);
    let host = target.uri.host().unwrap_or_default().to_owned();
    let https = target.uri.scheme_str() == Some("https");
    let port = target
        .uri
        .port_u16()
        .unwrap_or(if https { 443 } else { 80 });
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tcp = TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| unreachable(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = rustls::pki_types::ServerName::try_from(bare.clone())
            .map_err(|e| unreachable(format!("{host} is not a valid TLS name: {e}")))?;
        let tls = tls_connector()
            .map_err(unreachable)?
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS with {host} failed: {e}")))?;
        exchange(tls, target, body).await
    } else {
        exchange(tcp, target, body).await
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("no TLS protocol version is available: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn exchange<IO>(io: IO, target: &Target, body: String) -> Result<Bytes, (Outcome, String)>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let error = |e: String| (Outcome::Error, e);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| error(format!("HTTP handshake failed: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::post(target.uri.path())
        .header(
            HOST,
            target
                .uri
                .authority()
                .map(|a| a.as_str())
                .unwrap_or_default(),
        )
        .header(CONTENT_TYPE, "application/json");
    if let Some(key) = &target.api_key {
        request = request.header(AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| error(format!("cannot build the request: {e}")))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| error(format!("the request failed: {e}")))?;
    let status = answer.status();
    let bytes = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| error(format!("the answer could not be read: {e}")))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(error(format!(
            "the endpoint answered {status}: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strict_json_verdict_is_read_and_averaged() {
        let v = parse_verdict(r#" {"conciseness": 0.9, "correctness": 0.6, "helpfulness": 0.3} "#)
            .unwrap();
        assert!((v.score() - 0.6).abs() < 1e-9);
    }

    #[test]
    fn anything_but_the_strict_json_is_malformed() {
        for bad in [
            "Sure! {\"conciseness\": 1, \"correctness\": 1, \"helpfulness\": 1}",
            "{\"conciseness\": 1, \"correctness\": 1}",
            "{\"conciseness\": 1.5, \"correctness\": 1, \"helpfulness\": 1}",
            "{\"conciseness\": \"high\", \"correctness\": 1, \"helpfulness\": 1}",
            "[0.5, 0.5, 0.5]",
            "",
        ] {
            assert!(parse_verdict(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_completion(b"{\"choices\": []}").is_err());
    }

    #[test]
    fn local_means_the_bridges_own_model_endpoint() {
        let s = JudgeSettings {
            url: Some("local".into()),
            ..JudgeSettings::default()
        };
        assert!(s.target(&Serving::default()).is_err(), "no endpoint is on");
        let serving = Serving {
            endpoint: Some("127.0.0.1:8421".parse().unwrap()),
            model_id: None,
        };
        let t = s.target(&serving).unwrap().unwrap();
        assert_eq!(
            t.uri.to_string(),
            "http://127.0.0.1:8421/v1/chat/completions"
        );
        assert_eq!(t.model, "rlclaw");
        assert!(t.loopback);
    }

    #[test]
    fn the_api_key_goes_in_a_bearer_header_and_the_verdict_comes_back() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the JSON body has ended (the request is small).
            while !seen.ends_with(b"}") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"choices":[{"message":{"content":"{\"conciseness\":1,\"correctness\":0.5,\"helpfulness\":0}"}}]}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        let target = Target {
            uri: format!("http://{addr}/v1/chat/completions")
                .parse()
                .unwrap(),
            model: "grader".into(),
            api_key: Some("sekrit".into()),
            loopback: true,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let verdict = runtime
            .block_on(ask(&target, Duration::from_secs(10), "task", "reply"))
            .unwrap();
        assert!((verdict.score() - 0.5).abs() < 1e-9);
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("post /v1/chat/completions http/1.1"),
            "{request}"
        );
        assert!(
            request.contains("authorization: bearer sekrit"),
            "{request}"
        );
    }

    #[test]
    fn a_remote_url_is_not_loopback_and_a_bad_one_is_refused() {
        let s = JudgeSettings {
            url: Some("https://api.example.com/v1/".into()),
            model: Some("grader".into()),
            ..JudgeSettings::default()
        };
        let t = s.target(&Serving::default()).unwrap().unwrap();
        assert_eq!(
            t.uri.to_string(),
            "https://api.example.com/v1/chat/completions"
        );
        assert!(!t.loopback);
        let bad = JudgeSettings {
            url: Some("ftp://x".into()),
            ..JudgeSettings::default()
        };
        assert!(bad.check().is_err());
        let missing_key = JudgeSettings {
            url: Some("http://localhost:9/v1".into()),
            api_key_env: Some("RLCLAW_TEST_SURELY_UNSET_VARIABLE".into()),
            ..JudgeSettings::default()
        };
        assert!(missing_key.target(&Serving::default()).is_err());
        assert!(
            JudgeSettings::default()
                .target(&Serving::default())
                .unwrap()
                .is_none()
        );
    }
}
