//! The OpenClaw plugin (plugin/openclaw/) in the person's OpenClaw: linked with
//! `openclaw plugins install --link <dir> --force --accept-capabilities`, then configured by
//! editing OpenClaw's config file (`plugins.entries.<id>.config`), so the key never appears on
//! a command line.
//!
//! Where the plugin folder is found, first match wins:
//! 1. `--plugin-dir DIR`;
//! 2. `$RLCLAW_PLUGIN_DIR`;
//! 3. `<prefix>/share/rlclaw/plugin/openclaw` for a binary installed as `<prefix>/bin/rlclaw`
//!    (where a release archive puts it);
//! 4. `plugin/openclaw` of the source checkout this binary was built from.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use super::files;

/// OpenClaw's config file: `--openclaw-config`, else `$OPENCLAW_CONFIG_PATH`, else
/// `$OPENCLAW_STATE_DIR/openclaw.json`, else `~/.openclaw/openclaw.json`.
pub fn config_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("OPENCLAW_CONFIG_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("OPENCLAW_STATE_DIR").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(dir).join("openclaw.json"));
    }
    Ok(super::home()?.join(".openclaw").join("openclaw.json"))
}

/// The `openclaw` executable: `--openclaw BIN`, else the first on `PATH`.
pub fn find_openclaw(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(bin) = explicit {
        return Some(bin.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("openclaw"))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn is_plugin_dir(dir: &Path) -> bool {
    dir.join("openclaw.plugin.json").is_file() && dir.join("package.json").is_file()
}

/// The plugin folder to link (see the module comment for the search order).
pub fn plugin_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = explicit {
        candidates.push(dir.to_path_buf());
    } else {
        if let Some(dir) = std::env::var_os("RLCLAW_PLUGIN_DIR").filter(|p| !p.is_empty()) {
            candidates.push(PathBuf::from(dir));
        }
        if let Ok(bin) = super::current_bin()
            && let Some(prefix) = bin.parent().and_then(Path::parent)
        {
            candidates.push(prefix.join("share/rlclaw/plugin/openclaw"));
        }
        candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin/openclaw"));
    }
    for dir in candidates {
        if is_plugin_dir(&dir) {
            return Ok(dir.canonicalize().unwrap_or(dir));
        }
        tried.push(dir.display().to_string());
    }
    bail!(
        "cannot find the OpenClaw plugin folder (tried {}); pass --plugin-dir or set \
         RLCLAW_PLUGIN_DIR to the folder that holds openclaw.plugin.json",
        tried.join(", ")
    )
}

/// The plugin's id from its manifest.
pub fn plugin_id(dir: &Path) -> Result<String> {
    let path = dir.join("openclaw.plugin.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    match manifest["id"].as_str() {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => bail!("{} has no \"id\"", path.display()),
    }
}

/// Whether the plugin's generated component glue is there (a source checkout builds it with
/// `npm run build` in plugin/openclaw).
pub fn plugin_built(dir: &Path) -> bool {
    dir.join("generated").join("rlclaw.js").is_file()
}

/// What rlclaw writes into `plugins.entries.<id>.config`; `None` keeps what is there.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub bridge_url: String,
    pub key_hex: String,
    pub feedback_mode: Option<String>,
    pub raters: Option<Vec<String>>,
    pub emoji_preset: Option<String>,
}

pub const FEEDBACK_MODES: [&str; 3] = [
    "slash_only",
    "slash_and_reactions",
    "slash_reactions_prompt",
];
pub const EMOJI_PRESETS: [&str; 2] = ["binary", "agent-lightning"];

/// The plugin's entry (`plugins.entries.<id>`) in OpenClaw's config, if any.
pub fn entry(config: &Path, id: &str) -> Result<Option<Value>> {
    let Some(root) = files::read_json_object(config)? else {
        return Ok(None);
    };
    Ok(root
        .get("plugins")
        .and_then(|p| p.get("entries"))
        .and_then(|e| e.get(id))
        .cloned())
}

/// Whether `plugins.load.paths` holds this folder.
pub fn is_linked(config: &Path, dir: &Path) -> Result<bool> {
    let Some(root) = files::read_json_object(config)? else {
        return Ok(false);
    };
    let paths = root
        .get("plugins")
        .and_then(|p| p.get("load"))
        .and_then(|l| l.get("paths"))
        .and_then(Value::as_array);
    Ok(paths.is_some_and(|paths| {
        paths.iter().filter_map(Value::as_str).any(|p| {
            let p = Path::new(p);
            p == dir || p.canonicalize().ok().as_deref() == Some(dir)
        })
    }))
}

fn object<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    file: &Path,
) -> Result<&'a mut Map<String, Value>> {
    let value = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    value.as_object_mut().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: \"{key}\" is not an object; changed nothing",
            file.display()
        )
    })
}

/// Merges the plugin's entry and config into OpenClaw's config file, keeping every other key.
/// Returns whether the file changed.
pub fn write_config(config: &Path, id: &str, settings: &Settings) -> Result<bool> {
    let before = files::read_json_object(config)?;
    let mut root = before.clone().unwrap_or_default();
    {
        let plugins = object(&mut root, "plugins", config)?;
        let entries = object(plugins, "entries", config)?;
        let entry = object(entries, id, config)?;
        if !entry.contains_key("enabled") {
            entry.insert("enabled".into(), json!(true));
        }
        let cfg = object(entry, "config", config)?;
        cfg.insert("bridgeUrl".into(), json!(settings.bridge_url));
        cfg.insert("key".into(), json!(settings.key_hex));
        if let Some(mode) = &settings.feedback_mode {
            cfg.insert("feedbackMode".into(), json!(mode));
        }
        if let Some(raters) = &settings.raters {
            cfg.insert("raters".into(), json!(raters));
        }
        if let Some(preset) = &settings.emoji_preset {
            cfg.insert("emojiPreset".into(), json!(preset));
        }
    }
    if before.as_ref() == Some(&root) {
        return Ok(false);
    }
    files::backup_once(config)?;
    files::write_json(config, &Value::Object(root), 0o600, true)?;
    Ok(true)
}

/// Removes the plugin's entry and its folder from `plugins.load.paths`; other keys stay.
/// Returns whether the file changed.
pub fn remove_config(config: &Path, id: &str, dir: Option<&Path>) -> Result<bool> {
    let Some(before) = files::read_json_object(config)? else {
        return Ok(false);
    };
    let mut root = before.clone();
    if let Some(plugins) = root.get_mut("plugins").and_then(Value::as_object_mut) {
        if let Some(entries) = plugins.get_mut("entries").and_then(Value::as_object_mut) {
            entries.remove(id);
        }
        if let Some(dir) = dir
            && let Some(paths) = plugins
                .get_mut("load")
                .and_then(|l| l.get_mut("paths"))
                .and_then(Value::as_array_mut)
        {
            paths.retain(|p| {
                p.as_str().is_none_or(|p| {
                    let p = Path::new(p);
                    p != dir && p.canonicalize().ok().as_deref() != Some(dir)
                })
            });
        }
    }
    if root == before {
        return Ok(false);
    }
    files::backup_once(config)?;
    files::write_json(config, &Value::Object(root), 0o600, true)?;
    Ok(true)
}

/// Runs the openclaw CLI with its config pointed at `config`; its output, or an error with it.
pub fn run_openclaw(bin: &Path, config: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("OPENCLAW_CONFIG_PATH", config)
        .env("NO_COLOR", "1");
    super::run_command(cmd, &format!("openclaw {}", args.join(" ")))
}

/// Links the plugin into OpenClaw (unless already linked) and writes its config. Returns lines
/// saying what was done.
pub fn install(bin: &Path, config: &Path, dir: &Path, settings: &Settings) -> Result<Vec<String>> {
    let id = plugin_id(dir)?;
    if !plugin_built(dir) {
        bail!(
            "the plugin in {} is not built (generated/rlclaw.js is missing): run `npm ci && npm \
             run build` there first. Changed nothing",
            dir.display()
        );
    }
    let mut done = Vec::new();
    if is_linked(config, dir)? && entry(config, &id)?.is_some() {
        done.push(format!("plugin {id} already linked from {}", dir.display()));
    } else {
        let dir_text = dir.to_string_lossy();
        run_openclaw(
            bin,
            config,
            &[
                "plugins",
                "install",
                "--link",
                &dir_text,
                "--force",
                "--accept-capabilities",
            ],
        )?;
        done.push(format!(
            "linked plugin {id} from {} into OpenClaw",
            dir.display()
        ));
    }
    if write_config(config, &id, settings)? {
        done.push(format!(
            "wrote plugins.entries.{id}.config (bridge {}, key, feedback mode) in {}",
            settings.bridge_url,
            config.display()
        ));
    } else {
        done.push(format!(
            "plugin config in {} already up to date",
            config.display()
        ));
    }
    Ok(done)
}

/// What OpenClaw itself says about the plugin (`openclaw plugins list --json`): its status,
/// e.g. "loaded", or an error.
pub fn reported_status(bin: &Path, config: &Path, id: &str) -> Result<String> {
    let text = run_openclaw(bin, config, &["plugins", "list", "--json"])?;
    let start = text.find('{').unwrap_or(0);
    let value: Value = serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| anyhow::anyhow!("`openclaw plugins list --json` printed no JSON"))?
        .context("`openclaw plugins list --json` printed malformed JSON")?;
    let plugin = value["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["id"] == id));
    match plugin {
        None => bail!("OpenClaw does not list a plugin {id}"),
        Some(p) => {
            if p["enabled"] == false {
                return Ok("disabled".into());
            }
            Ok(p["status"].as_str().unwrap_or("unknown").to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_merges_keeps_other_keys_and_removes_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("openclaw.json");
        std::fs::write(
            &path,
            r#"{"gateway":{"mode":"local"},"plugins":{"entries":{"other":{"enabled":true},"rlclaw":{"enabled":false,"config":{"contextMessages":4}}},"load":{"paths":["/p/rlclaw"]}}}"#,
        )
        .unwrap();
        let settings = Settings {
            bridge_url: "http://127.0.0.1:8420".into(),
            key_hex: "ab".repeat(32),
            feedback_mode: Some("slash_only".into()),
            ..Settings::default()
        };
        assert!(write_config(&path, "rlclaw", &settings).unwrap());
        assert!(!write_config(&path, "rlclaw", &settings).unwrap());
        let root: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(root["gateway"]["mode"], "local");
        assert_eq!(root["plugins"]["entries"]["other"]["enabled"], true);
        let entry = &root["plugins"]["entries"]["rlclaw"];
        assert_eq!(
            entry["enabled"], false,
            "a person's choice to disable stays"
        );
        assert_eq!(entry["config"]["contextMessages"], 4);
        assert_eq!(entry["config"]["feedbackMode"], "slash_only");
        assert_eq!(files::mode_of(&path), Some(0o600));
        assert!(remove_config(&path, "rlclaw", Some(Path::new("/p/rlclaw"))).unwrap());
        let root: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(root["plugins"]["entries"].get("rlclaw").is_none());
        assert_eq!(root["plugins"]["load"]["paths"], json!([]));
        assert_eq!(root["plugins"]["entries"]["other"]["enabled"], true);
    }
}
