//! `rlclaw train`, `adapters`, `rollback`, `reset`: the adapter lifecycle from the terminal.

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
use crate::training::{adapters_dir, control_for};

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

pub fn train(dir: &Path, args: TrainArgs) -> Result<()> {
    let dir = existing(dir)?;
    let config = Config::load(&dir.path(CONFIG_FILE))?;
    let mut options = RunOptions::from_config(&config)?;
    if let Some(preset) = &args.preset {
        options.preset = preset.parse().map_err(|e| anyhow!("--preset: {e}"))?;
    }
    if let Some(model) = args.model {
        options.model = model;
    }
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
        println!(
            "Trained {} on {} ratings; it now serves. (`rlclaw rollback` undoes this.)",
            outcome.version, outcome.samples
        );
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
}

pub fn adapters(dir: &Path, args: AdaptersArgs) -> Result<()> {
    let dir = existing(dir)?;
    let store = AdapterStore::open(adapters_dir(&dir))?;
    let active = store.active()?.map(|v| v.name);
    let versions = store.list()?;
    if args.json {
        let list: Vec<_> = versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "version": v.name, "active": Some(&v.name) == active.as_ref(),
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
        let mark = if Some(&v.name) == active.as_ref() {
            "*"
        } else {
            " "
        };
        println!(
            "{mark} {:<5} {}  {} ratings  parent {}",
            v.name,
            v.metadata.created,
            v.metadata.ratings.len(),
            v.metadata.parent.as_deref().unwrap_or("base")
        );
    }
    if active.is_none() {
        println!("(the base model serves)");
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
        .rollback(args.version.as_deref())
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
