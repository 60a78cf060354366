//! `--resume`: where an arm stopped, read back from its folder. A full run takes hours on a
//! laptop; one that was stopped (Ctrl-C, a reboot) continues from its data folder instead of
//! starting over. Everything the loop needs is on disk: the figures in points.json, the base's
//! judged replies in base.json, and the turns and ratings in the daemon's store, which the
//! caller replays to bring the prompt order and the rater's random reasons to where they were.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{ArmSettings, Point, SETTINGS_FILE, read_saved};

/// The base's held-out replies, judged; written when the base is read.
pub const BASE_FILE: &str = "base.json";
pub const POINTS_FILE: &str = "points.json";

/// One captured turn, in capture order.
pub struct Turn {
    pub id: String,
    pub prompt: String,
    pub reply: String,
    /// Whether its rating reached the store (a run stopped between the two sends has none).
    pub rated: bool,
}

/// What an arm's folder says about where it stopped.
pub struct Stopped {
    /// The base and every finished round.
    pub points: Vec<Point>,
    pub base: Vec<(String, String, bool)>,
    pub turns: Vec<Turn>,
    /// The newest training run the last finished round waited for (0: none).
    pub last_run: i64,
}

impl Stopped {
    pub fn rounds_done(&self) -> usize {
        self.points.len().saturating_sub(1)
    }

    /// Ratings given by the end of the last finished round: turns past it belong to a round
    /// that was cut off.
    pub fn ratings_done(&self) -> usize {
        self.points.last().map_or(0, |p| p.ratings)
    }
}

/// Reads an arm's folder; None when it holds no points yet (the arm starts afresh). It must
/// have run with `settings`, the number of rounds aside.
pub fn load(dir: &Path, settings: &ArmSettings) -> Result<Option<Stopped>> {
    let points: Vec<Point> = match read_saved(&dir.join(POINTS_FILE))? {
        Some(p) if !Vec::is_empty(&p) => p,
        _ => return Ok(None),
    };
    let saved: ArmSettings = required(&dir.join(SETTINGS_FILE), "the settings it ran with")?;
    let mut wanted = settings.clone();
    wanted.sizes.rounds = saved.sizes.rounds;
    if saved != wanted {
        bail!(
            "{} ran with other settings than these ({}): resume it with the flags it ran with, or \
             start afresh without --resume",
            dir.display(),
            differences(&saved, &wanted).join(", ")
        );
    }
    let base = required(&dir.join(BASE_FILE), "the base's replies")?;
    let db = dir.join(crate::datadir::DB_FILE);
    let conn = crate::store::open_ro(&db)
        .with_context(|| format!("cannot open the arm's store {}", db.display()))?;
    let mut stmt = conn.prepare(
        "SELECT t.turn_id, t.prompt, t.response,
                EXISTS (SELECT 1 FROM ratings r WHERE r.turn_seq = t.seq AND r.removed_at IS NULL)
         FROM turns t ORDER BY t.seq",
    )?;
    let turns = stmt
        .query_map([], |r| {
            Ok(Turn {
                id: r.get(0)?,
                prompt: r.get(1)?,
                reply: r.get(2)?,
                rated: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let runs = points.last().map_or(0, |p| p.runs);
    let last_run = match runs {
        0 => 0,
        n => conn.query_row(
            "SELECT id FROM runs WHERE outcome = 'ok' ORDER BY id LIMIT 1 OFFSET ?1",
            [n as i64 - 1],
            |r| r.get(0),
        )?,
    };
    let stopped = Stopped {
        points,
        base,
        turns,
        last_run,
    };
    if stopped.turns.len() < stopped.ratings_done() {
        bail!(
            "{} holds {} turns but its points.json counts {} ratings: the folder is not one run's",
            dir.display(),
            stopped.turns.len(),
            stopped.ratings_done()
        );
    }
    Ok(Some(stopped))
}

fn required<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    read_saved(path)?.with_context(|| {
        format!(
            "cannot resume: {} ({what}) is missing; start the arm afresh",
            path.display()
        )
    })
}

/// The settings that differ, as "name saved → asked".
fn differences(saved: &ArmSettings, asked: &ArmSettings) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(saved).unwrap_or_default(),
        serde_json::to_value(asked).unwrap_or_default(),
    );
    let mut out = Vec::new();
    flat_diff("", &a, &b, &mut out);
    out
}

fn flat_diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = serde_json::Value::Null;
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flat_diff(
                    &name,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{prefix} {a} → {b}")),
        _ => {}
    }
}
