//! The HTTP server: accept loopback connections, run each request through `request::handle`,
//! and on SIGTERM stop accepting, finish what is in flight and let the writer drain.

mod keyring;
mod request;

pub use keyring::KeyRing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::store::Store;

/// Everything a request needs, shared by all connections.
pub struct App {
    pub store: Store,
    pub config: Arc<Config>,
    pub keys: KeyRing,
}

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(8);

/// Serves until SIGTERM or SIGINT, then drains.
pub async fn serve(listener: TcpListener, app: Arc<App>) -> Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let conn = http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| request::handle(req, app.clone())),
                    );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection from {peer} ended: {e}");
                    }
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN:?}");
    }
    Ok(())
}

/// Binds the listen address, refusing a non-loopback one unless explicitly allowed.
pub async fn bind(addr: SocketAddr, allow_non_loopback: bool) -> Result<TcpListener> {
    if !addr.ip().is_loopback() && !allow_non_loopback {
        anyhow::bail!(
            "{addr} is not a loopback address; the bridge listens on loopback only unless started with --allow-non-loopback"
        );
    }
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}
