//! rlclaw's OpenClaw plugin, as a sans-IO state machine.
//!
//! The host feeds events (chat messages, commands, reactions, bridge answers, ticks) with the
//! time and fresh random bytes; the plugin answers with effects (signed requests for the bridge,
//! replies to show, log lines). The pure-Rust core here is tested natively; `component` exports
//! it as a WebAssembly component that imports nothing (see `wit/rlclaw.wit`).

pub mod commands;
pub mod config;
pub mod emoji;
pub mod outbox;
pub mod polls;
pub mod reactions;
pub mod signing;
pub mod state;
pub mod turns;
pub mod types;

#[cfg(target_arch = "wasm32")]
mod component;

pub use state::Plugin;
pub use types::*;
