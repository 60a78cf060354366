//! A signed client for the bridge protocol: the CLI and the load tool talk to a running bridge
//! through it, and it refuses any answer the bridge did not sign.

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::keys::{Key, random_bytes};
use crate::protocol::{
    HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, request_canonical,
    response_canonical,
};

/// One keep-alive connection to a bridge.
pub struct Client {
    signer: Signer,
    sender: SendRequest<Full<Bytes>>,
}

/// Signs requests for one bridge.
pub struct Signer {
    addr: SocketAddr,
    key: Key,
}

/// A verified answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    /// The body on success; the bridge's own error message otherwise.
    pub fn ok(self) -> Result<serde_json::Value> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let message = self.body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        let code = self.body["error"]["code"].as_str().unwrap_or("error");
        bail!("the bridge answered {} {code}: {message}", self.status)
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr, key: Key) -> Result<Client> {
        let stream = TcpStream::connect(addr).await.with_context(|| {
            format!("cannot reach the bridge at {addr}; is `rlclaw serve` running?")
        })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the bridge failed")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client {
            signer: Signer { addr, key },
            sender,
        })
    }

    /// Sends a signed request and verifies the signed response.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer> {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let request = self.signer.sign(method, path, body)?;
        let nonce = request
            .headers()
            .get(HEADER_NONCE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.sender
            .ready()
            .await
            .context("the bridge closed the connection")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .context("the request to the bridge failed")?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let timestamp = header(HEADER_TIMESTAMP);
        let signature = header(HEADER_SIGNATURE);
        let bytes = response.into_body().collect().await?.to_bytes();
        let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
            bail!(
                "the answer from {} is not signed: it is not an rlclaw bridge with this key",
                self.signer.addr
            );
        };
        let canonical = response_canonical(&timestamp, &nonce, status, &bytes);
        if !self.signer.key.verify(canonical.as_bytes(), &signature) {
            bail!(
                "the answer from {} has a wrong signature: it is not an rlclaw bridge with this key",
                self.signer.addr
            );
        }
        let body = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("the bridge answered with malformed JSON: {e}"))?;
        Ok(Answer { status, body })
    }

    /// Sends a prepared request and returns only its status (the load tool's fast path).
    pub async fn send_prepared(&mut self, request: Request<Full<Bytes>>) -> Result<u16> {
        self.sender
            .ready()
            .await
            .context("the bridge closed the connection")?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

impl Signer {
    pub fn new(addr: SocketAddr, key: Key) -> Signer {
        Signer { addr, key }
    }

    /// Builds a signed request with a fresh nonce.
    pub fn sign(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Request<Full<Bytes>>> {
        let timestamp = (crate::now_ms() / 1000).to_string();
        let nonce = hex::encode(random_bytes::<16>()?);
        let canonical = request_canonical(&timestamp, &nonce, method.as_str(), path, &body);
        let signature = self.key.sign(canonical.as_bytes());
        Ok(Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_KEY_ID, self.key.id())
            .header(HEADER_TIMESTAMP, timestamp)
            .header(HEADER_NONCE, nonce)
            .header(HEADER_SIGNATURE, signature)
            .body(Full::new(Bytes::from(body)))?)
    }
}
