//! The single writer: every authenticated request becomes a `Job` here. Jobs that arrive together
//! share one transaction and one fsync; each job runs inside its own savepoint so that one job's
//! error never undoes another's work.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use super::counts::Counts;
use super::reader::Reader;
use crate::config::Config;
use crate::endpoints::Op;
use crate::endpoints::status::Read;
use crate::protocol::{ApiError, NONCE_KEEP_S};
use crate::training::TrainingControl;

/// Most jobs one transaction takes; more wait for the next one.
const MAX_BATCH: usize = 512;
/// Jobs that may queue before new requests wait for room.
const QUEUE_DEPTH: usize = 8192;
/// Expired nonces are deleted this often, at most `PRUNE_LIMIT` at a time, inside a batch's
/// transaction: small steady deletes instead of one long stall.
const PRUNE_EVERY_MS: i64 = 1_000;
const PRUNE_LIMIT: i64 = 5_000;
/// A commit slower than this is worth a warning: every request of the batch waited for it.
const SLOW_COMMIT_MS: u64 = 1_000;

/// A successful answer: a status and its JSON body, exactly as sent (and as remembered for
/// idempotent retries), or a report still to be read once the writer has committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// Set by operations that only read: the writer uses up the nonce (and audits), and the
    /// report is read afterwards on the reader's connection so that it never holds up writes.
    /// Such answers are not remembered: a retry reads again.
    pub read: Option<Read>,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            read: None,
        }
    }

    pub fn read(read: Read) -> Reply {
        Reply {
            status: 200,
            body: String::new(),
            read: Some(read),
        }
    }
}

/// One request for the writer: the nonce it uses up (if it was signed) and what it asks for.
pub struct Job {
    pub nonce: Option<String>,
    pub op: Op,
    pub reply: oneshot::Sender<Result<Reply, ApiError>>,
}

/// What the writer keeps in memory between transactions.
#[derive(Debug, Clone, Default)]
pub struct WriterState {
    pub counts: Counts,
    /// Admin command times per sender (Unix ms), for the per-minute limit.
    pub admin_hits: HashMap<String, VecDeque<i64>>,
}

/// What an operation sees while it applies.
pub struct Ctx<'a, 'c> {
    pub tx: &'a Transaction<'c>,
    pub now_ms: i64,
    pub state: &'a mut WriterState,
    pub config: &'a Config,
    pub control: &'a dyn TrainingControl,
}

/// The handle requests use to reach the writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Reader>,
}

impl Store {
    /// Opens the database and starts the writer thread.
    pub fn start(
        path: &Path,
        config: Arc<Config>,
        control: Arc<dyn TrainingControl>,
    ) -> anyhow::Result<(Store, WriterHandle)> {
        let conn = super::open_rw(path)
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
        let counts = Counts::load(&conn)?;
        let reader = Reader::new(path, config.clone(), control.clone());
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let state = WriterState {
            counts,
            ..WriterState::default()
        };
        let thread = std::thread::Builder::new()
            .name("rlclaw-writer".into())
            .spawn(move || run(conn, rx, state, config, control))?;
        let reader = Arc::new(reader);
        Ok((Store { jobs, reader }, WriterHandle { thread }))
    }

    /// Sends a job and waits for its answer. A job that asks for a report has it read once the
    /// writer has committed; when its endpoint is idempotent, the report is then remembered as
    /// the answer to its event id, like any other answer.
    pub async fn submit(&self, nonce: Option<String>, op: Op) -> Result<Reply, ApiError> {
        let key = op
            .idempotency_key()
            .map(|(endpoint, event_id)| (endpoint, event_id.to_owned()));
        let reply = self.send(nonce, op).await?;
        let Some(read) = reply.read else {
            return Ok(reply);
        };
        let report = self.reader.read(read).await?;
        match key {
            Some((endpoint, event_id)) => {
                let remember = Op::Remember {
                    endpoint,
                    event_id,
                    reply: report,
                };
                self.send(None, remember).await
            }
            None => Ok(report),
        }
    }

    async fn send(&self, nonce: Option<String>, op: Op) -> Result<Reply, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { nonce, op, reply })
            .await
            .map_err(|_| ApiError::new(503, "shutting_down", "The bridge is shutting down."))?;
        answer
            .await
            .map_err(|_| ApiError::internal("The store stopped before answering."))?
    }
}

/// Joins the writer once every `Store` handle is gone and the queue is drained.
pub struct WriterHandle {
    thread: std::thread::JoinHandle<()>,
}

impl WriterHandle {
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    mut state: WriterState,
    config: Arc<Config>,
    control: Arc<dyn TrainingControl>,
) {
    let mut next_prune = 0i64;
    let mut generation = training_generation(&conn).unwrap_or(0);
    let mut commits = CommitTimes::new();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now_ms = crate::now_ms();
        let prune = now_ms >= next_prune;
        if prune {
            next_prune = now_ms + PRUNE_EVERY_MS;
        }
        // A training run (maybe in another process) marked ratings as trained: recount.
        match training_generation(&conn) {
            Ok(g) if g != generation => {
                if let Ok(counts) = Counts::load(&conn) {
                    state.counts = counts;
                    generation = g;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the training generation: {e}"),
        }
        let size = batch.len();
        if let Some(took) = commit_batch(
            &mut conn, batch, &mut state, &config, &*control, now_ms, prune,
        ) {
            commits.record(took, size);
        }
    }
    commits.report();
}

/// How long commits took (the WAL write, its fsync and any auto-checkpoint), summed up when the
/// writer stops: the figures that tell a slow disk from a slow bridge.
struct CommitTimes {
    micros: Option<hdrhistogram::Histogram<u64>>,
    requests: u64,
}

impl CommitTimes {
    fn new() -> Self {
        Self {
            micros: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2).ok(),
            requests: 0,
        }
    }

    fn record(&mut self, took: std::time::Duration, requests: usize) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(h) = &mut self.micros {
            h.saturating_record(us.max(1));
        }
        self.requests += requests as u64;
        if us / 1000 >= SLOW_COMMIT_MS {
            tracing::warn!(
                "the disk took {} ms to commit {requests} requests; they all waited for it",
                us / 1000
            );
        }
    }

    fn report(&self) {
        let Some(h) = self.micros.as_ref().filter(|h| !h.is_empty()) else {
            return;
        };
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        tracing::info!(
            "writer: {} transactions for {} requests; commit p50 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms, max {:.2} ms",
            h.len(),
            self.requests,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
    }
}

/// Applies a batch in one transaction; answers every job only after the commit is durable.
/// Returns how long the commit took, when it succeeded.
fn commit_batch(
    conn: &mut Connection,
    batch: Vec<Job>,
    state: &mut WriterState,
    config: &Config,
    control: &dyn TrainingControl,
    now_ms: i64,
    prune: bool,
) -> Option<std::time::Duration> {
    let before = state.clone();
    let mut answers = Vec::with_capacity(batch.len());
    let outcome = (|| -> rusqlite::Result<std::time::Duration> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if prune {
            // A failed statement rolls back only itself; the batch goes on.
            if let Err(e) = prune_nonces(&tx, now_ms) {
                tracing::warn!("could not prune old nonces: {e}");
            }
        }
        for job in &batch {
            answers.push(apply_job(&tx, job, state, config, control, now_ms)?);
        }
        let started = std::time::Instant::now();
        tx.commit()?;
        Ok(started.elapsed())
    })();
    match outcome {
        Ok(took) => {
            for (job, answer) in batch.into_iter().zip(answers) {
                let _ = job.reply.send(answer);
            }
            Some(took)
        }
        Err(e) => {
            tracing::error!("a transaction of {} requests failed: {e}", batch.len());
            *state = before;
            for job in batch {
                let _ = job.reply.send(Err(ApiError::internal(
                    "The store could not save this request; nothing was kept. Try again.",
                )));
            }
            None
        }
    }
}

/// One job inside its savepoint. An `Err` aborts the whole batch (a storage failure); an
/// `Ok(Err(..))` is this job's own answer and leaves no trace but its nonce.
fn apply_job(
    tx: &Transaction,
    job: &Job,
    state: &mut WriterState,
    config: &Config,
    control: &dyn TrainingControl,
    now_ms: i64,
) -> rusqlite::Result<Result<Reply, ApiError>> {
    if let Some(nonce) = &job.nonce {
        let fresh = tx.execute(
            "INSERT OR IGNORE INTO nonces (nonce, seen_at) VALUES (?1, ?2)",
            params![nonce, now_ms / 1000],
        )?;
        if fresh == 0 {
            return Ok(Err(ApiError::new(
                401,
                "replayed_nonce",
                "This request's nonce was already used.",
            )));
        }
    }
    let key = job.op.idempotency_key();
    if let Some((endpoint, event_id)) = &key
        && let Some(reply) = remembered(tx, endpoint, event_id)?
    {
        return Ok(Ok(reply));
    }
    tx.execute_batch("SAVEPOINT job")?;
    let saved = state.clone();
    let answer = {
        let mut ctx = Ctx {
            tx,
            now_ms,
            state,
            config,
            control,
        };
        job.op.apply(&mut ctx)
    };
    match answer {
        Ok(reply) => {
            // A report is remembered once it has been read (`Store::submit`).
            if let Some((endpoint, event_id)) = key.filter(|_| reply.read.is_none()) {
                remember(tx, endpoint, event_id, &reply)?;
            }
            tx.execute_batch("RELEASE job")?;
            Ok(Ok(reply))
        }
        Err(OpError::Api(e)) => {
            tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
            *state = saved;
            Ok(Err(e))
        }
        Err(OpError::Storage(e)) => Err(e),
    }
}

/// The answer remembered for an event id, if any.
fn remembered(tx: &Transaction, endpoint: &str, event_id: &str) -> rusqlite::Result<Option<Reply>> {
    tx.query_row(
        "SELECT status, body FROM answers WHERE endpoint = ?1 AND event_id = ?2",
        params![endpoint, event_id],
        |r| {
            Ok(Reply {
                status: r.get(0)?,
                body: r.get(1)?,
                read: None,
            })
        },
    )
    .optional()
}

/// Remembers the first answer to an event id; returns the one that stays remembered (a retry
/// that raced this one may have been first).
pub fn remember(
    tx: &Transaction,
    endpoint: &str,
    event_id: &str,
    reply: &Reply,
) -> rusqlite::Result<Reply> {
    tx.execute(
        "INSERT OR IGNORE INTO answers (endpoint, event_id, status, body) VALUES (?1, ?2, ?3, ?4)",
        params![endpoint, event_id, reply.status, reply.body],
    )?;
    Ok(remembered(tx, endpoint, event_id)?.unwrap_or_else(|| reply.clone()))
}

fn training_generation(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT generation FROM training WHERE id = 1", [], |r| {
        r.get(0)
    })
}

fn prune_nonces(tx: &Transaction, now_ms: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM nonces WHERE nonce IN \
         (SELECT nonce FROM nonces WHERE seen_at < ?1 LIMIT ?2)",
        params![now_ms / 1000 - NONCE_KEEP_S, PRUNE_LIMIT],
    )
}

/// An operation fails either with an answer for the client or with a storage error.
#[derive(Debug)]
pub enum OpError {
    Api(ApiError),
    Storage(rusqlite::Error),
}

impl From<ApiError> for OpError {
    fn from(e: ApiError) -> Self {
        OpError::Api(e)
    }
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Storage(e)
    }
}
