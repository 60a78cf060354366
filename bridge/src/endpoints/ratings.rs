//! `POST /v1/ratings` and `DELETE /v1/ratings`: rate a turn, take a rating back.

use rusqlite::params;
use serde::Deserialize;

use super::{check_id, parse_json};
use crate::protocol::ApiError;
use crate::store::queries::{self, Target, TurnRef};
use crate::store::{Ctx, OpError, Reply};

#[derive(Debug, Clone, Deserialize)]
pub struct Rate {
    pub event_id: String,
    #[serde(deserialize_with = "target")]
    pub target: Target,
    pub rater: String,
    pub value: f64,
    pub source: String,
    #[serde(default)]
    pub emoji: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Unrate {
    pub event_id: String,
    #[serde(deserialize_with = "target")]
    pub target: Target,
    pub rater: String,
}

/// Reads a target, with an error that says which shapes are allowed.
fn target<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    serde_json::from_value(value).map_err(|_| {
        serde::de::Error::custom(
            "`target` must be {\"turn_id\"}, {\"channel\", \"chat\", \"message_id\"} or {\"latest\": {\"session\", \"sender\"}}",
        )
    })
}

pub fn parse_rate(body: &[u8]) -> Result<Rate, ApiError> {
    let rate: Rate = parse_json(body)?;
    check_id("event_id", &rate.event_id, 256)?;
    check_id("rater", &rate.rater, 256)?;
    if !(rate.value.is_finite() && (-1.0..=1.0).contains(&rate.value)) {
        return Err(ApiError::new(
            422,
            "invalid_value",
            "`value` must be a number from -1 to 1.",
        ));
    }
    Ok(rate)
}

pub fn parse_unrate(body: &[u8]) -> Result<Unrate, ApiError> {
    let unrate: Unrate = parse_json(body)?;
    check_id("event_id", &unrate.event_id, 256)?;
    check_id("rater", &unrate.rater, 256)?;
    Ok(unrate)
}

fn find_turn(ctx: &Ctx, target: &Target) -> Result<TurnRef, OpError> {
    queries::resolve(ctx.tx, target)?.ok_or_else(|| {
        ApiError::new(
            404,
            "turn_not_found",
            "No captured turn matches this target.",
        )
        .into()
    })
}

pub fn apply_rate(r: &Rate, ctx: &mut Ctx) -> Result<Reply, OpError> {
    let turn = find_turn(ctx, &r.target)?;
    if r.rater != turn.sender && !ctx.config.raters.contains(&r.rater) {
        return Err(ApiError::new(
            403,
            "not_owner",
            "Only the person this reply answered, or a configured rater, may rate it.",
        )
        .into());
    }
    remove_live(ctx, turn.seq, &r.rater)?;
    ctx.tx.execute(
        "INSERT INTO ratings (turn_seq, rater, value, source, emoji, reason, event_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            turn.seq, r.rater, r.value, r.source, r.emoji, r.reason, r.event_id, ctx.now_ms
        ],
    )?;
    let rating_id = ctx.tx.last_insert_rowid();
    ctx.state.counts.apply_rating(r.value, false, 1);
    Ok(Reply::json(
        200,
        serde_json::json!({
            "rating_id": rating_id,
            "turn_id": turn.turn_id,
            "value": r.value,
            "counts": ctx.state.counts.rating_json(),
        }),
    ))
}

pub fn apply_unrate(u: &Unrate, ctx: &mut Ctx) -> Result<Reply, OpError> {
    let turn = find_turn(ctx, &u.target)?;
    let removed = remove_live(ctx, turn.seq, &u.rater)?.is_some();
    Ok(Reply::json(
        200,
        serde_json::json!({"removed": removed, "turn_id": turn.turn_id, "counts": ctx.state.counts.rating_json()}),
    ))
}

/// Retires a rater's live rating of a turn (history is kept); returns its value if there was one.
pub fn remove_live(ctx: &mut Ctx, turn_seq: i64, rater: &str) -> Result<Option<f64>, OpError> {
    let Some(live) = queries::live_rating(ctx.tx, turn_seq, rater)? else {
        return Ok(None);
    };
    ctx.tx.execute(
        "UPDATE ratings SET removed_at = ?1 WHERE id = ?2",
        params![ctx.now_ms, live.id],
    )?;
    ctx.state.counts.apply_rating(live.value, live.trained, -1);
    Ok(Some(live.value))
}
