//! `rlclaw adapters import DIR`: a PEFT LoRA adapter trained anywhere becomes a version here,
//! checked against the base model first, then put through the same gate as a trained one.
//! An adapter that does not fit changes nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rlclaw_trainer::{
    AdapterStore, ForeignInfo, GateReport, LoadedModel, NewVersion, VersionNotes,
    read_foreign_adapter,
};

use super::gate;
use super::run::{RunLock, RunOptions, gate_record};
use crate::datadir::DataDir;
use crate::store;

/// What an import produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportOutcome {
    pub version: String,
    /// Whether the gate passed it, so that it now serves.
    pub promoted: bool,
    /// What serves after the import (None: the base model).
    pub serving: Option<String>,
    /// The gate's figures and decision, in words.
    pub summary: String,
    pub gate: GateReport,
    pub compared_with: Option<String>,
    pub imported: ForeignInfo,
}

/// Imports the adapter in `src` (checked against `options.model`, or `model` when given),
/// gates it against the active version and serves it if the gate passes it. `any_base`
/// accepts an adapter whose recorded base model has another name (shapes are still checked).
pub fn import_adapter(
    dir: &DataDir,
    src: &Path,
    options: &RunOptions,
    model: Option<&LoadedModel>,
    any_base: bool,
) -> Result<ImportOutcome> {
    let src: PathBuf = std::fs::canonicalize(src)
        .with_context(|| format!("cannot open the adapter folder {}", src.display()))?;
    let Some(_lock) = RunLock::try_take(dir)? else {
        bail!("a training run is in progress; import the adapter after it finishes");
    };
    let loaded;
    let model = match model {
        Some(m) => m,
        None => {
            loaded = options.load_model()?;
            &loaded
        }
    };
    let foreign = read_foreign_adapter(&src, model, any_base).with_context(|| {
        format!(
            "the adapter does not fit the base model {}; nothing was changed",
            options.model.display()
        )
    })?;
    let policy = options.gate_policy();
    let conn = store::open_rw(&dir.db_path())
        .with_context(|| format!("cannot open {}", dir.db_path().display()))?;
    let held_out = gate::held_out_samples(&conn, policy.max_held_out)?;
    drop(conn);
    let store = AdapterStore::open(super::adapters_dir(dir))?;
    let active = store.active()?;
    let active_weights = match &active {
        Some(v) => Some(store.load(&v.name)?),
        None => None,
    };
    let report = rlclaw_trainer::eval::evaluate(
        model,
        &foreign.weights,
        active_weights.as_ref(),
        &held_out,
        &policy,
    )
    .context("the evaluation gate failed; nothing was changed")?;
    let compared_with = active.map(|v| v.name);
    let info = store.save_with_notes(
        &foreign.weights,
        NewVersion {
            parent: compared_with.clone(),
            ratings: Vec::new(),
            metrics: serde_json::json!({"imported": true}),
            base_model: model.name.clone(),
        },
        VersionNotes {
            gate: Some(gate_record(&report, compared_with.as_deref())?),
            imported: Some(serde_json::to_value(&foreign.info)?),
        },
    )?;
    let promoted = report.promoted();
    if promoted {
        store.promote(&info.name)?;
    }
    Ok(ImportOutcome {
        summary: gate::describe(&info.name, &report, compared_with.as_deref()),
        version: info.name,
        promoted,
        serving: store.active()?.map(|v| v.name),
        gate: report,
        compared_with,
        imported: foreign.info,
    })
}
