//! `rlclaw history`: recent turns and how they were rated, read from the database.

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
                (SELECT group_concat(reason, '; ') FROM ratings r
                  WHERE r.turn_seq = t.seq AND r.removed_at IS NULL AND reason IS NOT NULL)
         FROM turns t ORDER BY t.seq DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([args.limit], |r| {
        Ok(serde_json::json!({
            "turn_id": r.get::<_, String>(0)?,
            "at": r.get::<_, i64>(1)?,
            "channel": r.get::<_, String>(2)?,
            "sender": r.get::<_, String>(3)?,
            "prompt": r.get::<_, String>(4)?,
            "response": r.get::<_, String>(5)?,
            "rating": r.get::<_, Option<f64>>(6)?,
            "raters": r.get::<_, i64>(7)?,
            "reasons": r.get::<_, Option<String>>(8)?,
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
        println!(
            "{mark}  [{} {}] {} → {}{}",
            row["channel"].as_str().unwrap_or(""),
            row["sender"].as_str().unwrap_or(""),
            snippet(row["prompt"].as_str().unwrap_or(""), 40),
            snippet(row["response"].as_str().unwrap_or(""), 60),
            row["reasons"]
                .as_str()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default(),
        );
    }
    if !any && !args.json {
        println!("No captured turns yet.");
    }
    Ok(())
}
