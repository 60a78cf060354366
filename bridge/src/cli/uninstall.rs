//! `rlclaw uninstall [--purge]`: removes the service, the OpenClaw plugin entry and the agent
//! hooks. The data folder (ratings, adapters, key) stays unless `--purge`, which asks first.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Result, bail};

use super::plugin::OpenClawArgs;
use crate::install::hooks::{self, Agent};
use crate::install::service;

#[derive(clap::Args)]
pub struct Args {
    /// Also delete the data folder: every rating, adapter and the key (asks first).
    #[arg(long)]
    purge: bool,
    /// Do not ask (needed for --purge without a terminal).
    #[arg(long, short)]
    yes: bool,
    #[command(flatten)]
    openclaw: OpenClawArgs,
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    if args.purge && !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "--purge deletes every rating; without a terminal to ask, add --yes. Changed nothing"
            );
        }
        print!(
            "Delete {} with all ratings, adapters and the key? Type `delete` to confirm: ",
            dir.display()
        );
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != "delete" {
            bail!("not confirmed; changed nothing");
        }
    }
    let mut problems = 0;
    let manager = service::Manager::native();
    match service::uninstall(manager) {
        Ok(true) => println!("  ✓ removed the {}", manager.name()),
        Ok(false) => println!("  · no {} was installed", manager.name()),
        Err(e) => {
            problems += 1;
            println!("  ✗ the service: {e:#}");
        }
    }
    match super::plugin::uninstall(&args.openclaw) {
        Ok(lines) => lines.iter().for_each(|l| println!("  ✓ {l}")),
        Err(e) => {
            problems += 1;
            println!("  ✗ the OpenClaw plugin: {e:#}");
        }
    }
    for agent in [Agent::ClaudeCode, Agent::Codex] {
        if hooks::installed(agent).unwrap_or(false) {
            match hooks::uninstall(agent) {
                Ok(lines) => lines.iter().for_each(|l| println!("  ✓ {l}")),
                Err(e) => {
                    problems += 1;
                    println!("  ✗ the {} hook: {e:#}", agent.label());
                }
            }
        }
    }
    if args.purge {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
            println!("  ✓ deleted {}", dir.display());
        }
    } else {
        println!(
            "  · kept your data in {} (`rlclaw uninstall --purge` deletes it)",
            dir.display()
        );
    }
    if problems > 0 {
        bail!("{problems} step(s) failed (see ✗ above)");
    }
    Ok(())
}
