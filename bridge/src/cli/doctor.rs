//! `rlclaw doctor [--json]`: checks every part of an installation and says exactly what to fix.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use hyper::Method;
use serde::Serialize;

use super::plugin::OpenClawArgs;
use super::{BridgeArgs, runtime};
use crate::client::Client;
use crate::config::Config;
use crate::datadir::{CONFIG_FILE, KEY_FILE};
use crate::install::hooks::{self, Agent};
use crate::install::{openclaw, service};
use crate::keys::Key;

#[derive(clap::Args)]
pub struct Args {
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bridge: BridgeArgs,
    #[command(flatten)]
    openclaw: OpenClawArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        level: Level::Ok,
        detail: detail.into(),
        fix: None,
    }
}
fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        level: Level::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}
fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        level: Level::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let checks = checks(dir, &args);
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"ok": failed == 0, "checks": checks})
            )?
        );
    } else {
        for c in &checks {
            let tag = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{tag}  {:<12} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("      {:<12} fix: {fix}", "");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed; the fixes are above");
    }
    Ok(())
}

pub fn checks(dir: &Path, args: &Args) -> Vec<Check> {
    let mut out = Vec::new();
    // Data folder.
    match std::fs::metadata(dir) {
        Err(_) => {
            out.push(fail(
                "data folder",
                format!("{} does not exist", dir.display()),
                "run `rlclaw init`",
            ));
            return out;
        }
        Ok(m) if !m.is_dir() => {
            out.push(fail(
                "data folder",
                format!("{} is not a folder", dir.display()),
                "remove it, then run `rlclaw init`",
            ));
            return out;
        }
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push(fail(
                    "data folder",
                    format!(
                        "{} has mode {mode:o}; others can read your ratings",
                        dir.display()
                    ),
                    format!("chmod 700 {}", dir.display()),
                ));
            } else {
                out.push(ok(
                    "data folder",
                    format!("{} (mode {mode:o})", dir.display()),
                ));
            }
        }
    }
    // Key.
    let key_path = dir.join(KEY_FILE);
    let key: Option<Key> = match std::fs::metadata(&key_path) {
        Err(_) => {
            out.push(fail(
                "key",
                format!("no key file {}", key_path.display()),
                "run `rlclaw init`",
            ));
            None
        }
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            match std::fs::read_to_string(&key_path)
                .map_err(anyhow::Error::from)
                .and_then(|t| Ok(Key::from_hex(&t)?))
            {
                Err(e) => {
                    out.push(fail("key", format!("{} is unreadable or malformed: {e:#}", key_path.display()), "restore it from a backup, or `rlclaw key rotate` (then `rlclaw plugin install`)"));
                    None
                }
                Ok(k) if mode != 0o600 => {
                    out.push(fail(
                        "key",
                        format!("{} has mode {mode:o}", key_path.display()),
                        format!("chmod 600 {}", key_path.display()),
                    ));
                    Some(k)
                }
                Ok(k) => {
                    out.push(ok("key", format!("key id {} (mode 600)", k.id())));
                    Some(k)
                }
            }
        }
    };
    // Config.
    let config = match Config::load(&dir.join(CONFIG_FILE)) {
        Ok(c) => {
            out.push(ok(
                "config",
                format!("{} parses", dir.join(CONFIG_FILE).display()),
            ));
            Some(c)
        }
        Err(e) => {
            out.push(fail(
                "config",
                format!("{e:#}"),
                format!(
                    "fix {} or run `rlclaw init` again",
                    dir.join(CONFIG_FILE).display()
                ),
            ));
            None
        }
    };
    // Model.
    let model = config
        .as_ref()
        .and_then(|c| c.training.model.clone())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(crate::training::demo_model_path);
    if model.exists() {
        out.push(ok("model", model.display().to_string()));
    } else {
        out.push(fail(
            "model",
            format!("{} does not exist: training cannot run", model.display()),
            "run `rlclaw init --model <GGUF file or safetensors folder>`, or fetch the demo model (.ci/fetch-model in a source checkout)",
        ));
    }
    // Disk space.
    match free_bytes(dir) {
        Some(free) if free < 200 << 20 => out.push(fail(
            "disk",
            format!("{} MiB free in {}", free >> 20, dir.display()),
            "free some disk space: ratings and adapters need room",
        )),
        Some(free) if free < 2 << 30 => out.push(warn(
            "disk",
            format!("{} MiB free in {}", free >> 20, dir.display()),
            "adapters take tens of MiB each; keep a few GiB free",
        )),
        Some(free) => out.push(ok(
            "disk",
            format!("{:.1} GiB free", free as f64 / (1u64 << 30) as f64),
        )),
        None => out.push(warn(
            "disk",
            "cannot tell the free space",
            "check with `df -h`",
        )),
    }
    // Bridge.
    // As BridgeArgs::addr, without opening (and so tightening) the data folder.
    let addr = args.bridge.bridge.unwrap_or_else(|| {
        std::fs::read_to_string(dir.join(super::serve::ADDR_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8420)))
    });
    let up = healthz(addr);
    match &up {
        Ok(version) => out.push(ok("bridge", format!("answering at {addr} (version {version})"))),
        Err(e) => out.push(fail("bridge", format!("not answering at {addr}: {e}"), "start it: `rlclaw service install` (or `rlclaw serve`); logs: `journalctl --user -u rlclaw`")),
    }
    if up.is_ok()
        && let Some(key) = &key
    {
        let key = key.clone();
        let proved = runtime().and_then(|rt| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    let mut client = Client::connect(addr, key).await?;
                    client.send(Method::GET, "/v1/status", None).await?.ok()
                })
                .await
                .map_err(|_| anyhow::anyhow!("no answer within 5 s"))?
            })
        });
        match proved {
            Ok(_) => out.push(ok("bridge key", "the bridge proves the key in the data folder (signed /v1/status verifies)")),
            Err(e) => out.push(fail("bridge key", format!("{e:#}"), format!("the process at {addr} does not hold this data folder's key: restart the service (`systemctl --user restart rlclaw`), or point --bridge/--data-dir at the right one"))),
        }
    }
    // Plugin.
    out.extend(plugin_checks(&args.openclaw, key.as_ref(), addr));
    // Service.
    let manager = service::Manager::native();
    let state = service::status(manager);
    let detail = super::service::describe(manager, &state).unwrap_or_default();
    out.push(match state {
        service::State::Running(_) => ok("service", detail),
        service::State::NotInstalled => warn("service", detail, "`rlclaw service install` keeps the bridge running across logins and crashes"),
        service::State::Stopped(_) => fail("service", detail, "`systemctl --user restart rlclaw` (launchd: `launchctl kickstart -k gui/$UID/dev.rlclaw.bridge`), then read its log"),
        service::State::NoManager(_) => warn("service", detail, "run `rlclaw serve` from your own startup script"),
    });
    // Agent hooks (informational).
    for agent in [Agent::ClaudeCode, Agent::Codex] {
        let name = match agent {
            Agent::ClaudeCode => "claude hook",
            Agent::Codex => "codex hook",
        };
        match hooks::installed(agent) {
            Ok(true) => out.push(ok(
                name,
                format!(
                    "the Stop hook is in {}",
                    agent
                        .hooks_file()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            )),
            Ok(false) => {}
            Err(e) => out.push(warn(
                name,
                format!("{e:#}"),
                format!("fix the file, then `rlclaw hooks install {}`", agent.arg()),
            )),
        }
    }
    out
}

fn plugin_checks(oc: &OpenClawArgs, key: Option<&Key>, addr: SocketAddr) -> Vec<Check> {
    let mut out = Vec::new();
    let bin = openclaw::find_openclaw(oc.openclaw.as_deref());
    let config = match openclaw::config_path(oc.openclaw_config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            return vec![warn(
                "plugin",
                format!("{e:#}"),
                "set HOME or pass --openclaw-config",
            )];
        }
    };
    let id = openclaw::plugin_dir(oc.plugin_dir.as_deref())
        .and_then(|d| openclaw::plugin_id(&d))
        .unwrap_or_else(|_| "rlclaw".to_owned());
    let entry = match openclaw::entry(&config, &id) {
        Ok(e) => e,
        Err(e) => {
            return vec![fail(
                "plugin",
                format!("{e:#}"),
                "fix OpenClaw's config file",
            )];
        }
    };
    let Some(entry) = entry else {
        if bin.is_none() {
            out.push(warn("plugin", "OpenClaw is not installed, so chat ratings are off (terminal and agent hooks still work)", "install OpenClaw, then `rlclaw plugin install`"));
        } else {
            out.push(fail(
                "plugin",
                format!("no plugin entry {id} in {}", config.display()),
                "run `rlclaw plugin install`",
            ));
        }
        return out;
    };
    if entry["enabled"] == false {
        out.push(fail(
            "plugin",
            format!("{id} is disabled in {}", config.display()),
            format!("openclaw plugins enable {id}"),
        ));
    } else {
        out.push(ok(
            "plugin",
            format!("{id} is configured in {}", config.display()),
        ));
    }
    let configured = entry["config"]["key"].as_str().unwrap_or_default();
    match (Key::from_hex(configured), key) {
        (Ok(theirs), Some(ours)) if theirs.id() == ours.id() => out.push(ok(
            "plugin key",
            format!("matches the bridge's (key id {})", ours.id()),
        )),
        (Ok(theirs), Some(ours)) => out.push(fail(
            "plugin key",
            format!(
                "the plugin has key id {}, the bridge {}: every rating would be refused",
                theirs.id(),
                ours.id()
            ),
            "run `rlclaw plugin install` to write the current key, then restart the gateway",
        )),
        (Err(_), _) => out.push(fail(
            "plugin key",
            "the plugin config has no valid key",
            "run `rlclaw plugin install`",
        )),
        (Ok(_), None) => {}
    }
    let url = entry["config"]["bridgeUrl"]
        .as_str()
        .unwrap_or("http://127.0.0.1:8420");
    let want = format!("http://{addr}");
    if url.trim_end_matches('/') != want {
        out.push(fail(
            "plugin url",
            format!("the plugin sends to {url}, the bridge listens at {want}"),
            "run `rlclaw plugin install` to write the bridge's address",
        ));
    }
    if let Some(bin) = bin {
        match openclaw::reported_status(&bin, &config, &id) {
            Ok(state) if state == "loaded" || state == "enabled" => out.push(ok("openclaw", format!("OpenClaw reports {id} {state}"))),
            Ok(state) => out.push(fail("openclaw", format!("OpenClaw reports {id} {state}"), format!("see `openclaw plugins inspect {id}`; is the plugin built (npm run build in its folder)?"))),
            Err(e) => out.push(warn("openclaw", format!("could not ask OpenClaw: {e:#}"), "run `openclaw plugins list` yourself")),
        }
    }
    out
}

/// `GET /healthz`: the bridge's version, or why not.
fn healthz(addr: SocketAddr) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    stream
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    let _ = stream.take(64 * 1024).read_to_string(&mut text);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "unexpected answer: {}",
            text.lines().next().unwrap_or("(nothing)")
        ));
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(body.trim())
        .map_err(|_| "the /healthz body is not JSON: not an rlclaw bridge".to_owned())?;
    if value["ok"] != true {
        return Err("the /healthz answer is not an rlclaw bridge's".into());
    }
    Ok(value["version"].as_str().unwrap_or("?").to_owned())
}

/// Free bytes for an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}
