//! One training run: take the lock, gather every turn with rewards no run has used (leaving the
//! held-out turns out of training), train on the active adapter, run the evaluation gate, save a new
//! version with what the gate measured, mark the ratings used, and only then promote it — if
//! the gate passed it; otherwise it stays a candidate that an admin can force. A run that fails
//! or is killed leaves the active adapter and the database as they were, and the next run (or
//! the daemon's start) records it as interrupted.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, anyhow, bail};
use rlclaw_trainer::{
    AdapterStore, Baseline, DeviceChoice, GatePolicy, GateReport, LoadedModel, ModelProfile,
    ModelSource, NewVersion, ObjectiveVariant, Preset, Progress, Sample, TrainRequest,
    VersionNotes,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{gate, samples};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::store;

/// Most turns one run trains on; the rest wait for the next run.
const MAX_SAMPLES: usize = 128;

/// How a run is asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub preset: Preset,
    pub model: PathBuf,
    /// The evaluation gate (None: the preset's, `GatePolicy::for_preset`).
    pub gate: Option<GatePolicy>,
    /// The trainer's seed (None: from the clock).
    pub seed: Option<u64>,
    /// Our objective, or the peer's (`[training] objective`), for the benchmark.
    pub objective: ObjectiveVariant,
    /// `[training] learning_rate`: replaces the preset's.
    pub learning_rate: Option<f64>,
}

/// Whether a learning rate given in place of the preset's can be trained with: in (0, 1).
pub fn learning_rate_in_range(lr: f64) -> bool {
    lr.is_finite() && lr > 0.0 && lr < 1.0
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
        let objective = config
            .training
            .objective
            .parse()
            .map_err(|e| anyhow!("config.toml [training] objective: {e}"))?;
        let learning_rate = config.training.learning_rate;
        if let Some(lr) = learning_rate
            && !learning_rate_in_range(lr)
        {
            bail!("config.toml [training] learning_rate must be above 0 and below 1 (it is {lr})");
        }
        Ok(RunOptions {
            preset,
            model,
            gate: None,
            seed: None,
            objective,
            learning_rate,
        })
    }

    /// Most ratings one run trains on: the peer's objective takes only its batch of the oldest,
    /// and the newer ones wait, as it does (reference/reinforceclaw.md section 4.1).
    fn sample_limit(&self) -> usize {
        match self.objective {
            ObjectiveVariant::PeerMisPo => rlclaw_trainer::peer::BATCH_SIZE,
            ObjectiveVariant::Rlclaw => MAX_SAMPLES,
        }
    }

    /// The gate this run applies.
    pub fn gate_policy(&self) -> GatePolicy {
        self.gate
            .clone()
            .unwrap_or_else(|| GatePolicy::for_preset(self.preset))
    }

    /// Loads the base model where training runs (`RLCLAW_DEVICE`, else the CPU).
    pub fn load_model(&self) -> Result<LoadedModel> {
        if !self.model.exists() {
            bail!(
                "the model {} is missing: set [training] model in config.toml, or fetch the demo model with .ci/fetch-model",
                self.model.display()
            );
        }
        let source = ModelSource::from_path(&self.model)?;
        let device = DeviceChoice::from_env()?.open()?;
        LoadedModel::load_on(&source, &device)
            .with_context(|| format!("cannot load the model {}", self.model.display()))
    }
}

/// What a finished run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunOutcome {
    pub run_id: i64,
    /// The new version (serving only when `promoted`).
    pub version: String,
    /// Ratings trained on.
    pub samples: usize,
    /// New ratings kept out of training in this run (they only check versions).
    pub held_out_new: usize,
    /// Whether the gate passed the new version, which now serves.
    pub promoted: bool,
    /// What serves after the run (None: the base model).
    pub serving: Option<String>,
    /// The gate's figures and decision, in words.
    pub summary: String,
    pub gate: GateReport,
    /// The version the gate compared with (None: the base model).
    pub compared_with: Option<String>,
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

fn model_key(model: &Path) -> String {
    model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.display().to_string())
}

/// Trains once, loading the model. `progress` sees every optimiser step; `cancel` stops the
/// run early (nothing is saved then).
pub fn run_once(
    dir: &DataDir,
    options: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<RunOutcome> {
    run_with_model(dir, options, None, progress, cancel)
}

/// Trains once with an already loaded base model (`None`: load `options.model`), runs the
/// gate, keeps the new version and promotes it if the gate passes it.
pub fn run_with_model(
    dir: &DataDir,
    options: &RunOptions,
    model: Option<&LoadedModel>,
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
    // Each turn's sources blend with the weights in config.toml, as the scheduler counts them.
    let weights = Config::load(&dir.path(crate::datadir::CONFIG_FILE))?
        .rewards
        .weights;
    let untrained = samples::untrained(&conn, &weights, options.sample_limit())?;
    if untrained.samples.is_empty() {
        if untrained.held_out_ids.is_empty() {
            bail!("nothing to train on: no new ratings or rewards since the last run");
        }
        bail!(
            "nothing to train on: the {} new rating(s) are on held-out turns, which only check new versions",
            untrained.held_out_ids.len()
        );
    }
    if model.is_none() && !options.model.exists() {
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
        params![crate::now_ms(), untrained.samples.len() as i64],
    )?;
    let run_id = conn.last_insert_rowid();
    let policy = options.gate_policy();
    let held_out = gate::held_out_samples(&conn, policy.max_held_out)?;

    // From here on a failure, the model's loading included, is recorded with the run.
    let result = (|| {
        let loaded;
        let model = match model {
            Some(m) => m,
            None => {
                loaded = options.load_model()?;
                &loaded
            }
        };
        train_gate_and_save(
            dir,
            options,
            model,
            untrained.samples,
            &held_out,
            &policy,
            baseline,
            progress,
            cancel,
        )
    })();
    match result {
        Ok(done) => {
            let promoted = done.gate.promoted();
            let summary = gate::describe(&done.version, &done.gate, done.compared_with.as_deref());
            let tx = conn.unchecked_transaction()?;
            // Held-out ratings are marked with the first run that checked a version on them,
            // so they no longer wait; they are never trained on.
            untrained.used.mark(&tx, run_id)?;
            tx.execute(
                "INSERT INTO baselines (model, value, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT(model) DO UPDATE SET value = excluded.value, count = excluded.count",
                params![key, done.baseline.value, done.baseline.count],
            )?;
            tx.execute(
                "UPDATE runs SET outcome = 'ok', finished_at = ?1, adapter = ?2, metrics = ?3,
                        detail = ?4 WHERE id = ?5",
                params![
                    crate::now_ms(),
                    done.version,
                    done.metrics.to_string(),
                    summary,
                    run_id
                ],
            )?;
            tx.execute(
                "UPDATE training SET generation = generation + 1 WHERE id = 1",
                [],
            )?;
            tx.commit()?;
            // The ratings are marked; only now does the new version serve, if the gate let it.
            let store = AdapterStore::open(super::adapters_dir(dir))?;
            if promoted {
                store.promote(&done.version)?;
            }
            Ok(RunOutcome {
                run_id,
                version: done.version,
                samples: done.used,
                held_out_new: untrained.held_out_ids.len(),
                promoted,
                serving: store.active()?.map(|v| v.name),
                summary,
                gate: done.gate,
                compared_with: done.compared_with,
                metrics: done.metrics,
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

/// A trained, gated and saved version.
struct Trained {
    version: String,
    baseline: Baseline,
    metrics: serde_json::Value,
    used: usize,
    gate: GateReport,
    compared_with: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn train_gate_and_save(
    dir: &DataDir,
    options: &RunOptions,
    model: &LoadedModel,
    samples: Vec<Sample>,
    held_out: &[Sample],
    policy: &GatePolicy,
    baseline: Baseline,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<Trained> {
    let store = AdapterStore::open(super::adapters_dir(dir))?;
    let active = store.active()?;
    let mut request = TrainRequest::new(model.source.clone(), samples);
    request.preset = options.preset;
    if let Some(lr) = options.learning_rate {
        let mut h = options
            .preset
            .hyper_params(&ModelProfile::from_config(&model.config));
        h.lr = lr;
        request.hyper = Some(h);
    }
    request.baseline = baseline;
    request.behaviour_adapter = active.as_ref().map(|v| v.path.clone());
    request.parent_adapter = active.as_ref().map(|v| v.path.clone());
    request.seed = options.seed.unwrap_or_else(|| crate::now_ms() as u64);
    request.objective = options.objective;
    let report = rlclaw_trainer::train_with_model(model, &request, progress, cancel)?;
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("the run was cancelled");
    }
    let active_weights = match &active {
        Some(v) => Some(store.load(&v.name)?),
        None => None,
    };
    let gate_report = rlclaw_trainer::eval::evaluate(
        model,
        &report.adapter,
        active_weights.as_ref(),
        held_out,
        policy,
    )
    .context("the evaluation gate failed")?;
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("the run was cancelled");
    }
    let compared_with = active.as_ref().map(|v| v.name.clone());
    let metrics = serde_json::to_value(&report.metrics)?;
    let info = store.save_with_notes(
        &report.adapter,
        NewVersion {
            parent: compared_with.clone(),
            ratings: report.turn_ids.clone(),
            metrics: metrics.clone(),
            base_model: report.base_model.clone(),
        },
        VersionNotes {
            gate: Some(gate_record(&gate_report, compared_with.as_deref())?),
            imported: None,
        },
    )?;
    Ok(Trained {
        version: info.name,
        baseline: report.baseline,
        metrics,
        used: report.metrics.samples,
        gate: gate_report,
        compared_with,
    })
}

/// The gate's report as kept in a version's metadata, with the version it was compared with.
pub fn gate_record(report: &GateReport, compared_with: Option<&str>) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(report)?;
    v["compared_with"] = serde_json::json!(compared_with);
    Ok(v)
}
