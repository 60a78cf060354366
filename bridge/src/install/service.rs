//! The bridge as a per-user service: a systemd user unit on Linux, a launchd agent on macOS.
//! The templates live in service-units/ and are embedded here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::files;

pub const SYSTEMD_TEMPLATE: &str = include_str!("../../../service-units/rlclaw.service");
pub const LAUNCHD_TEMPLATE: &str = include_str!("../../../service-units/dev.rlclaw.bridge.plist");
pub const SYSTEMD_UNIT: &str = "rlclaw.service";
pub const LAUNCHD_LABEL: &str = "dev.rlclaw.bridge";

/// Which service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    /// The one this system uses.
    pub fn native() -> Manager {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }
    }

    /// Where the rendered file goes.
    pub fn unit_path(self) -> Result<PathBuf> {
        Ok(match self {
            Manager::Systemd => dirs::config_dir()
                .ok_or_else(|| anyhow::anyhow!("cannot tell your config folder: set HOME"))?
                .join("systemd")
                .join("user")
                .join(SYSTEMD_UNIT),
            Manager::Launchd => super::home()?
                .join("Library")
                .join("LaunchAgents")
                .join(format!("{LAUNCHD_LABEL}.plist")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd user unit",
            Manager::Launchd => "launchd agent",
        }
    }
}

/// The folder the launchd agent logs to (~/Library/Logs/rlclaw).
pub fn launchd_log_dir() -> Result<PathBuf> {
    Ok(super::home()?.join("Library").join("Logs").join("rlclaw"))
}

fn check_path(what: &str, path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the {what} path {} is not UTF-8", path.display()))?;
    if !path.is_absolute() {
        bail!("the {what} path {text} is not absolute");
    }
    if text.chars().any(|c| c.is_control()) {
        bail!("the {what} path {text:?} contains control characters");
    }
    Ok(text.to_owned())
}

/// One word for a systemd unit line: `%` escaped (and `$` on command lines, which expand
/// variables), quoted when it holds spaces, quotes or backslashes.
fn systemd_word(text: &str, command_line: bool) -> String {
    let mut escaped = text.replace('%', "%%");
    if command_line {
        escaped = escaped.replace('$', "$$");
    }
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == ';')
    {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The systemd user unit for this binary and data folder.
pub fn render_systemd(bin: &Path, data_dir: &Path) -> Result<String> {
    let bin = check_path("rlclaw binary", bin)?;
    let dir = check_path("data folder", data_dir)?;
    let exec = [bin.as_str(), "serve", "--data-dir", dir.as_str()]
        .iter()
        .map(|w| systemd_word(w, true))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(SYSTEMD_TEMPLATE
        .replace("{exec_start}", &exec)
        .replace("{data_dir}", &systemd_word(&dir, false)))
}

/// The launchd agent for this binary and data folder.
pub fn render_launchd(bin: &Path, data_dir: &Path, log_dir: &Path) -> Result<String> {
    let bin = check_path("rlclaw binary", bin)?;
    let dir = check_path("data folder", data_dir)?;
    let logs = check_path("log folder", log_dir)?;
    Ok(LAUNCHD_TEMPLATE
        .replace("{bin}", &xml_escape(&bin))
        .replace("{data_dir}", &xml_escape(&dir))
        .replace("{log_dir}", &xml_escape(&logs)))
}

pub fn render(manager: Manager, bin: &Path, data_dir: &Path) -> Result<String> {
    match manager {
        Manager::Systemd => render_systemd(bin, data_dir),
        Manager::Launchd => render_launchd(bin, data_dir, &launchd_log_dir()?),
    }
}

/// Runs a command; its combined output, or an error that shows it.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    super::run_command(cmd, &format!("{program} {}", args.join(" ")))
}

/// Whether a per-user service manager answers; the reason when not.
pub fn manager_available(manager: Manager) -> Result<(), String> {
    match manager {
        Manager::Systemd => match run("systemctl", &["--user", "show-environment"]) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "no systemd user manager is reachable ({e:#}). On a desktop, log in normally; \
                 over SSH, run `loginctl enable-linger $USER` and log in again; in a container \
                 without systemd, run `rlclaw serve` from your own startup script instead"
            )),
        },
        Manager::Launchd => {
            if !cfg!(target_os = "macos") {
                return Err("launchd is only on macOS".into());
            }
            match run("launchctl", &["print", &gui_domain()]) {
                Ok(_) => Ok(()),
                Err(e) => Err(format!(
                    "the launchd GUI domain {} is not reachable ({e:#}): log in to the desktop \
                     session, or run `rlclaw serve` yourself",
                    gui_domain()
                )),
            }
        }
    }
}

fn gui_domain() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    format!("gui/{}", unsafe { libc::getuid() })
}

/// What `install` would run (or ran), for --dry-run and the report.
pub fn install_commands(manager: Manager, path: &Path) -> Vec<String> {
    match manager {
        Manager::Systemd => vec![
            "systemctl --user daemon-reload".into(),
            format!("systemctl --user enable --now {SYSTEMD_UNIT}"),
            format!("systemctl --user restart {SYSTEMD_UNIT}   (only when the unit changed)"),
        ],
        Manager::Launchd => vec![
            format!(
                "launchctl bootout {}/{LAUNCHD_LABEL}   (when loaded)",
                gui_domain()
            ),
            format!("launchctl bootstrap {} {}", gui_domain(), path.display()),
        ],
    }
}

/// The outcome of an install.
pub struct Installed {
    pub path: PathBuf,
    pub changed: bool,
}

/// Writes the unit (when it differs), then enables and starts it, or restarts it when it
/// changed. Checks the manager first: when none answers, nothing is written.
pub fn install(manager: Manager, bin: &Path, data_dir: &Path) -> Result<Installed> {
    let text = render(manager, bin, data_dir)?;
    manager_available(manager).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = manager.unit_path()?;
    let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str());
    if changed {
        files::atomic_write(&path, text.as_bytes(), 0o644)?;
    }
    match manager {
        Manager::Systemd => {
            run("systemctl", &["--user", "daemon-reload"])?;
            run("systemctl", &["--user", "enable", "--now", SYSTEMD_UNIT])?;
            if changed {
                run("systemctl", &["--user", "restart", SYSTEMD_UNIT])?;
            }
        }
        Manager::Launchd => {
            let logs = launchd_log_dir()?;
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("cannot create {}", logs.display()))?;
            let target = format!("{}/{LAUNCHD_LABEL}", gui_domain());
            let loaded = run("launchctl", &["print", &target]).is_ok();
            if loaded && changed {
                let _ = run("launchctl", &["bootout", &target]);
            }
            if !loaded || changed {
                run(
                    "launchctl",
                    &["bootstrap", &gui_domain(), &path.to_string_lossy()],
                )?;
            }
        }
    }
    Ok(Installed { path, changed })
}

/// Restarts the service so it reads a changed config (no-op when it is not running).
pub fn restart_if_running(manager: Manager) -> Result<bool> {
    if !matches!(status(manager), State::Running(_)) {
        return Ok(false);
    }
    match manager {
        Manager::Systemd => run("systemctl", &["--user", "restart", SYSTEMD_UNIT])?,
        Manager::Launchd => run(
            "launchctl",
            &[
                "kickstart",
                "-k",
                &format!("{}/{LAUNCHD_LABEL}", gui_domain()),
            ],
        )?,
    };
    Ok(true)
}

/// Stops and disables the service and removes its file. Returns whether there was one.
pub fn uninstall(manager: Manager) -> Result<bool> {
    let path = manager.unit_path()?;
    let existed = path.exists();
    match manager {
        Manager::Systemd => {
            if manager_available(manager).is_ok() {
                let _ = run("systemctl", &["--user", "disable", "--now", SYSTEMD_UNIT]);
            }
            if existed {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
            if manager_available(manager).is_ok() {
                let _ = run("systemctl", &["--user", "daemon-reload"]);
            }
        }
        Manager::Launchd => {
            if cfg!(target_os = "macos") {
                let _ = run(
                    "launchctl",
                    &["bootout", &format!("{}/{LAUNCHD_LABEL}", gui_domain())],
                );
            }
            if existed {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
    }
    Ok(existed)
}

/// The service's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No unit file.
    NotInstalled,
    /// Installed, and the manager says it runs.
    Running(String),
    /// Installed but not running (the manager's word for it).
    Stopped(String),
    /// Installed, but no manager answers.
    NoManager(String),
}

pub fn status(manager: Manager) -> State {
    let Ok(path) = manager.unit_path() else {
        return State::NotInstalled;
    };
    if !path.exists() {
        return State::NotInstalled;
    }
    if let Err(why) = manager_available(manager) {
        return State::NoManager(why);
    }
    match manager {
        Manager::Systemd => {
            let out = Command::new("systemctl")
                .args(["--user", "is-active", SYSTEMD_UNIT])
                .stdin(std::process::Stdio::null())
                .output();
            match out {
                Ok(o) => {
                    let word = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                    if o.status.success() {
                        State::Running(word)
                    } else {
                        State::Stopped(word)
                    }
                }
                Err(e) => State::NoManager(e.to_string()),
            }
        }
        Manager::Launchd => {
            match run(
                "launchctl",
                &["print", &format!("{}/{LAUNCHD_LABEL}", gui_domain())],
            ) {
                Ok(text) if text.contains("state = running") => State::Running("running".into()),
                Ok(_) => State::Stopped("loaded, not running".into()),
                Err(_) => State::Stopped("not loaded".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_quotes_and_escapes_paths_and_leaves_no_placeholder() {
        let unit =
            render_systemd(Path::new("/opt/rl claw/rlclaw"), Path::new("/home/a/50%$x")).unwrap();
        assert!(
            unit.contains("ExecStart=\"/opt/rl claw/rlclaw\" serve --data-dir /home/a/50%%$$x")
        );
        assert!(unit.contains("ReadWritePaths=/home/a/50%%$x"));
        assert!(!unit.contains("{exec_start}") && !unit.contains("{data_dir}"));
        assert!(render_systemd(Path::new("relative"), Path::new("/x")).is_err());
        assert!(render_systemd(Path::new("/bin/x"), Path::new("/x\ny")).is_err());
    }

    #[test]
    fn the_plist_escapes_xml() {
        let plist =
            render_launchd(Path::new("/a&b/rlclaw"), Path::new("/d<"), Path::new("/l")).unwrap();
        assert!(plist.contains("<string>/a&amp;b/rlclaw</string>"));
        assert!(plist.contains("<string>/d&lt;</string>"));
        assert!(plist.contains("<string>/l/bridge.log</string>"));
    }
}
