//! One training run: take the lock, gather every untrained live rating, train on the active
//! adapter, save a new version, and only then mark the ratings trained and promote it. A run
//! that fails or is killed leaves the active adapter and the database as they were, and the
//! next run (or the daemon's start) records it as interrupted.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, anyhow, bail};
use rlclaw_trainer::{
    AdapterStore, Baseline, ChatMessage, ModelSource, NewVersion, Preset, Progress, Sample,
    TrainRequest,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::config::Config;
use crate::datadir::DataDir;
use crate::store;

/// Most ratings one run trains on; the rest wait for the next run.
const MAX_SAMPLES: usize = 128;

/// How a run is asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub preset: Preset,
    pub model: PathBuf,
}

impl RunOptions {
    /// The preset and model from the config, the demo model when none is configured.
    pub fn from_config(config: &Config) -> Result<RunOptions> {
        let preset: Preset = config
            .training
            .preset
            .parse()
            .map_err(|e| anyhow!("config.toml [training] preset: {e}"))?;
        let model = config
            .training
            .model
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(super::demo_model_path);
        Ok(RunOptions { preset, model })
    }
}

/// What a finished run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunOutcome {
    pub run_id: i64,
    pub version: String,
    pub samples: usize,
    pub metrics: serde_json::Value,
}

/// Held while a run trains; the OS releases it if the process dies, so it survives a crash.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the training lock, or says that another run holds it.
    pub fn try_take(dir: &DataDir) -> Result<Option<RunLock>> {
        let path = dir.path("train.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// Records runs left `running` by a process that died (call with the lock held).
pub fn mark_interrupted(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE runs SET outcome = 'interrupted', finished_at = ?1,
                detail = 'the training process stopped before the run finished; the active adapter is unchanged'
         WHERE outcome = 'running'",
        params![crate::now_ms()],
    )
}

/// The live ratings no run has used yet, oldest first, as training samples.
fn untrained_samples(conn: &Connection) -> rusqlite::Result<(Vec<i64>, Vec<Sample>)> {
    let mut stmt = conn.prepare(
        "SELECT r.id, t.turn_id, t.context, t.prompt, t.response, r.value, r.reason
         FROM ratings r JOIN turns t ON t.seq = r.turn_seq
         WHERE r.removed_at IS NULL AND r.trained_run IS NULL
         ORDER BY r.created_at, r.id LIMIT ?1",
    )?;
    let mut ids = Vec::new();
    let mut samples = Vec::new();
    let rows = stmt.query_map(params![MAX_SAMPLES as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, f64>(5)?,
            r.get::<_, Option<String>>(6)?,
        ))
    })?;
    for row in rows {
        let (id, turn_id, context, prompt, response, value, reason) = row?;
        let context: Vec<serde_json::Value> = serde_json::from_str(&context).unwrap_or_default();
        let context = context
            .iter()
            .filter_map(|m| {
                Some(ChatMessage::new(
                    m["role"].as_str()?,
                    m["content"].as_str()?,
                ))
            })
            .collect();
        ids.push(id);
        samples.push(Sample {
            turn_id,
            context,
            prompt,
            response,
            reward: value as f32,
            // A reason given with a bad rating is a hint for the teacher.
            hint: reason.filter(|r| value < 0.0 && !r.trim().is_empty()),
        });
    }
    Ok((ids, samples))
}

fn model_key(model: &Path) -> String {
    model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.display().to_string())
}

/// Trains once. `progress` sees every optimiser step; `cancel` stops the run early (nothing is
/// saved then).
pub fn run_once(
    dir: &DataDir,
    options: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<RunOutcome> {
    let Some(_lock) = RunLock::try_take(dir)? else {
        bail!("a training run is already in progress");
    };
    let conn = store::open_rw(&dir.db_path())
        .with_context(|| format!("cannot open {}", dir.db_path().display()))?;
    mark_interrupted(&conn)?;
    // An admin's queued request is answered by this run, whatever its outcome.
    conn.execute("UPDATE training SET queued = 0 WHERE id = 1", [])?;
    let (rating_ids, samples) = untrained_samples(&conn)?;
    if samples.is_empty() {
        bail!("nothing to train on: no new ratings since the last run");
    }
    if !options.model.exists() {
        bail!(
            "the model {} is missing: set [training] model in config.toml, or fetch the demo model with .ci/fetch-model",
            options.model.display()
        );
    }
    let key = model_key(&options.model);
    let baseline: Baseline = conn
        .query_row(
            "SELECT value, count FROM baselines WHERE model = ?1",
            params![key],
            |r| {
                Ok(Baseline {
                    value: r.get(0)?,
                    count: r.get(1)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default();
    conn.execute(
        "INSERT INTO runs (started_at, outcome, samples) VALUES (?1, 'running', ?2)",
        params![crate::now_ms(), samples.len() as i64],
    )?;
    let run_id = conn.last_insert_rowid();

    let result = train_and_save(dir, options, samples, baseline, progress, cancel);
    match result {
        Ok((version, report_baseline, metrics, used)) => {
            let tx = conn.unchecked_transaction()?;
            let mut mark = tx.prepare(
                "UPDATE ratings SET trained_run = ?1 WHERE id = ?2 AND removed_at IS NULL",
            )?;
            for id in &rating_ids {
                mark.execute(params![run_id, id])?;
            }
            drop(mark);
            tx.execute(
                "INSERT INTO baselines (model, value, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT(model) DO UPDATE SET value = excluded.value, count = excluded.count",
                params![key, report_baseline.value, report_baseline.count],
            )?;
            tx.execute(
                "UPDATE runs SET outcome = 'ok', finished_at = ?1, adapter = ?2, metrics = ?3 WHERE id = ?4",
                params![crate::now_ms(), version, metrics.to_string(), run_id],
            )?;
            tx.execute(
                "UPDATE training SET generation = generation + 1 WHERE id = 1",
                [],
            )?;
            tx.commit()?;
            // The ratings are marked; only now does the new version serve.
            AdapterStore::open(super::adapters_dir(dir))?.promote(&version)?;
            Ok(RunOutcome {
                run_id,
                version,
                samples: used,
                metrics,
            })
        }
        Err(e) => {
            let outcome = if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                "interrupted"
            } else {
                "failed"
            };
            conn.execute(
                "UPDATE runs SET outcome = ?1, finished_at = ?2, detail = ?3 WHERE id = ?4",
                params![outcome, crate::now_ms(), format!("{e:#}"), run_id],
            )?;
            Err(e)
        }
    }
}

type Trained = (String, Baseline, serde_json::Value, usize);

fn train_and_save(
    dir: &DataDir,
    options: &RunOptions,
    samples: Vec<Sample>,
    baseline: Baseline,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<Trained> {
    let store = AdapterStore::open(super::adapters_dir(dir))?;
    let active = store.active()?;
    let source = ModelSource::from_path(&options.model)?;
    let mut request = TrainRequest::new(source, samples);
    request.preset = options.preset;
    request.baseline = baseline;
    request.behaviour_adapter = active.as_ref().map(|v| v.path.clone());
    request.parent_adapter = active.as_ref().map(|v| v.path.clone());
    request.seed = crate::now_ms() as u64;
    let report = rlclaw_trainer::train(&request, progress, cancel)?;
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("the run was cancelled");
    }
    let metrics = serde_json::to_value(&report.metrics)?;
    let used = report.metrics.samples;
    let info = store.save(
        &report.adapter,
        NewVersion {
            parent: active.map(|v| v.name),
            ratings: report.turn_ids.clone(),
            metrics: metrics.clone(),
            base_model: report.base_model.clone(),
        },
    )?;
    Ok((info.name, report.baseline, metrics, used))
}
