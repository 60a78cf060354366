//! The counts every rating answer carries, kept exact in memory by the single writer.

use rusqlite::Connection;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Live ratings above 0.
    pub good: u64,
    /// Live ratings below 0.
    pub bad: u64,
    /// Live ratings no training run has used yet.
    pub untrained: u64,
    /// Captured turns and rollouts.
    pub turns: u64,
}

impl Counts {
    pub fn load(conn: &Connection) -> rusqlite::Result<Counts> {
        conn.query_row(
            "SELECT
                (SELECT count(*) FROM ratings WHERE removed_at IS NULL AND value > 0),
                (SELECT count(*) FROM ratings WHERE removed_at IS NULL AND value < 0),
                (SELECT count(*) FROM ratings WHERE removed_at IS NULL AND trained_run IS NULL),
                (SELECT count(*) FROM turns)",
            [],
            |r| {
                Ok(Counts {
                    good: r.get(0)?,
                    bad: r.get(1)?,
                    untrained: r.get(2)?,
                    turns: r.get(3)?,
                })
            },
        )
    }

    /// Adds (`sign` = 1) or removes (`sign` = -1) one live rating.
    pub fn apply_rating(&mut self, value: f64, trained: bool, sign: i64) {
        let bump = |n: &mut u64| *n = n.saturating_add_signed(sign);
        if value > 0.0 {
            bump(&mut self.good);
        } else if value < 0.0 {
            bump(&mut self.bad);
        }
        if !trained {
            bump(&mut self.untrained);
        }
    }

    /// The `counts` object of a rating answer.
    pub fn rating_json(&self) -> serde_json::Value {
        serde_json::json!({"good": self.good, "bad": self.bad, "untrained": self.untrained})
    }
}
