//! The wire contract of shared/PROTOCOL.md: auth headers, canonical strings, error bodies.

mod auth;
mod error;

pub use auth::{
    AuthHeaders, HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_CLOCK_SKEW_S,
    NONCE_KEEP_S, request_canonical, response_canonical, valid_nonce,
};
pub use error::ApiError;
