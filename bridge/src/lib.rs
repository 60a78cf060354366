//! rlclaw's bridge: the local daemon that receives signed ratings from the OpenClaw plugin (and
//! other clients), keeps them durably in SQLite, and trains and serves the person's adapter.
//!
//! The request path reads top to bottom: `server` accepts and authenticates a request,
//! `endpoints` parse it into an operation, the `store`'s single writer applies operations in
//! group-committed transactions, and `server` signs the reply.

pub mod cli;
pub mod client;
pub mod config;
pub mod datadir;
pub mod endpoints;
pub mod install;
pub mod keys;
pub mod protocol;
pub mod rewards;
pub mod server;
#[cfg(feature = "model-endpoint")]
pub mod serving;
pub mod store;
pub mod tls;
pub mod training;

/// The bridge's version, as `GET /healthz` and `status` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
