//! The machine scores in the store: written by the writer (an automatic score with its
//! rollout, a judgement through `Op::Judged`), read with each turn's other sources.

use rusqlite::{Connection, params};

use super::blend::Sources;
use super::{AUTOMATIC, JUDGE};

/// The columns that give a turn `t`'s three sources, in the order `sources_at` reads them.
pub const SOURCES_SQL: &str = "
    (SELECT avg(r.value) FROM ratings r WHERE r.turn_seq = t.seq AND r.removed_at IS NULL),
    (SELECT s.score FROM turn_scores s WHERE s.turn_seq = t.seq AND s.source = 'automatic'),
    (SELECT s.score FROM turn_scores s WHERE s.turn_seq = t.seq AND s.source = 'judge')";

/// Reads the three columns of `SOURCES_SQL` starting at column `first`.
pub fn sources_at(row: &rusqlite::Row, first: usize) -> rusqlite::Result<Sources> {
    Ok(Sources {
        human: row.get(first)?,
        automatic: row.get(first + 1)?,
        judge: row.get(first + 2)?,
    })
}

/// Keeps a rollout's automatic score (a retry of the same rollout changes nothing).
pub fn insert_automatic(
    conn: &Connection,
    turn_id: &str,
    score: f64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO turn_scores (turn_seq, source, score, at)
         SELECT seq, ?1, ?2, ?3 FROM turns WHERE turn_id = ?4",
    )?
    .execute(params![AUTOMATIC, score, now_ms, turn_id])?;
    Ok(())
}

/// How one call to the judge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The answer was not the strict JSON asked for.
    Malformed,
    Timeout,
    /// The endpoint answered with an error status.
    Error,
    /// The endpoint could not be reached; the turn stays a candidate.
    Unreachable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Malformed => "malformed",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Unreachable => "unreachable",
        }
    }
}

/// Records one call to the judge; only a good judgement stores a score.
pub fn record_judgement(
    conn: &Connection,
    turn_seq: i64,
    outcome: Outcome,
    score: Option<f64>,
    detail: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO judge_calls (turn_seq, at, outcome, detail) VALUES (?1, ?2, ?3, ?4)",
        params![turn_seq, now_ms, outcome.as_str(), detail],
    )?;
    if let (Outcome::Ok, Some(score)) = (outcome, score) {
        conn.execute(
            "INSERT OR REPLACE INTO turn_scores (turn_seq, source, score, detail, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![turn_seq, JUDGE, score, detail, now_ms],
        )?;
    }
    Ok(())
}
