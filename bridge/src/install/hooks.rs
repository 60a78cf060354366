//! Claude Code and Codex Stop hooks: entries in `~/.claude/settings.json` and
//! `~/.codex/hooks.json` (plus `[features] codex_hooks = true` in `~/.codex/config.toml`) that
//! run `rlclaw hook claude-code|codex` when the agent finishes a turn.
//!
//! Entries are merged into what is there: other hooks and other keys are kept, a second install
//! changes nothing, and rlclaw's own entry is recognised by its command (`... hook <agent>`
//! run by an executable named rlclaw), so no marker key is added that the agents' schemas
//! might refuse.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use super::files;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    /// Claude Code (terminal and desktop): ~/.claude/settings.json.
    ClaudeCode,
    /// Codex CLI and desktop: ~/.codex/hooks.json and config.toml.
    Codex,
}

/// Seconds the agent waits for the hook before giving up on it.
pub const HOOK_TIMEOUT_S: u64 = 30;

impl Agent {
    pub fn arg(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "claude-code",
            Agent::Codex => "codex",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "Claude Code",
            Agent::Codex => "Codex",
        }
    }

    /// The agent's own folder: `$CLAUDE_CONFIG_DIR` or `~/.claude`; `$CODEX_HOME` or `~/.codex`.
    pub fn home(self) -> Result<PathBuf> {
        let (var, default) = match self {
            Agent::ClaudeCode => ("CLAUDE_CONFIG_DIR", ".claude"),
            Agent::Codex => ("CODEX_HOME", ".codex"),
        };
        if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        Ok(super::home()?.join(default))
    }

    /// The JSON file that holds the hook entries.
    pub fn hooks_file(self) -> Result<PathBuf> {
        Ok(match self {
            Agent::ClaudeCode => self.home()?.join("settings.json"),
            Agent::Codex => self.home()?.join("hooks.json"),
        })
    }
}

/// The command the hook entry runs.
pub fn hook_command(bin: &Path, agent: Agent, data_dir: &Path) -> String {
    format!(
        "{} hook {} --data-dir {}",
        files::shell_quote(&bin.to_string_lossy()),
        agent.arg(),
        files::shell_quote(&data_dir.to_string_lossy())
    )
}

/// Whether a hook command is rlclaw's for this agent.
pub fn is_ours(command: &str, agent: Agent) -> bool {
    let Some(first) = command.split_whitespace().next() else {
        return false;
    };
    let exe = first.trim_matches(|c| c == '\'' || c == '"');
    let named_rlclaw = Path::new(exe).file_name().and_then(|n| n.to_str()) == Some("rlclaw")
        || exe.ends_with("/rlclaw");
    named_rlclaw && command.contains(&format!(" hook {}", agent.arg()))
}

fn stop_groups<'a>(root: &'a mut Map<String, Value>, file: &Path) -> Result<&'a mut Vec<Value>> {
    let hooks = root.entry("hooks").or_insert_with(|| json!({}));
    let hooks = hooks.as_object_mut().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: \"hooks\" is not an object; changed nothing",
            file.display()
        )
    })?;
    let stop = hooks.entry("Stop").or_insert_with(|| json!([]));
    stop.as_array_mut().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: \"hooks.Stop\" is not a list; changed nothing",
            file.display()
        )
    })
}

/// Puts rlclaw's Stop hook into a settings object; returns whether anything changed.
pub fn merge_stop_hook(
    root: &mut Map<String, Value>,
    agent: Agent,
    command: &str,
    file: &Path,
) -> Result<bool> {
    let groups = stop_groups(root, file)?;
    let wanted = json!({"type": "command", "command": command, "timeout": HOOK_TIMEOUT_S});
    let mut found = false;
    let mut changed = false;
    for group in groups.iter_mut() {
        let Some(handlers) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            continue;
        };
        let mut keep = Vec::with_capacity(handlers.len());
        for handler in handlers.drain(..) {
            let ours = handler["command"]
                .as_str()
                .is_some_and(|c| is_ours(c, agent));
            if !ours {
                keep.push(handler);
            } else if !found {
                found = true;
                if handler != wanted {
                    changed = true;
                }
                keep.push(wanted.clone());
            } else {
                changed = true; // a duplicate of ours
            }
        }
        *handlers = keep;
    }
    if !found {
        groups.push(json!({"hooks": [wanted]}));
        changed = true;
    }
    // Groups left empty by removing a duplicate go too.
    let before = groups.len();
    groups.retain(|g| {
        g.get("hooks")
            .and_then(Value::as_array)
            .is_none_or(|h| !h.is_empty())
    });
    Ok(changed || groups.len() != before)
}

/// Takes rlclaw's Stop hook out of a settings object; returns whether anything changed.
pub fn remove_stop_hook(root: &mut Map<String, Value>, agent: Agent) -> bool {
    let Some(hooks) = root.get_mut("hooks").and_then(Value::as_object_mut) else {
        return false;
    };
    let Some(groups) = hooks.get_mut("Stop").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut changed = false;
    groups.retain_mut(|group| {
        let Some(handlers) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            return true;
        };
        let before = handlers.len();
        handlers.retain(|h| !h["command"].as_str().is_some_and(|c| is_ours(c, agent)));
        if handlers.len() != before {
            changed = true;
            return !handlers.is_empty();
        }
        true
    });
    if changed && groups.is_empty() {
        hooks.remove("Stop");
    }
    changed
}

/// Whether rlclaw's hook is installed for this agent.
pub fn installed(agent: Agent) -> Result<bool> {
    let file = agent.hooks_file()?;
    let Some(root) = files::read_json_object(&file)? else {
        return Ok(false);
    };
    Ok(root["hooks"]["Stop"].as_array().is_some_and(|groups| {
        groups.iter().any(|g| {
            g["hooks"].as_array().is_some_and(|hs| {
                hs.iter()
                    .any(|h| h["command"].as_str().is_some_and(|c| is_ours(c, agent)))
            })
        })
    }))
}

/// Installs the hook; lines saying what was done.
pub fn install(agent: Agent, bin: &Path, data_dir: &Path) -> Result<Vec<String>> {
    let file = agent.hooks_file()?;
    let before = files::read_json_object(&file)?;
    let mut root = before.clone().unwrap_or_default();
    let command = hook_command(bin, agent, data_dir);
    let mut done = Vec::new();
    if merge_stop_hook(&mut root, agent, &command, &file)? {
        files::backup_once(&file)?;
        files::write_json(&file, &Value::Object(root), 0o600, false)?;
        done.push(format!("added the Stop hook to {}", file.display()));
    } else {
        done.push(format!(
            "the Stop hook in {} is already there",
            file.display()
        ));
    }
    if agent == Agent::Codex {
        let config = agent.home()?.join("config.toml");
        if enable_codex_hooks(&config)? {
            done.push(format!(
                "set [features] codex_hooks = true in {}",
                config.display()
            ));
        }
    }
    Ok(done)
}

/// Removes the hook; lines saying what was done.
pub fn uninstall(agent: Agent) -> Result<Vec<String>> {
    let file = agent.hooks_file()?;
    let Some(before) = files::read_json_object(&file)? else {
        return Ok(vec![format!("no {} to change", file.display())]);
    };
    let mut root = before.clone();
    if remove_stop_hook(&mut root, agent) {
        files::backup_once(&file)?;
        files::write_json(&file, &Value::Object(root), 0o600, false)?;
        let mut done = vec![format!("removed the Stop hook from {}", file.display())];
        if agent == Agent::Codex {
            done.push(
                "left [features] codex_hooks in ~/.codex/config.toml as it is (other hooks may \
                 need it)"
                    .into(),
            );
        }
        Ok(done)
    } else {
        Ok(vec![format!("no rlclaw hook in {}", file.display())])
    }
}

/// Sets `[features] codex_hooks = true` unless hooks are already on; keeps comments and
/// formatting. Returns whether the file changed. Refuses to override `hooks = false`.
pub fn enable_codex_hooks(config: &Path) -> Result<bool> {
    let text = match std::fs::read_to_string(config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", config.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML; changed nothing", config.display()))?;
    let features = doc
        .entry("features")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()));
    let Some(features) = features.as_table_like_mut() else {
        bail!(
            "{}: features is not a table; changed nothing",
            config.display()
        );
    };
    let get = |t: &dyn toml_edit::TableLike, k: &str| t.get(k).and_then(|v| v.as_bool());
    if get(features, "hooks") == Some(false) {
        bail!(
            "{} turns Codex hooks off ([features] hooks = false); rlclaw leaves that choice to \
             you. Changed nothing",
            config.display()
        );
    }
    if get(features, "codex_hooks") == Some(true) || get(features, "hooks") == Some(true) {
        return Ok(false);
    }
    features.insert("codex_hooks", toml_edit::value(true));
    files::backup_once(config)?;
    let mode = files::mode_of(&files::real_path(config)).unwrap_or(0o600);
    files::atomic_write(config, doc.to_string().as_bytes(), mode)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_other_hooks_is_idempotent_and_replaces_a_moved_binary() {
        let mut root: Map<String, Value> = serde_json::from_value(json!({
            "model": "opus",
            "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
                      "PreToolUse": [{"matcher": "Bash", "hooks": []}]}
        }))
        .unwrap();
        let f = Path::new("settings.json");
        let cmd = hook_command(
            Path::new("/usr/bin/rlclaw"),
            Agent::ClaudeCode,
            Path::new("/d"),
        );
        assert!(merge_stop_hook(&mut root, Agent::ClaudeCode, &cmd, f).unwrap());
        assert!(!merge_stop_hook(&mut root, Agent::ClaudeCode, &cmd, f).unwrap());
        let moved = hook_command(Path::new("/opt/rlclaw"), Agent::ClaudeCode, Path::new("/d"));
        assert!(merge_stop_hook(&mut root, Agent::ClaudeCode, &moved, f).unwrap());
        let stop = root["hooks"]["Stop"].as_array().unwrap();
        assert_eq!(stop.len(), 2);
        assert_eq!(stop[0]["hooks"][0]["command"], "notify-send done");
        assert_eq!(stop[1]["hooks"][0]["command"], moved.as_str());
        assert_eq!(root["model"], "opus");
        assert!(remove_stop_hook(&mut root, Agent::ClaudeCode));
        assert_eq!(root["hooks"]["Stop"].as_array().unwrap().len(), 1);
        assert!(!remove_stop_hook(&mut root, Agent::ClaudeCode));
    }

    #[test]
    fn codex_feature_is_set_once_keeping_comments_and_hooks_off_is_respected() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.toml");
        std::fs::write(&path, "# mine\nmodel = \"o3\"\n").unwrap();
        assert!(enable_codex_hooks(&path).unwrap());
        assert!(!enable_codex_hooks(&path).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine\nmodel = \"o3\"\n"), "{text}");
        assert!(text.contains("[features]\ncodex_hooks = true"), "{text}");
        std::fs::write(&path, "[features]\nhooks = false\n").unwrap();
        assert!(enable_codex_hooks(&path).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[features]\nhooks = false\n"
        );
    }
}
