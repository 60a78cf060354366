//! `rlclaw history`: recent turns, how they were rated, the hints given with the ratings, and
//! whether a turn is held out of training to check new versions.

use std::path::Path;

use anyhow::Result;

use super::existing;
use crate::endpoints::commands::snippet;
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
    let mut stmt = conn.prepare(
        "SELECT t.turn_id, t.at, t.channel, t.sender, t.prompt, t.response,
                (SELECT avg(value) FROM ratings r WHERE r.turn_seq = t.seq AND r.removed_at IS NULL),
                (SELECT count(*) FROM ratings r WHERE r.turn_seq = t.seq AND r.removed_at IS NULL),
                (SELECT json_group_array(json_object('value', value, 'reason', reason))
                   FROM ratings r
                  WHERE r.turn_seq = t.seq AND r.removed_at IS NULL
                    AND reason IS NOT NULL AND trim(reason) != ''),
                (SELECT max(trained_run) FROM ratings r
                  WHERE r.turn_seq = t.seq AND r.removed_at IS NULL)
         FROM turns t ORDER BY t.seq DESC LIMIT ?1",
    )?;
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
        println!(
            "{mark}  [{} {}] {} → {}{note}{held}",
            row["channel"].as_str().unwrap_or(""),
            row["sender"].as_str().unwrap_or(""),
            snippet(row["prompt"].as_str().unwrap_or(""), 40),
            snippet(row["response"].as_str().unwrap_or(""), 60),
        );
    }
    if !any && !args.json {
        println!("No captured turns yet.");
    }
    Ok(())
}
