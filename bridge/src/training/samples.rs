//! What the next run trains on: every turn with reward information no run has used yet, one
//! sample per turn with its blended reward. A turn waits when it has a live rating no run has
//! used, or, with no live rating at all, a machine score no run has used. Held-out turns are
//! never trained on: their new ratings only check new versions (the gate reads the person's
//! ratings alone), and a held-out turn with only machine scores waits for nothing.

use rlclaw_trainer::{Sample, is_held_out};
use rusqlite::{Connection, params};
use serde::Serialize;

use super::gate;
use crate::rewards::{Sources, Weights, blended, scores};

/// What waits for the next run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Live ratings no run has used yet: the ratings since the last run.
    pub ratings: u64,
    /// Turns the next run trains on (new ratings or new machine scores, blended).
    pub to_train: u64,
    /// New ratings on held-out turns, kept out of training to check new versions.
    pub held_out: u64,
}

/// A turn with something new, and what is new about it.
struct Waiting {
    seq: i64,
    turn_id: String,
    sources: Sources,
    /// Live ratings no run has used.
    new_rating_ids: Vec<i64>,
    /// Machine scores no run has used.
    new_scores: u64,
    /// When its oldest new information came (Unix ms).
    since: i64,
}

impl Waiting {
    /// A new rating always counts; machine scores count only where no person has rated.
    fn has_news(&self) -> bool {
        !self.new_rating_ids.is_empty() || (self.sources.human.is_none() && self.new_scores > 0)
    }
}

fn waiting(conn: &Connection) -> rusqlite::Result<Vec<Waiting>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT t.seq, t.turn_id, {},
                (SELECT json_group_array(r.id) FROM ratings r WHERE r.turn_seq = t.seq
                  AND r.removed_at IS NULL AND r.trained_run IS NULL),
                (SELECT count(*) FROM turn_scores s WHERE s.turn_seq = t.seq AND s.trained_run IS NULL),
                min(coalesce((SELECT min(r.created_at) FROM ratings r WHERE r.turn_seq = t.seq
                               AND r.removed_at IS NULL AND r.trained_run IS NULL), 9e18),
                    coalesce((SELECT min(s.at) FROM turn_scores s WHERE s.turn_seq = t.seq
                               AND s.trained_run IS NULL), 9e18))
         FROM (SELECT turn_seq FROM ratings WHERE removed_at IS NULL AND trained_run IS NULL
               UNION SELECT turn_seq FROM turn_scores WHERE trained_run IS NULL) x
         JOIN turns t ON t.seq = x.turn_seq",
        scores::SOURCES_SQL
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let ids: String = r.get(5)?;
        let w = Waiting {
            seq: r.get(0)?,
            turn_id: r.get(1)?,
            sources: scores::sources_at(r, 2)?,
            new_rating_ids: serde_json::from_str(&ids).unwrap_or_default(),
            new_scores: r.get(6)?,
            since: r.get::<_, f64>(7)? as i64,
        };
        if w.has_news() {
            out.push(w);
        }
    }
    // Oldest news first; ties in time by capture order, never by label.
    out.sort_by_key(|w| (w.since, w.seq));
    Ok(out)
}

pub fn pending(conn: &Connection, weights: &Weights) -> rusqlite::Result<Pending> {
    let mut p = Pending::default();
    for w in waiting(conn)? {
        p.ratings += w.new_rating_ids.len() as u64;
        if is_held_out(&w.turn_id) {
            p.held_out += w.new_rating_ids.len() as u64;
        } else if blended(&w.sources, weights).is_some() {
            p.to_train += 1;
        }
    }
    Ok(p)
}

/// The turns one run takes (at most `max`, oldest news first) and the new held-out ratings.
pub struct Untrained {
    pub samples: Vec<Sample>,
    /// New ratings on held-out turns: marked with the run that checked versions on them.
    pub held_out_ids: Vec<i64>,
    /// What to mark once the run is kept.
    pub used: Used,
}

/// What a run used, to be marked with it.
pub struct Used {
    /// The turns trained on, with the ratings of theirs that were new.
    trained: Vec<(i64, Vec<i64>)>,
    held_out_ids: Vec<i64>,
    /// When these were read: scores kept later are not marked.
    read_at: i64,
}

pub fn untrained(conn: &Connection, weights: &Weights, max: usize) -> rusqlite::Result<Untrained> {
    let mut samples = Vec::new();
    let mut used = Used {
        trained: Vec::new(),
        held_out_ids: Vec::new(),
        read_at: crate::now_ms(),
    };
    let mut text = conn.prepare_cached(
        "SELECT t.context, t.prompt, t.response,
                (SELECT json_group_array(r.reason) FROM ratings r WHERE r.turn_seq = t.seq
                  AND r.removed_at IS NULL AND r.value < 0
                  AND r.reason IS NOT NULL AND trim(r.reason) != '')
         FROM turns t WHERE t.seq = ?1",
    )?;
    for w in waiting(conn)? {
        if is_held_out(&w.turn_id) {
            used.held_out_ids.extend(&w.new_rating_ids);
            continue;
        }
        if samples.len() >= max {
            continue;
        }
        let Some(reward) = blended(&w.sources, weights) else {
            continue;
        };
        let (context, prompt, response, reasons): (String, String, String, String) = text
            .query_row(params![w.seq], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
        let reasons: Vec<String> = serde_json::from_str(&reasons).unwrap_or_default();
        samples.push(Sample {
            turn_id: w.turn_id,
            context: gate::parse_context(&context),
            prompt,
            response,
            reward: reward as f32,
            // Reasons given with bad ratings are hints for the teacher when the turn is bad;
            // one that cannot serve as a hint (empty, very long, a link...) is left out.
            hint: hint_from(reward, &reasons),
        });
        used.trained.push((w.seq, w.new_rating_ids));
    }
    Ok(Untrained {
        samples,
        held_out_ids: used.held_out_ids.clone(),
        used,
    })
}

impl Used {
    /// Marks what this run used: the trained turns' new ratings and all their machine scores,
    /// and the new held-out ratings (checked on, never trained). Ratings and scores that arrive
    /// meanwhile stay new.
    pub fn mark(&self, conn: &Connection, run_id: i64) -> rusqlite::Result<()> {
        let mut scores = conn.prepare(
            "UPDATE turn_scores SET trained_run = ?1
             WHERE turn_seq = ?2 AND trained_run IS NULL AND at <= ?3",
        )?;
        for (seq, ratings) in &self.trained {
            gate::mark_used(conn, run_id, ratings)?;
            scores.execute(params![run_id, seq, self.read_at])?;
        }
        gate::mark_used(conn, run_id, &self.held_out_ids)
    }
}

/// The hint for a bad turn: its usable reasons, joined.
fn hint_from(reward: f64, reasons: &[String]) -> Option<String> {
    let usable: Vec<&str> = reasons
        .iter()
        .filter_map(|r| rlclaw_trainer::usable_hint(r))
        .collect();
    (reward < 0.0 && !usable.is_empty()).then(|| usable.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usable_reasons_of_a_bad_turn_become_its_hint() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            hint_from(-1.0, &r(&["too long", "!!!", "https://x.y"])).as_deref(),
            Some("too long")
        );
        assert_eq!(hint_from(-1.0, &r(&["", "/rl bad"])), None);
        assert_eq!(hint_from(1.0, &r(&["too long"])), None);
    }
}
