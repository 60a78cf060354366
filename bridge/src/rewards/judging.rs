//! The judge in the background: a thread of its own that picks what to judge, keeps to the
//! hourly budget, asks the judge and hands the outcome to the store's writer like any request
//! (so the single writer stays single and ingest never waits for a judge). What it picks, in
//! order: recent turns nobody rated yet, then turns where the automatic score and the person
//! disagree. Held-out turns are skipped (they are never trained on), and a turn is judged once:
//! only an unreachable endpoint lets it be tried again.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, params};

use super::judge::{self, Target};
use super::scores::{self, Outcome};
use crate::endpoints::Op;
use crate::store::{Ctx, OpError, Reply, Store};

/// Only this many of the latest turns are considered: the judge keeps up with what is new.
const WINDOW: i64 = 5000;
/// How often to look again when there is nothing to judge or the budget is spent.
const IDLE: Duration = Duration::from_millis(500);
/// After an unreachable endpoint, wait this long (doubling up to `MAX_BACKOFF`).
const FIRST_BACKOFF: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// A judgement for the writer to record.
#[derive(Debug)]
pub struct Judged {
    pub turn_seq: i64,
    pub outcome: Outcome,
    pub score: Option<f64>,
    pub detail: String,
}

pub fn apply(j: &Judged, ctx: &mut Ctx) -> Result<Reply, OpError> {
    scores::record_judgement(
        ctx.tx, j.turn_seq, j.outcome, j.score, &j.detail, ctx.now_ms,
    )?;
    Ok(Reply::json(200, serde_json::json!({"recorded": true})))
}

/// A turn to judge.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub seq: i64,
    pub turn_id: String,
    pub prompt: String,
    pub response: String,
}

/// The next turn to judge, if any.
pub fn pick(conn: &Connection) -> rusqlite::Result<Option<Candidate>> {
    // Unrated, never judged and never trained on (a judgement would make a trained turn wait
    // again): the judge's score is most of what such a turn will train with.
    let unrated = "SELECT t.seq, t.turn_id, t.prompt, t.response FROM turns t
         WHERE t.seq > (SELECT coalesce(max(seq), 0) FROM turns) - ?1
           AND NOT EXISTS (SELECT 1 FROM ratings r WHERE r.turn_seq = t.seq AND r.removed_at IS NULL)
           AND NOT EXISTS (SELECT 1 FROM turn_scores s WHERE s.turn_seq = t.seq
                            AND (s.source = 'judge' OR s.trained_run IS NOT NULL))
           AND NOT EXISTS (SELECT 1 FROM judge_calls j WHERE j.turn_seq = t.seq
                            AND j.outcome != 'unreachable')
         ORDER BY t.seq DESC LIMIT 64";
    // Rated, with an automatic score on the other side of the middle from the person's word,
    // and a rating the next run will train on (on a trained turn a judgement changes nothing).
    let disputed = "SELECT t.seq, t.turn_id, t.prompt, t.response FROM turns t
         JOIN turn_scores a ON a.turn_seq = t.seq AND a.source = 'automatic'
         JOIN ratings r ON r.turn_seq = t.seq AND r.removed_at IS NULL
         WHERE t.seq > (SELECT coalesce(max(seq), 0) FROM turns) - ?1
           AND EXISTS (SELECT 1 FROM ratings u WHERE u.turn_seq = t.seq
                        AND u.removed_at IS NULL AND u.trained_run IS NULL)
           AND NOT EXISTS (SELECT 1 FROM turn_scores s WHERE s.turn_seq = t.seq AND s.source = 'judge')
           AND NOT EXISTS (SELECT 1 FROM judge_calls j WHERE j.turn_seq = t.seq
                            AND j.outcome != 'unreachable')
         GROUP BY t.seq
         HAVING (avg(r.value) > 0 AND a.score < 0.5) OR (avg(r.value) < 0 AND a.score > 0.5)
         ORDER BY t.seq DESC LIMIT 64";
    for sql in [unrated, disputed] {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![WINDOW])?;
        while let Some(r) = rows.next()? {
            let turn_id: String = r.get(1)?;
            if rlclaw_trainer::is_held_out(&turn_id) {
                continue;
            }
            return Ok(Some(Candidate {
                seq: r.get(0)?,
                turn_id,
                prompt: r.get(2)?,
                response: r.get(3)?,
            }));
        }
    }
    Ok(None)
}

/// Calls made in the hour before `now_ms`, whatever their outcome.
pub fn calls_last_hour(conn: &Connection, now_ms: i64) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT count(*) FROM judge_calls WHERE at > ?1")?
        .query_row(params![now_ms - 3_600_000], |r| r.get(0))
}

/// Starts the judge's thread; it stops soon after `stop` is set.
pub fn spawn(
    db: PathBuf,
    store: Store,
    target: Target,
    settings: judge::JudgeSettings,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rlclaw-judge".into())
        .spawn(move || {
            if let Err(e) = run(&db, &store, &target, &settings, &stop) {
                tracing::warn!("the judge stopped: {e:#}");
            }
        })
}

fn run(
    db: &std::path::Path,
    store: &Store,
    target: &Target,
    settings: &judge::JudgeSettings,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let conn = crate::store::open_ro(db)?;
    let mut backoff = FIRST_BACKOFF;
    while !stop.load(Ordering::Relaxed) {
        // A busy or failing read is tried again later; it never stops the judge.
        let next = match next_turn(&conn, settings) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!("the judge cannot read the store: {e}");
                None
            }
        };
        let Some(turn) = next else {
            crate::sleep_unless(stop, IDLE);
            continue;
        };
        let asked = runtime.block_on(judge::ask(
            target,
            settings.timeout(),
            &turn.prompt,
            &turn.response,
        ));
        let judged = match asked {
            Ok(verdict) => Judged {
                turn_seq: turn.seq,
                outcome: Outcome::Ok,
                score: Some(verdict.score()),
                detail: serde_json::to_string(&verdict)?,
            },
            Err((outcome, detail)) => {
                tracing::warn!("the judge could not score {}: {detail}", turn.turn_id);
                Judged {
                    turn_seq: turn.seq,
                    outcome,
                    score: None,
                    detail,
                }
            }
        };
        let unreachable = judged.outcome == Outcome::Unreachable;
        if let Err(e) = runtime.block_on(store.submit(None, Op::Judged(judged))) {
            tracing::warn!(
                "the judgement of {} was not kept: {}",
                turn.turn_id,
                e.message
            );
        }
        if unreachable {
            crate::sleep_unless(stop, backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = FIRST_BACKOFF;
        }
    }
    Ok(())
}

/// The next turn to judge, unless this hour's budget is spent.
fn next_turn(
    conn: &Connection,
    settings: &judge::JudgeSettings,
) -> rusqlite::Result<Option<Candidate>> {
    if calls_last_hour(conn, crate::now_ms())? >= settings.calls_per_hour as u64 {
        return Ok(None);
    }
    pick(conn)
}
