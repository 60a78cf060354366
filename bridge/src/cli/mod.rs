//! The `rlclaw` command line: one module per command.

mod bench;
mod bench_learn;
mod doctor;
mod emit;
mod export;
mod history;
mod hooks;
mod init;
mod key;
mod plugin;
mod rate;
mod serve;
mod service;
mod status;
mod tls;
mod train;
mod uninstall;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::datadir::{self, DataDir};

pub use status::sparkline;

#[derive(Parser)]
#[command(
    name = "rlclaw",
    version,
    about = "Teach your own AI model by reacting to its answers.",
    long_about = "rlclaw keeps the ratings you give your agent's replies (in chat, or here) and \
                  trains a LoRA adapter for your local model from them. Nothing leaves this machine."
)]
struct Cli {
    /// Where rlclaw keeps its database, key, adapters and logs.
    #[arg(long, global = true, env = "RLCLAW_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge daemon: receive signed ratings and captures, keep them, train.
    Serve(serve::Args),
    /// Counts, the reward trend and the training state.
    Status(status::Args),
    /// Rate the latest captured reply as good.
    Good(rate::Args),
    /// Rate the latest captured reply as bad.
    Bad(rate::Args),
    /// Take back the most recent rating.
    Undo(rate::UndoArgs),
    /// Send one rollout: an agent's finished task with its measurements.
    Emit(emit::Args),
    /// Recent captured turns and their ratings.
    History(history::Args),
    /// Write the rated turns as a dataset.
    Export(export::Args),
    /// Manage the shared key.
    Key(key::Args),
    /// The TLS certificate for serving beyond loopback, and its pin.
    Tls(tls::Args),
    /// Train a new adapter on the ratings no run has used yet.
    Train(train::TrainArgs),
    /// List the adapter versions and what the gate measured; `import DIR` adds one trained elsewhere.
    Adapters(train::AdaptersArgs),
    /// Serve a version the evaluation gate held back (an admin's decision; recorded).
    Promote(train::PromoteArgs),
    /// Serve an earlier adapter version (default: the active one's parent).
    Rollback(train::RollbackArgs),
    /// Serve the base model again (asks first; versions are kept).
    Reset(train::ResetArgs),
    /// Measure the bridge under load with signed requests.
    Bench(bench::Args),
    /// Set up rlclaw: key, config, OpenClaw plugin, service (again: changes only what differs).
    Init(init::Args),
    /// Remove the service, the plugin entry and the agent hooks (data kept unless --purge).
    Uninstall(uninstall::Args),
    /// Install, remove or check the OpenClaw plugin and its config.
    Plugin(plugin::Args),
    /// Install, remove or check the bridge's systemd user unit or launchd agent.
    Service(service::Args),
    /// Install or remove the Claude Code or Codex Stop hook.
    Hooks(hooks::Args),
    /// What the Claude Code or Codex Stop hook runs: captures the finished turn (reads stdin).
    Hook(hooks::HookArgs),
    /// Check every part of the installation and say what to fix.
    Doctor(doctor::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rlclaw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let dir = cli.data_dir.unwrap_or_else(datadir::default_dir);
    match cli.command {
        Command::Serve(args) => serve::run(&dir, args),
        Command::Status(args) => status::run(&dir, args),
        Command::Good(args) => rate::run(&dir, args, 1.0),
        Command::Bad(args) => rate::run(&dir, args, -1.0),
        Command::Undo(args) => rate::undo(&dir, args),
        Command::Emit(args) => emit::run(&dir, args),
        Command::History(args) => history::run(&dir, args),
        Command::Export(args) => export::run(&dir, args),
        Command::Key(args) => key::run(&dir, args),
        Command::Tls(args) => tls::run(&dir, args),
        Command::Train(args) => train::train(&dir, args),
        Command::Adapters(args) => train::adapters(&dir, args),
        Command::Promote(args) => train::promote(&dir, args),
        Command::Rollback(args) => train::rollback(&dir, args),
        Command::Reset(args) => train::reset(&dir, args),
        Command::Bench(args) => bench::run(&dir, args),
        Command::Init(args) => init::run(&dir, args),
        Command::Uninstall(args) => uninstall::run(&dir, args),
        Command::Plugin(args) => plugin::run(&dir, args),
        Command::Service(args) => service::run(&dir, args),
        Command::Hooks(args) => hooks::run(&dir, args),
        Command::Hook(args) => hooks::run_hook(&dir, args),
        Command::Doctor(args) => doctor::run(&dir, args),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RLCLAW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Where client commands find the bridge: `--bridge`, else the address `serve` recorded.
#[derive(clap::Args, Clone)]
pub struct BridgeArgs {
    /// The bridge's address (default: where `rlclaw serve` last listened, else 127.0.0.1:8420).
    #[arg(long, env = "RLCLAW_BRIDGE", value_name = "ADDR")]
    bridge: Option<SocketAddr>,
}

impl BridgeArgs {
    pub fn addr(&self, dir: &DataDir) -> SocketAddr {
        self.bridge.unwrap_or_else(|| {
            std::fs::read_to_string(dir.path(serve::ADDR_FILE))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8420)))
        })
    }
}

/// A runtime for the client commands.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Opens the data folder of an existing installation.
fn existing(dir: &std::path::Path) -> Result<DataDir> {
    if !dir.exists() {
        anyhow::bail!(
            "{} does not exist: start the bridge with `rlclaw serve` first, or pass --data-dir",
            dir.display()
        );
    }
    DataDir::open(dir)
}
