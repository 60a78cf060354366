//! `rlclaw service install|uninstall|status|render`: the bridge as a per-user service
//! (systemd user unit on Linux, launchd agent on macOS; templates in service-units/).

use std::path::Path;

use anyhow::Result;

use crate::datadir::DataDir;
use crate::install::{self, service};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Write the unit for this binary and data folder, enable it and start it.
    Install {
        /// Print the unit and the commands instead of running them; changes nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop and disable the service and remove its unit (the data folder stays).
    Uninstall,
    /// Whether the service is installed and running.
    Status,
    /// Print the unit file `install` would write.
    Render {
        /// Which manager's file (default: this system's).
        #[arg(long, value_enum)]
        manager: Option<service::Manager>,
    },
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let manager = service::Manager::native();
    match args.action {
        Action::Install { dry_run } => install_service(dir, dry_run, &mut std::io::stdout()),
        Action::Uninstall => {
            if service::uninstall(manager)? {
                println!(
                    "Removed the {} ({}).",
                    manager.name(),
                    manager.unit_path()?.display()
                );
            } else {
                println!("No {} was installed.", manager.name());
            }
            println!("The data folder {} is kept.", dir.display());
            Ok(())
        }
        Action::Status => {
            println!("{}", describe(manager, &service::status(manager))?);
            Ok(())
        }
        Action::Render { manager: which } => {
            let which = which.unwrap_or(manager);
            let dir = absolute(dir)?;
            print!(
                "{}",
                service::render(which, &install::current_bin()?, &dir)?
            );
            Ok(())
        }
    }
}

/// The data folder as an absolute path (services run from another working directory).
pub fn absolute(dir: &Path) -> Result<std::path::PathBuf> {
    Ok(if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    })
}

pub fn describe(manager: service::Manager, state: &service::State) -> Result<String> {
    let path = manager.unit_path()?;
    Ok(match state {
        service::State::NotInstalled => format!(
            "{}: not installed (run `rlclaw service install`)",
            manager.name()
        ),
        service::State::Running(word) => {
            format!("{}: running ({word}), {}", manager.name(), path.display())
        }
        service::State::Stopped(word) => format!(
            "{}: installed but not running ({word}); see {}",
            manager.name(),
            match manager {
                service::Manager::Systemd => "`journalctl --user -u rlclaw`".to_owned(),
                service::Manager::Launchd => format!(
                    "{}",
                    service::launchd_log_dir()?.join("bridge.err.log").display()
                ),
            }
        ),
        service::State::NoManager(why) => {
            format!(
                "{}: installed at {}, but {why}",
                manager.name(),
                path.display()
            )
        }
    })
}

/// Installs (or with `dry_run` shows) the service; used by `init` too.
pub fn install_service(dir: &Path, dry_run: bool, out: &mut dyn std::io::Write) -> Result<()> {
    let manager = service::Manager::native();
    let dir = absolute(dir)?;
    let bin = install::current_bin()?;
    let text = service::render(manager, &bin, &dir)?;
    let path = manager.unit_path()?;
    if dry_run {
        writeln!(out, "Would write {}:", path.display())?;
        writeln!(out, "{text}")?;
        writeln!(out, "Then run:")?;
        for cmd in service::install_commands(manager, &path) {
            writeln!(out, "  {cmd}")?;
        }
        if let Err(why) = service::manager_available(manager) {
            writeln!(out, "Note: {why}.")?;
        }
        return Ok(());
    }
    service::manager_available(manager).map_err(|why| anyhow::anyhow!("{why}; changed nothing"))?;
    // The unit makes the data folder writable; it must exist before the service starts.
    DataDir::open(&dir)?;
    let installed = service::install(manager, &bin, &dir)?;
    if installed.changed {
        writeln!(
            out,
            "Installed and started the {} ({}).",
            manager.name(),
            installed.path.display()
        )?;
    } else {
        writeln!(
            out,
            "The {} was already installed; it is enabled and started.",
            manager.name()
        )?;
    }
    Ok(())
}
