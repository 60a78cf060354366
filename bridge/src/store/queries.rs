//! Lookups shared by several endpoints.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;

/// Which turn a rating is about, as a client names it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Target {
    Turn {
        turn_id: String,
    },
    Message {
        channel: String,
        #[serde(default)]
        chat: Option<String>,
        message_id: String,
    },
    Latest {
        latest: Latest,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Latest {
    pub session: String,
    pub sender: String,
}

/// The parts of a turn that rating decisions need.
#[derive(Debug, Clone)]
pub struct TurnRef {
    pub seq: i64,
    pub turn_id: String,
    pub sender: String,
}

fn turn_ref(r: &rusqlite::Row) -> rusqlite::Result<TurnRef> {
    Ok(TurnRef {
        seq: r.get(0)?,
        turn_id: r.get(1)?,
        sender: r.get(2)?,
    })
}

/// Finds the turn a target names, if any.
pub fn resolve(conn: &Connection, target: &Target) -> rusqlite::Result<Option<TurnRef>> {
    match target {
        Target::Turn { turn_id } => conn
            .query_row(
                "SELECT seq, turn_id, sender FROM turns WHERE turn_id = ?1",
                params![turn_id],
                turn_ref,
            )
            .optional(),
        Target::Message {
            channel,
            chat,
            message_id,
        } => conn
            .query_row(
                "SELECT t.seq, t.turn_id, t.sender FROM turn_messages m
                 JOIN turns t ON t.seq = m.turn_seq
                 WHERE m.channel = ?1 AND m.message_id = ?2
                   AND (t.chat IS NULL OR t.chat IS ?3)
                 ORDER BY t.seq DESC LIMIT 1",
                params![channel, message_id, chat],
                turn_ref,
            )
            .optional(),
        Target::Latest { latest } => conn
            .query_row(
                "SELECT seq, turn_id, sender FROM turns WHERE session = ?1 AND sender = ?2
                 ORDER BY at DESC, seq DESC LIMIT 1",
                params![latest.session, latest.sender],
                turn_ref,
            )
            .optional(),
    }
}

/// A live rating: its row id, value and whether a run has trained on it.
#[derive(Debug, Clone, Copy)]
pub struct LiveRating {
    pub id: i64,
    pub value: f64,
    pub trained: bool,
}

pub fn live_rating(
    conn: &Connection,
    turn_seq: i64,
    rater: &str,
) -> rusqlite::Result<Option<LiveRating>> {
    conn.query_row(
        "SELECT id, value, trained_run IS NOT NULL FROM ratings
         WHERE turn_seq = ?1 AND rater = ?2 AND removed_at IS NULL",
        params![turn_seq, rater],
        |r| {
            Ok(LiveRating {
                id: r.get(0)?,
                value: r.get(1)?,
                trained: r.get(2)?,
            })
        },
    )
    .optional()
}

/// The latest live ratings' values and reasons, newest first.
pub fn latest_ratings(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<(f64, Option<String>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT value, reason FROM ratings WHERE removed_at IS NULL ORDER BY id DESC LIMIT ?1",
    )?;
    stmt.query_map(params![limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Recent mean rewards, oldest first: the latest live ratings in blocks of `block`.
pub fn reward_trend(conn: &Connection, blocks: usize, block: usize) -> rusqlite::Result<Vec<f64>> {
    let mut values: Vec<f64> = latest_ratings(conn, blocks * block)?
        .into_iter()
        .map(|(value, _)| value)
        .collect();
    values.reverse();
    // Blocks end at the newest rating; a partial block is the oldest one.
    let skip = values.len() % block;
    let mut trend = Vec::new();
    if skip > 0 {
        trend.push(mean(&values[..skip]));
    }
    trend.extend(values[skip..].chunks(block).map(mean));
    Ok(trend)
}

fn mean(values: &[f64]) -> f64 {
    let m = values.iter().sum::<f64>() / values.len().max(1) as f64;
    (m * 1000.0).round() / 1000.0
}

/// The training state as `status` reports it.
pub fn training_state(conn: &Connection) -> rusqlite::Result<serde_json::Value> {
    let (paused, queued): (bool, bool) = conn.query_row(
        "SELECT paused, queued FROM training WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let last = conn
        .query_row(
            "SELECT id, started_at, finished_at, outcome, adapter, detail FROM runs
             ORDER BY id DESC LIMIT 1",
            [],
            |r| {
                Ok(serde_json::json!({
                    "id": r.get::<_, i64>(0)?,
                    "started_at": r.get::<_, i64>(1)?,
                    "finished_at": r.get::<_, Option<i64>>(2)?,
                    "outcome": r.get::<_, String>(3)?,
                    "adapter": r.get::<_, Option<String>>(4)?,
                    "detail": r.get::<_, Option<String>>(5)?,
                }))
            },
        )
        .optional()?;
    let running = last.as_ref().is_some_and(|run| run["outcome"] == "running");
    let state = if running {
        "running"
    } else if paused {
        "paused"
    } else if queued {
        "queued"
    } else {
        "idle"
    };
    Ok(serde_json::json!({"state": state, "paused": paused, "last_run": last}))
}
