//! One module per endpoint, each read top to bottom as parse → apply → reply. `parse` runs on
//! the request's task; `apply` runs inside the writer's transaction.

pub mod commands;
pub mod ratings;
pub mod rollouts;
pub mod status;
pub mod turns;

use serde::de::DeserializeOwned;

use crate::protocol::ApiError;
use crate::store::{Ctx, OpError, Reply};

/// Everything the writer can be asked to do.
#[derive(Debug)]
pub enum Op {
    Capture(turns::Capture),
    Rollout(rollouts::Rollout),
    Rate(ratings::Rate),
    Unrate(ratings::Unrate),
    Command(commands::Command),
    Status,
    /// The background judge's outcome for one turn (not a request: it comes from the daemon).
    Judged(crate::rewards::judging::Judged),
    /// A report read after its request committed, to remember as the answer to its event id.
    Remember {
        endpoint: &'static str,
        event_id: String,
        reply: Reply,
    },
    /// The request was authentic but could not be parsed: only its nonce is used up.
    Refuse(ApiError),
}

impl Op {
    /// Endpoints that remember their first successful answer per `event_id`.
    pub fn idempotency_key(&self) -> Option<(&'static str, &str)> {
        match self {
            Op::Rate(r) => Some(("POST /v1/ratings", &r.event_id)),
            Op::Unrate(u) => Some(("DELETE /v1/ratings", &u.event_id)),
            Op::Command(c) => Some(("POST /v1/commands", &c.event_id)),
            _ => None,
        }
    }

    pub fn apply(&self, ctx: &mut Ctx) -> Result<Reply, OpError> {
        match self {
            Op::Capture(c) => turns::apply(c, ctx),
            Op::Rollout(r) => rollouts::apply(r, ctx),
            Op::Rate(r) => ratings::apply_rate(r, ctx),
            Op::Unrate(u) => ratings::apply_unrate(u, ctx),
            Op::Command(c) => commands::apply(c, ctx),
            Op::Status => status::apply(ctx),
            Op::Judged(j) => crate::rewards::judging::apply(j, ctx),
            Op::Remember {
                endpoint,
                event_id,
                reply,
            } => Ok(crate::store::remember(ctx.tx, endpoint, event_id, reply)?),
            Op::Refuse(e) => Err(OpError::Api(e.clone())),
        }
    }
}

/// Parses a JSON object body; any failure is `400 invalid_request` naming the problem.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("The body is not valid JSON: {e}.")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("The body must be a JSON object."));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("{e}.")))
}

/// Checks an id's length in characters.
pub fn check_id(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n == 0 || n > max {
        return Err(ApiError::invalid(format!(
            "`{name}` must be 1 to {max} characters."
        )));
    }
    Ok(())
}

/// Checks that a text is within the configured byte limit (never cut silently).
pub fn check_text(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::new(
            413,
            "text_too_large",
            format!("`{name}` is {} bytes; the limit is {max}.", value.len()),
        ));
    }
    Ok(())
}
