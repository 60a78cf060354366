//! Shared helpers for the end-to-end tests: start a real bridge, speak its signed protocol,
//! host the real plugin component.

pub mod bridge;
pub mod cli;
pub mod http;
pub mod model;
pub mod wasm_host;
