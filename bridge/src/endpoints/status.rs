//! `GET /v1/status` and `/rl status`: counts, the reward trend, the active adapter, the training
//! state, the ratings since the last run, what the evaluation gate measured, and each reward
//! source. The writer only uses up the request's nonce; the report is read afterwards on the
//! store's read-only connection (it scans every turn, ~100 ms at 100,000 of them).

use rusqlite::Connection;

use crate::config::Config;
use crate::store::{Counts, Ctx, OpError, Reply, queries};
use crate::training::TrainingControl;

/// Ratings per point of the reward trend, and how many points.
const TREND_BLOCK: usize = 8;
const TREND_POINTS: usize = 16;

/// How many latest ratings, all bad and none with a usable reason, earn the advice to give one.
const UNEXPLAINED_BAD_RUN: usize = 8;

/// A report to read once the request is committed, with the writer's counts at that moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Read {
    /// `GET /v1/status`.
    Status(Counts),
    /// `/rl status`: the same object with a `text` for the chat.
    Chat(Counts),
}

pub fn apply(ctx: &mut Ctx) -> Result<Reply, OpError> {
    Ok(Reply::read(Read::Status(ctx.state.counts)))
}

/// Reads a report on the reader's connection.
pub fn read(
    read: &Read,
    conn: &Connection,
    config: &Config,
    control: &dyn TrainingControl,
    now_ms: i64,
) -> rusqlite::Result<Reply> {
    Ok(match *read {
        Read::Status(counts) => Reply::json(200, report(conn, counts, config, control, now_ms)?),
        Read::Chat(counts) => Reply::json(
            200,
            chat_reply(report(conn, counts, config, control, now_ms)?, counts),
        ),
    })
}

/// The status object, from any connection (the daemon's reader, or the CLI's when the bridge
/// is not running).
pub fn report(
    conn: &Connection,
    counts: Counts,
    config: &Config,
    control: &dyn TrainingControl,
    now_ms: i64,
) -> rusqlite::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "version": crate::VERSION,
        "counts": counts,
        "reward_trend": queries::reward_trend(conn, TREND_POINTS, TREND_BLOCK)?,
        "advice": advice(conn)?,
        "adapter": control.active_adapter(),
        "training": queries::training_state(conn)?,
        "since_last_run": crate::training::samples::pending(conn, &config.rewards.weights)?,
        "gate": control.gate_status(),
        "rewards": crate::rewards::summary::status_json(
            conn,
            &config.rewards,
            &config.serving,
            now_ms,
        )?,
    }))
}

/// A run of bad ratings with no reason cannot teach much: each says "not this" about a reply
/// the model found likely, never what to do instead, and when every rating is bad the trainer's
/// baseline sits at "bad" too, so their advantage is near zero. A reason becomes a hint that
/// does say it, so the person is told to give one.
fn advice(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let latest = queries::latest_ratings(conn, UNEXPLAINED_BAD_RUN)?;
    let unexplained_bad = |(value, reason): &(f64, Option<String>)| {
        let hint = reason.as_deref().and_then(rlclaw_trainer::usable_hint);
        *value < 0.0 && hint.is_none()
    };
    if latest.len() < UNEXPLAINED_BAD_RUN || !latest.iter().all(unexplained_bad) {
        return Ok(None);
    }
    Ok(Some(format!(
        "Your last {UNEXPLAINED_BAD_RUN} ratings were all 👎 with no reason. A 👎 says \"not this\" but not what to change; say it with the rating (\"/rl bad too long\" in a chat, or `rlclaw bad --reason \"too long\"`) and the next run learns from it."
    )))
}

/// `/rl status`: the status object with a `text` for the chat.
fn chat_reply(mut status: serde_json::Value, counts: Counts) -> serde_json::Value {
    let adapter = status["adapter"].as_str().unwrap_or("the base model");
    let training = status["training"]["state"].as_str().unwrap_or("idle");
    let since = &status["since_last_run"];
    let mut text = format!(
        "👍 {} · 👎 {} · {} ratings since the last run, {} turns to train on ({} ratings held out to check new versions) · serving {adapter} · training {training}",
        counts.good,
        counts.bad,
        since["ratings"].as_u64().unwrap_or(0),
        since["to_train"].as_u64().unwrap_or(0),
        since["held_out"].as_u64().unwrap_or(0),
    );
    let rewards = &status["rewards"];
    text.push_str(&format!(
        "\nRewards: {}",
        crate::rewards::summary::sources_line(rewards)
    ));
    if let Some(workers) = rewards["workers"].as_array()
        && workers.len() > 1
    {
        let each: Vec<String> = workers
            .iter()
            .map(|w| {
                let blended = &w["blended"];
                match blended["mean"].as_f64() {
                    Some(m) => format!(
                        "{} {} ({m:+.2})",
                        w["worker"].as_str().unwrap_or("?"),
                        blended["turns"]
                    ),
                    None => format!("{} 0", w["worker"].as_str().unwrap_or("?")),
                }
            })
            .collect();
        text.push_str(&format!("\nBy worker: {}", each.join(" · ")));
    }
    let judge = &rewards["judge"];
    if judge["state"] != "off" {
        text.push_str(&format!(
            "\nJudge {}: {} judged, {} failed, {}/{} calls this hour; turn text goes to {}",
            judge["state"].as_str().unwrap_or("?"),
            judge["judged"],
            judge["failures"]["total"],
            judge["calls_last_hour"],
            judge["calls_per_hour"],
            judge["text_goes_to"].as_str().unwrap_or("?"),
        ));
    }
    let trend: Vec<f64> = status["reward_trend"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    if let (Some(first), Some(last)) = (trend.first(), trend.last()) {
        text.push_str(&format!(
            "\nReward trend {} {first:+.2} → {last:+.2}",
            crate::cli::sparkline(&trend)
        ));
    }
    for key in ["active", "candidate"] {
        if let Some(summary) = status["gate"][key]["summary"].as_str() {
            text.push('\n');
            text.push_str(summary);
        }
    }
    if let Some(advice) = status["advice"].as_str() {
        text.push('\n');
        text.push_str(advice);
    }
    status["text"] = text.into();
    status
}
