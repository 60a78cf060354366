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
pub mod memory;
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

/// Sleeps `total` in steps of 100 ms, waking early once `stop` is set: background threads
/// (the scheduler, the judge) wait this way so that shutdown never waits out their idle time.
pub fn sleep_unless(stop: &std::sync::atomic::AtomicBool, total: std::time::Duration) {
    let step = std::time::Duration::from_millis(100);
    let mut slept = std::time::Duration::ZERO;
    while slept < total && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
