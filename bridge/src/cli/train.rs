//! `rlclaw train`, `adapters` (and `adapters import`), `promote`, `rollback`, `reset`: the
//! adapter lifecycle from the terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rlclaw_trainer::AdapterStore;

use super::existing;
use crate::config::Config;
use crate::datadir::CONFIG_FILE;
use crate::training::run::{self, RunOptions};
use crate::training::{adapters_dir, control_for, gate, import};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// careful | balanced | aggressive (default: config.toml's, else balanced).
    #[arg(long)]
    preset: Option<String>,
    /// The base model: a GGUF file or a Hugging Face safetensors folder.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// The config's run options with `--preset` and `--model` applied.
fn options_for(
    dir: &crate::datadir::DataDir,
    preset: Option<&str>,
    model: Option<PathBuf>,
) -> Result<RunOptions> {
    let config = Config::load(&dir.path(CONFIG_FILE))?;
    let mut options = RunOptions::from_config(&config)?;
    if let Some(preset) = preset {
        options.preset = preset.parse().map_err(|e| anyhow!("--preset: {e}"))?;
    }
    if let Some(model) = model {
        options.model = model;
    }
    Ok(options)
}

pub fn train(dir: &Path, args: TrainArgs) -> Result<()> {
    let dir = existing(dir)?;
    let options = options_for(&dir, args.preset.as_deref(), args.model)?;
    let bar = ProgressBar::new(0);
    if args.json || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg} · ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("loading {}", options.model.display()));
    bar.enable_steady_tick(Duration::from_millis(200));
    let cancel = AtomicBool::new(false);
    let outcome = run::run_once(
        &dir,
        &options,
        &mut |p| {
            bar.set_length(p.total_steps as u64);
            bar.set_position(p.step as u64);
            bar.set_message(format!(
                "loss {:+.4} · KL {:.5} · {:.0} tok/s",
                p.loss, p.kl, p.tokens_per_sec
            ));
        },
        &cancel,
    );
    bar.finish_and_clear();
    let outcome = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        let held = match outcome.held_out_new {
            0 => String::new(),
            1 => " (1 new rating is on a held-out turn: it only checks versions)".into(),
            n => format!(" ({n} new ratings are on held-out turns: they only check versions)"),
        };
        if outcome.promoted {
            println!(
                "Trained {} on {} ratings{held}; it now serves. (`rlclaw rollback` undoes this.)",
                outcome.version, outcome.samples
            );
        } else {
            println!(
                "Trained {} on {} ratings{held}, but the evaluation gate held it back; {} still serves.",
                outcome.version,
                outcome.samples,
                outcome.serving.as_deref().unwrap_or("the base model")
            );
        }
        println!("  {}", outcome.summary);
        if !outcome.promoted {
            println!("  `rlclaw promote {}` serves it anyway.", outcome.version);
        }
        let m = &outcome.metrics;
        println!(
            "  steps {} · loss {:.4} → {:.4} · KL {:.5} · {:.0} tokens/s · {:.1} s",
            m["steps"],
            m["first_loss"].as_f64().unwrap_or(0.0),
            m["final_loss"].as_f64().unwrap_or(0.0),
            m["final_kl"].as_f64().unwrap_or(0.0),
            m["tokens_per_sec"].as_f64().unwrap_or(0.0),
            m["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct AdaptersArgs {
    /// Print the versions as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<AdaptersAction>,
}

#[derive(clap::Subcommand)]
enum AdaptersAction {
    /// Import a PEFT LoRA adapter trained elsewhere (adapter_config.json +
    /// adapter_model.safetensors): checked against the base model, gated like a trained one.
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The adapter folder.
    dir: PathBuf,
    /// The base model to check it against (default: config.toml's, else the demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Whose drift bound the gate applies: careful | balanced | aggressive.
    #[arg(long)]
    preset: Option<String>,
    /// Accept an adapter whose recorded base model has another name (shapes are still checked).
    #[arg(long)]
    any_base: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

pub fn adapters(dir: &Path, args: AdaptersArgs) -> Result<()> {
    let dir = existing(dir)?;
    if let Some(AdaptersAction::Import(import)) = args.action {
        return import_adapter(&dir, import, args.json);
    }
    let store = AdapterStore::open(adapters_dir(&dir))?;
    let active = store.active()?.map(|v| v.name);
    let versions = store.list()?;
    if args.json {
        let list: Vec<_> = versions
            .iter()
            .map(|v| {
                let view = gate::view(v);
                serde_json::json!({
                    "version": v.name, "active": Some(&v.name) == active.as_ref(),
                    "candidate": v.metadata.held_back(),
                    "decision": view.decision, "summary": view.summary,
                    "path": v.path, "metadata": v.metadata,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if versions.is_empty() {
        println!("No adapters yet: the base model serves. Rate some replies, then `rlclaw train`.");
        return Ok(());
    }
    for v in &versions {
        let serving = Some(&v.name) == active.as_ref();
        let mark = if serving { "*" } else { " " };
        let view = gate::view(v);
        let state = match (serving, view.decision) {
            (true, "forced") => "serving, forced by an admin",
            (true, "gate") => "serving, passed the gate",
            (true, _) => "serving",
            (false, "held") => "candidate, held back by the gate",
            (false, "forced") => "forced once, not serving",
            (false, _) => "not serving",
        };
        let origin = match v
            .metadata
            .imported
            .as_ref()
            .and_then(|i| i["from"].as_str())
        {
            Some(from) => format!("imported from {from}"),
            None => format!("{} ratings", v.metadata.ratings.len()),
        };
        println!(
            "{mark} {:<5} {}  {origin}  parent {}  ({state})",
            v.name,
            v.metadata.created,
            v.metadata.parent.as_deref().unwrap_or("base"),
        );
        if view.report.is_some() {
            println!("        {}", view.summary);
        }
        if !serving && view.decision == "held" {
            println!("        `rlclaw promote {}` serves it anyway.", v.name);
        }
    }
    if active.is_none() {
        println!("(the base model serves)");
    }
    Ok(())
}

fn import_adapter(dir: &crate::datadir::DataDir, args: ImportArgs, json: bool) -> Result<()> {
    let options = options_for(dir, args.preset.as_deref(), args.model)?;
    let outcome = import::import_adapter(dir, &args.dir, &options, None, args.any_base)?;
    if json || args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    let i = &outcome.imported;
    println!(
        "Imported {} as {}: LoRA r={} alpha={} on {} in {} of the model's layers ({}).",
        i.from.display(),
        outcome.version,
        i.r,
        i.lora_alpha,
        i.target_modules.join(", "),
        i.layers_trained,
        i.dtype
    );
    if i.base_model_name_or_path.is_none() {
        println!("  The adapter records no base model; it was checked by its shapes alone.");
    }
    if outcome.promoted {
        println!("  It now serves. (`rlclaw rollback` undoes this.)");
    } else {
        println!(
            "  The evaluation gate held it back; {} still serves.",
            outcome.serving.as_deref().unwrap_or("the base model")
        );
    }
    println!("  {}", outcome.summary);
    if !outcome.promoted {
        println!("  `rlclaw promote {}` serves it anyway.", outcome.version);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The version to serve (v1, v2, …).
    version: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

pub fn promote(dir: &Path, args: PromoteArgs) -> Result<()> {
    let dir = existing(dir)?;
    let store = AdapterStore::open(adapters_dir(&dir))?;
    let text = gate::force_promote(&store, &args.version, "cli")?;
    if args.json {
        let info = store.get(&args.version)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "version": info.name,
                "serving": store.active()?.map(|v| v.name),
                "forced": info.metadata.forced,
                "text": text,
            }))?
        );
    } else {
        println!("{text}");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The version to serve (default: the active version's parent).
    version: Option<String>,
}

pub fn rollback(dir: &Path, args: RollbackArgs) -> Result<()> {
    let dir = existing(dir)?;
    let text = control_for(&dir)
        .rollback(args.version.as_deref(), "cli")
        .map_err(|e| anyhow!("{}", e.message))?;
    println!("{text}");
    Ok(())
}

#[derive(clap::Args)]
pub struct ResetArgs {
    /// Do not ask first.
    #[arg(long, short)]
    yes: bool,
}

pub fn reset(dir: &Path, args: ResetArgs) -> Result<()> {
    let dir = existing(dir)?;
    let control = control_for(&dir);
    let Some(active) = control.active_adapter() else {
        println!("The base model already serves; nothing to reset.");
        return Ok(());
    };
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("reset asks first; pass --yes to confirm without a terminal");
        }
        eprint!("Stop serving {active} and go back to the base model? Versions are kept. [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing changed.");
            return Ok(());
        }
    }
    let text = control.reset().map_err(|e| anyhow!("{}", e.message))?;
    println!("{text}");
    Ok(())
}
