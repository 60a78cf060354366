//! The HTTP server: accept connections (plain on loopback, TLS beyond it), run each request
//! through `request::handle`, and on SIGTERM stop accepting, finish what is in flight and let
//! the writer drain.

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
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

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

/// A bound address; connections to it speak TLS when it has an acceptor (beyond loopback).
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Serves every listener until SIGTERM or SIGINT, then drains.
pub async fn serve(listeners: Vec<Listener>, app: Arc<App>) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let (stop, stopped) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, app.clone(), stopped.clone()));
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop.send(true);
    while loops.join_next().await.is_some() {}
    Ok(())
}

/// Accepts connections until `stop`, then waits (at most `DRAIN`) for its requests in flight.
async fn accept_loop(listener: Listener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.tcp.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (app, tls, watcher) = (app.clone(), listener.tls.clone(), graceful.watcher());
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(stream, app, watcher, peer).await,
                        Some(tls) => match tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(stream, app, watcher, peer).await,
                            Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                        },
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN:?}");
    }
}

/// HTTP/1.1 on one accepted connection, plain or TLS, until it closes or the drain ends it.
async fn serve_connection<IO>(
    io: IO,
    app: Arc<App>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| request::handle(req, app.clone()));
    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection from {peer} ended: {e}");
    }
}

/// How long a TLS client gets to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Binds a listen address. Beyond loopback only when explicitly allowed, and only with TLS:
/// the signature proves who sent a request but does not hide the chat text in it.
pub async fn bind(
    addr: SocketAddr,
    allow_non_loopback: bool,
    tls: impl FnOnce() -> Result<TlsAcceptor>,
) -> Result<Listener> {
    let tls = if addr.ip().is_loopback() {
        None
    } else {
        if !allow_non_loopback {
            anyhow::bail!(
                "{addr} is not a loopback address; the bridge listens on loopback only unless \
                 started with --allow-non-loopback"
            );
        }
        Some(tls().with_context(|| {
            format!(
                "listening on {addr} lets other machines reach the bridge, and it does that only \
                 with TLS so that chat text never crosses the network in the clear; run \
                 `rlclaw tls init --name <this machine's name>` and give clients the pin it prints"
            )
        })?)
    };
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok(Listener { tcp, tls })
}
