//! `rlclaw plugin install|uninstall|status`: the OpenClaw plugin (plugin/openclaw/) and its
//! config, key included, in the person's OpenClaw. The key is written into OpenClaw's config
//! file, never passed on a command line.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::{BridgeArgs, existing};
use crate::datadir::DataDir;
use crate::install::openclaw::{self, Settings};

/// Where OpenClaw and the plugin are.
#[derive(clap::Args, Clone, Default)]
pub struct OpenClawArgs {
    /// The openclaw executable (default: the first `openclaw` on PATH).
    #[arg(long, value_name = "BIN")]
    pub openclaw: Option<PathBuf>,
    /// OpenClaw's config file (default: $OPENCLAW_CONFIG_PATH, else ~/.openclaw/openclaw.json).
    #[arg(long, value_name = "FILE")]
    pub openclaw_config: Option<PathBuf>,
    /// The plugin folder to link (default: $RLCLAW_PLUGIN_DIR, <prefix>/share/rlclaw/plugin/openclaw
    /// next to an installed binary, else plugin/openclaw of this source checkout).
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Link the plugin into OpenClaw and write its config (bridge URL, key, feedback mode).
    Install {
        #[command(flatten)]
        openclaw: OpenClawArgs,
        #[command(flatten)]
        choices: PluginChoices,
        #[command(flatten)]
        bridge: BridgeArgs,
    },
    /// Remove the plugin's entry (and its config, key included) from OpenClaw's config.
    Uninstall {
        #[command(flatten)]
        openclaw: OpenClawArgs,
    },
    /// Whether the plugin is installed and its key matches this bridge's.
    Status {
        #[command(flatten)]
        openclaw: OpenClawArgs,
    },
}

/// The plugin settings a person chooses (unset: keep what the config has).
#[derive(clap::Args, Clone, Default)]
pub struct PluginChoices {
    /// slash_only | slash_and_reactions | slash_reactions_prompt.
    #[arg(long, value_name = "MODE", value_parser = clap::builder::PossibleValuesParser::new(openclaw::FEEDBACK_MODES))]
    pub feedback_mode: Option<String>,
    /// binary | agent-lightning: how emoji reactions map to rewards.
    #[arg(long, value_name = "PRESET", value_parser = clap::builder::PossibleValuesParser::new(openclaw::EMOJI_PRESETS))]
    pub emoji_preset: Option<String>,
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    match args.action {
        Action::Install {
            openclaw: oc,
            choices,
            bridge,
        } => {
            let data = existing(dir)?;
            let settings = Settings {
                bridge_url: format!("http://{}", bridge.addr(&data)),
                key_hex: data.load_key()?.to_hex(),
                feedback_mode: choices.feedback_mode,
                raters: None,
                emoji_preset: choices.emoji_preset,
            };
            for line in install(&oc, &settings)? {
                println!("{line}");
            }
            println!(
                "Restart the OpenClaw gateway (or run `openclaw plugins reload rlclaw`) to load it."
            );
            Ok(())
        }
        Action::Uninstall { openclaw: oc } => {
            for line in uninstall(&oc)? {
                println!("{line}");
            }
            Ok(())
        }
        Action::Status { openclaw: oc } => {
            let data = DataDir::open(dir)?;
            let (ok, lines) = status(&data, &oc)?;
            for line in lines {
                println!("{line}");
            }
            if !ok {
                bail!("the plugin is not ready (see above)");
            }
            Ok(())
        }
    }
}

/// Installs the plugin; lines saying what was done. Errors when openclaw is missing.
pub fn install(oc: &OpenClawArgs, settings: &Settings) -> Result<Vec<String>> {
    let Some(bin) = openclaw::find_openclaw(oc.openclaw.as_deref()) else {
        bail!(
            "openclaw is not installed (no `openclaw` on PATH; pass --openclaw BIN). Changed nothing"
        );
    };
    let config = openclaw::config_path(oc.openclaw_config.as_deref())?;
    let plugin_dir = openclaw::plugin_dir(oc.plugin_dir.as_deref())?;
    openclaw::install(&bin, &config, &plugin_dir, settings)
}

/// Removes the plugin entry; lines saying what was done.
pub fn uninstall(oc: &OpenClawArgs) -> Result<Vec<String>> {
    let config = openclaw::config_path(oc.openclaw_config.as_deref())?;
    let plugin_dir = openclaw::plugin_dir(oc.plugin_dir.as_deref()).ok();
    let id = match &plugin_dir {
        Some(dir) => openclaw::plugin_id(dir)?,
        None => "rlclaw".to_owned(),
    };
    let mut done = Vec::new();
    if let Some(bin) = openclaw::find_openclaw(oc.openclaw.as_deref())
        && openclaw::entry(&config, &id)?.is_some()
    {
        // OpenClaw drops its own install record; a failure here is not fatal, the config
        // edit below removes what matters.
        match openclaw::run_openclaw(&bin, &config, &["plugins", "uninstall", &id, "--force"]) {
            Ok(_) => done.push(format!("openclaw plugins uninstall {id}: done")),
            Err(e) => done.push(format!("openclaw plugins uninstall {id}: {e:#}")),
        }
    }
    if openclaw::remove_config(&config, &id, plugin_dir.as_deref())? {
        done.push(format!(
            "removed plugins.entries.{id} from {}",
            config.display()
        ));
    } else {
        done.push(format!("no plugin entry {id} in {}", config.display()));
    }
    Ok(done)
}

/// The plugin's state against this data folder's key: (ready, lines).
pub fn status(data: &DataDir, oc: &OpenClawArgs) -> Result<(bool, Vec<String>)> {
    let config = openclaw::config_path(oc.openclaw_config.as_deref())?;
    let id = openclaw::plugin_dir(oc.plugin_dir.as_deref())
        .and_then(|d| openclaw::plugin_id(&d))
        .unwrap_or_else(|_| "rlclaw".to_owned());
    let mut lines = Vec::new();
    let Some(entry) = openclaw::entry(&config, &id)? else {
        lines.push(format!(
            "no plugin entry {id} in {}: run `rlclaw plugin install`",
            config.display()
        ));
        return Ok((false, lines));
    };
    let mut ok = true;
    if entry["enabled"] == false {
        ok = false;
        lines.push(format!(
            "the plugin is disabled in {}: run `openclaw plugins enable {id}`",
            config.display()
        ));
    }
    let configured = entry["config"]["key"].as_str().unwrap_or_default();
    match (crate::keys::Key::from_hex(configured), data.load_key()) {
        (Ok(theirs), Ok(ours)) if theirs.id() == ours.id() => {
            lines.push(format!(
                "the plugin's key matches the bridge's (key id {})",
                ours.id()
            ));
        }
        (Ok(theirs), Ok(ours)) => {
            ok = false;
            lines.push(format!(
                "the plugin's key (id {}) is not the bridge's (id {}): run `rlclaw plugin install` to write the current key",
                theirs.id(),
                ours.id()
            ));
        }
        (Err(_), _) => {
            ok = false;
            lines.push("the plugin has no valid key: run `rlclaw plugin install`".into());
        }
        (_, Err(e)) => {
            ok = false;
            lines.push(format!("the bridge has no key: {e:#}"));
        }
    }
    if let Some(bin) = openclaw::find_openclaw(oc.openclaw.as_deref()) {
        match openclaw::reported_status(&bin, &config, &id) {
            Ok(state) if state == "loaded" || state == "enabled" => {
                lines.push(format!("OpenClaw reports the plugin {state}"));
            }
            Ok(state) => {
                ok = false;
                lines.push(format!(
                    "OpenClaw reports the plugin {state}: see `openclaw plugins inspect {id}`"
                ));
            }
            Err(e) => lines.push(format!("could not ask OpenClaw about the plugin: {e:#}")),
        }
    }
    Ok((ok, lines))
}
