//! `rlclaw history`: recent turns, how they were rated, each reward source's score and the
//! blended reward training uses, the hints given with the ratings, and whether a turn is held
//! out of training to check new versions.

use std::path::Path;

use anyhow::Result;

use super::existing;
use crate::config::Config;
use crate::datadir::CONFIG_FILE;
use crate::endpoints::commands::snippet;
use crate::rewards::blended;
use crate::rewards::scores::{SOURCES_SQL, sources_at};
use crate::store;

#[derive(clap::Args)]
pub struct Args {
    /// How many turns to show, newest first.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = existing(dir)?;
    let conn = store::open_ro(&dir.db_path())?;
    let weights = Config::load(&dir.path(CONFIG_FILE))?.rewards.weights;
    let mut stmt = conn.prepare(&format!(
        "SELECT t.turn_id, t.at, t.channel, t.sender, t.prompt, t.response,
                (SELECT avg(value) FROM ratings r WHERE r.turn_seq = t.seq AND r.removed_at IS NULL),
                (SELECT count(*) FROM ratings r WHERE r.turn_seq = t.seq AND r.removed_at IS NULL),
                (SELECT json_group_array(json_object('value', value, 'reason', reason))
                   FROM ratings r
                  WHERE r.turn_seq = t.seq AND r.removed_at IS NULL
                    AND reason IS NOT NULL AND trim(reason) != ''),
                nullif(max(coalesce((SELECT max(trained_run) FROM ratings r
                                      WHERE r.turn_seq = t.seq AND r.removed_at IS NULL), 0),
                           coalesce((SELECT max(trained_run) FROM turn_scores s
                                      WHERE s.turn_seq = t.seq), 0)), 0),
                t.worker, {SOURCES_SQL}
         FROM turns t ORDER BY t.seq DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([args.limit], |r| {
        let turn_id: String = r.get(0)?;
        let given: Vec<serde_json::Value> =
            serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default();
        let reasons: Vec<&str> = given.iter().filter_map(|g| g["reason"].as_str()).collect();
        // A reason given with a bad rating is a hint for the trainer's teacher.
        let hints: Vec<&str> = given
            .iter()
            .filter(|g| g["value"].as_f64().is_some_and(|v| v < 0.0))
            .filter_map(|g| g["reason"].as_str())
            .collect();
        let held_out = rlclaw_trainer::is_held_out(&turn_id);
        let used_by: Option<i64> = r.get(9)?;
        let sources = sources_at(r, 11)?;
        let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        Ok(serde_json::json!({
            "turn_id": turn_id,
            "at": r.get::<_, i64>(1)?,
            "channel": r.get::<_, String>(2)?,
            "sender": r.get::<_, String>(3)?,
            "prompt": r.get::<_, String>(4)?,
            "response": r.get::<_, String>(5)?,
            "rating": r.get::<_, Option<f64>>(6)?,
            "raters": r.get::<_, i64>(7)?,
            "reasons": (!reasons.is_empty()).then(|| reasons.join("; ")),
            "hints": hints,
            "held_out": held_out,
            "trained_in_run": used_by.filter(|_| !held_out),
            "worker": r.get::<_, Option<String>>(10)?,
            "rewards": {
                "human": round(sources.human),
                "automatic": round(sources.automatic),
                "judge": round(sources.judge),
                "blended": round(blended(&sources, &weights)),
            },
        }))
    })?;
    let mut any = false;
    for row in rows {
        let row = row?;
        any = true;
        if args.json {
            println!("{row}");
            continue;
        }
        let mark = match row["rating"].as_f64() {
            Some(v) if v > 0.0 => format!("👍 {v:+.1}"),
            Some(v) if v < 0.0 => format!("👎 {v:+.1}"),
            Some(v) => format!("·  {v:+.1}"),
            None => "   —  ".into(),
        };
        let hints: Vec<&str> = row["hints"]
            .as_array()
            .map(|a| a.iter().filter_map(|h| h.as_str()).collect())
            .unwrap_or_default();
        let note = if !hints.is_empty() {
            format!("  hint: {}", hints.join("; "))
        } else {
            row["reasons"]
                .as_str()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default()
        };
        let held = if row["held_out"] == true && row["rating"].is_number() {
            "  [held out: checks new versions]"
        } else {
            ""
        };
        let who = row["worker"]
            .as_str()
            .or(row["sender"].as_str())
            .unwrap_or("");
        println!(
            "{mark}  [{} {who}] {} → {}{note}{held}",
            row["channel"].as_str().unwrap_or(""),
            snippet(row["prompt"].as_str().unwrap_or(""), 40),
            snippet(row["response"].as_str().unwrap_or(""), 60),
        );
        if let Some(line) = sources_text(&row["rewards"]) {
            println!("        {line}");
        }
    }
    if !any && !args.json {
        println!("No captured turns yet.");
    }
    Ok(())
}

/// "human +1.00 · automatic 0.80 · judge — · blended +0.82" when a machine scored the turn
/// (a rating alone is already the first column).
fn sources_text(r: &serde_json::Value) -> Option<String> {
    if r["automatic"].is_null() && r["judge"].is_null() {
        return None;
    }
    let show = |name: &str, signed: bool| match r[name].as_f64() {
        Some(v) if signed => format!("{name} {v:+.2}"),
        Some(v) => format!("{name} {v:.2}"),
        None => format!("{name} —"),
    };
    Some(format!(
        "{} · {} · {} · {}",
        show("human", true),
        show("automatic", false),
        show("judge", false),
        show("blended", true)
    ))
}
