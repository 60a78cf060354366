//! `POST /v1/commands`: chat commands. `status` and `undo` are anyone's; `train`, `rollback`,
//! `reset`, `pause` and `resume` are admin commands, checked against the bridge's own allowlist
//! and rate-limited per sender.

use rusqlite::{OptionalExtension, params};
use serde::Deserialize;

use super::status::Read;
use super::{check_id, parse_json, ratings};
use crate::protocol::ApiError;
use crate::store::{Ctx, OpError, Reply};

#[derive(Debug, Clone, Deserialize)]
pub struct Command {
    pub event_id: String,
    pub name: String,
    pub sender: String,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
}

const ADMIN: &[&str] = &["train", "rollback", "reset", "pause", "resume"];
const OPEN: &[&str] = &["status", "undo"];

pub fn parse(body: &[u8]) -> Result<Command, ApiError> {
    let c: Command = parse_json(body)?;
    check_id("event_id", &c.event_id, 256)?;
    check_id("sender", &c.sender, 256)?;
    if !ADMIN.contains(&c.name.as_str()) && !OPEN.contains(&c.name.as_str()) {
        return Err(ApiError::new(
            400,
            "unknown_command",
            format!(
                "Unknown command `{}`; try status, undo, train, rollback, reset, pause or resume.",
                c.name
            ),
        ));
    }
    Ok(c)
}

pub fn apply(c: &Command, ctx: &mut Ctx) -> Result<Reply, OpError> {
    let body = match c.name.as_str() {
        "status" => {
            audit(c, ctx, "status")?;
            return Ok(Reply::read(Read::Chat(ctx.state.counts)));
        }
        "undo" => undo(c, ctx)?,
        name => {
            admit(c, ctx)?;
            let text = match name {
                "pause" => set_paused(ctx, true)?,
                "resume" => set_paused(ctx, false)?,
                "train" => queue_training(ctx)?,
                "rollback" => ctx
                    .control
                    .rollback(c.args.first().map(String::as_str), &c.sender)?,
                "reset" => ctx.control.reset()?,
                other => {
                    return Err(ApiError::new(
                        400,
                        "unknown_command",
                        format!("Unknown command `{other}`."),
                    )
                    .into());
                }
            };
            serde_json::json!({"text": text})
        }
    };
    audit(c, ctx, body["text"].as_str().unwrap_or_default())?;
    Ok(Reply::json(200, body))
}

fn audit(c: &Command, ctx: &Ctx, outcome: &str) -> rusqlite::Result<()> {
    ctx.tx.execute(
        "INSERT INTO audit (at, sender, session, name, args, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            ctx.now_ms,
            c.sender,
            c.session,
            c.name,
            serde_json::to_string(&c.args).unwrap_or_default(),
            outcome,
        ],
    )?;
    Ok(())
}

/// The admin allowlist, then at most `admin_per_minute` admin commands per sender.
fn admit(c: &Command, ctx: &mut Ctx) -> Result<(), OpError> {
    if !ctx.config.admins.contains(&c.sender) {
        return Err(ApiError::new(
            403,
            "not_admin",
            format!(
                "`{}` is an admin command, and you are not an admin of this bridge.",
                c.name
            ),
        )
        .into());
    }
    let window_start = ctx.now_ms - 60_000;
    let hits = ctx.state.admin_hits.entry(c.sender.clone()).or_default();
    while hits.front().is_some_and(|&t| t <= window_start) {
        hits.pop_front();
    }
    if hits.len() >= ctx.config.admin_per_minute as usize {
        return Err(ApiError::new(
            429,
            "rate_limited",
            "Too many admin commands in the last minute; wait a moment.",
        )
        .into());
    }
    hits.push_back(ctx.now_ms);
    Ok(())
}

/// Takes back the sender's most recent live rating in the session.
fn undo(c: &Command, ctx: &mut Ctx) -> Result<serde_json::Value, OpError> {
    let latest: Option<(i64, String, String, f64)> = ctx
        .tx
        .query_row(
            "SELECT r.turn_seq, t.turn_id, t.response, r.value FROM ratings r
             JOIN turns t ON t.seq = r.turn_seq
             WHERE r.rater = ?1 AND r.removed_at IS NULL AND (?2 IS NULL OR t.session = ?2)
             ORDER BY r.created_at DESC, r.id DESC LIMIT 1",
            params![c.sender, c.session],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((seq, turn_id, response, value)) = latest else {
        return Ok(
            serde_json::json!({"text": "Nothing to undo: you have no live rating here.", "undone": null}),
        );
    };
    ratings::remove_live(ctx, seq, &c.sender)?;
    let label = if value > 0.0 {
        "👍"
    } else if value < 0.0 {
        "👎"
    } else {
        "rating"
    };
    Ok(serde_json::json!({
        "text": format!("Took back your {label} on “{}”.", snippet(&response, 60)),
        "undone": {"turn_id": turn_id, "value": value},
    }))
}

fn set_paused(ctx: &mut Ctx, paused: bool) -> Result<String, OpError> {
    ctx.tx.execute(
        "UPDATE training SET paused = ?1 WHERE id = 1",
        params![paused],
    )?;
    Ok(if paused {
        "Training paused; ratings are still kept. /rl resume to start again.".into()
    } else {
        "Training resumed.".into()
    })
}

fn queue_training(ctx: &mut Ctx) -> Result<String, OpError> {
    // Ratings on held-out turns only check new versions; they alone give a run nothing to do.
    let pending = crate::training::samples::pending(ctx.tx, &ctx.config.rewards.weights)?;
    if pending.to_train == 0 {
        let held = match pending.held_out {
            0 => String::new(),
            n => format!(" ({n} new on held-out turns, which only check new versions)"),
        };
        return Ok(format!(
            "Nothing new to train on yet{held}: rate a few replies first."
        ));
    }
    ctx.tx
        .execute("UPDATE training SET queued = 1 WHERE id = 1", [])?;
    Ok(format!(
        "Training queued on {} turns with new rewards.",
        pending.to_train
    ))
}

/// The first `max` characters of a text, on one line.
pub fn snippet(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}
