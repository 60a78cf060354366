//! `rlclaw export --format kto-jsonl`: rated turns as TRL's unpaired preference rows
//! (`prompt` as conversation messages, `completion`, boolean `label`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::existing;
use crate::store;

#[derive(clap::ValueEnum, Clone, Copy)]
enum Format {
    /// {"prompt": [messages], "completion": [assistant message], "label": true|false}
    KtoJsonl,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "kto-jsonl")]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = existing(dir)?;
    let conn = store::open_ro(&dir.db_path())?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let Format::KtoJsonl = args.format;
    let mut stmt = conn.prepare(
        "SELECT t.context, t.prompt, t.response, avg(r.value) FROM turns t
         JOIN ratings r ON r.turn_seq = t.seq AND r.removed_at IS NULL
         GROUP BY t.seq HAVING avg(r.value) != 0 ORDER BY t.seq",
    )?;
    let mut rows = 0usize;
    let mut query = stmt.query([])?;
    while let Some(r) = query.next()? {
        let context: String = r.get(0)?;
        let prompt: String = r.get(1)?;
        let response: String = r.get(2)?;
        let value: f64 = r.get(3)?;
        let mut messages: Vec<serde_json::Value> =
            serde_json::from_str(&context).context("a stored context is malformed")?;
        messages.push(serde_json::json!({"role": "user", "content": prompt}));
        let row = serde_json::json!({
            "prompt": messages,
            "completion": [{"role": "assistant", "content": response}],
            "label": value > 0.0,
        });
        writeln!(out, "{row}")?;
        rows += 1;
    }
    out.flush()?;
    if let Some(path) = &args.output {
        eprintln!("rlclaw: wrote {rows} rows to {}", path.display());
    }
    Ok(())
}
