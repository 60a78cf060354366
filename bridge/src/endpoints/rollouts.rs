//! `POST /v1/rollouts`: a finished agent task with its measurements, stored as a turn so that
//! every rating target works on it, with its automatic reward (a little arithmetic, so it is
//! computed here, in the same transaction).

use serde::{Deserialize, Serialize};

use super::turns::{Message, NewTurn, check_texts, insert};
use super::{check_id, parse_json};
use crate::keys::sha256_hex;
use crate::protocol::ApiError;
use crate::rewards::{Measures, scores};
use crate::store::{Ctx, OpError, Reply};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Rollout {
    pub rollout_id: String,
    pub worker: String,
    pub prompt: String,
    pub response: String,
    #[serde(default)]
    pub context: Vec<Message>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub tokens: Option<f64>,
    #[serde(default)]
    pub errors: Option<f64>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub chat: Option<String>,
    #[serde(default)]
    pub message_ids: Vec<String>,
    #[serde(default)]
    pub sender: Option<String>,
    /// The session `latest` targets use; the worker when absent.
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub at: Option<i64>,
}

pub fn parse(body: &[u8], max_text: usize) -> Result<Rollout, ApiError> {
    let r: Rollout = parse_json(body)?;
    check_id("rollout_id", &r.rollout_id, 128)?;
    check_id("worker", &r.worker, 256)?;
    for (name, v) in [
        ("duration_s", r.duration_s),
        ("tokens", r.tokens),
        ("errors", r.errors),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(ApiError::invalid(format!(
                "`{name}` must be a non-negative number."
            )));
        }
    }
    check_texts(&r.prompt, &r.response, &r.context, max_text)?;
    Ok(r)
}

pub fn apply(r: &Rollout, ctx: &mut Ctx) -> Result<Reply, OpError> {
    let digest = sha256_hex(
        serde_json::to_string(r)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .as_bytes(),
    );
    let measures = serde_json::json!({
        "duration_s": r.duration_s, "tokens": r.tokens, "errors": r.errors,
    });
    let automatic = ctx.config.rewards.automatic.formula().and_then(|f| {
        f.score(&Measures {
            duration_s: r.duration_s,
            tokens: r.tokens,
            errors: r.errors,
        })
    });
    let extra = match automatic {
        Some(score) => serde_json::json!({"rewards": {"automatic": (score * 1e4).round() / 1e4}}),
        None => serde_json::json!({}),
    };
    let reply = insert(
        NewTurn {
            turn_id: &r.rollout_id,
            kind: "rollout",
            session: r.session.as_deref().unwrap_or(&r.worker),
            channel: r.channel.as_deref().unwrap_or("rollout"),
            account: None,
            chat: r.chat.as_deref(),
            // Nobody owns a rollout without a sender: only configured raters may rate it.
            sender: r.sender.as_deref().unwrap_or(""),
            group: false,
            message_ids: &r.message_ids,
            prompt: &r.prompt,
            response: &r.response,
            context: &r.context,
            model: r.model.as_deref(),
            at: r.at,
            worker: Some(&r.worker),
            measures: Some(measures),
            digest,
        },
        ctx,
        extra,
    )?;
    if let (201, Some(score)) = (reply.status, automatic) {
        scores::insert_automatic(ctx.tx, &r.rollout_id, score, ctx.now_ms)?;
    }
    Ok(reply)
}
