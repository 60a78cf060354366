//! `rlclaw init`: from nothing to rating in one command. Generates the key, writes config.toml,
//! installs the OpenClaw plugin with its config and the service, and says what it did and how to
//! undo it. Running it again changes only what differs; the database is never touched.
//!
//! With a terminal on stdin (and no `--yes`) it asks each question, offering the flags' values
//! or the current settings as defaults; otherwise the flags alone decide.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::BridgeArgs;
use super::plugin::OpenClawArgs;
use crate::config::Config;
use crate::datadir::{self, CONFIG_FILE, DataDir};
use crate::install::hooks::Agent;
use crate::install::openclaw::{self, FEEDBACK_MODES, Settings};
use crate::install::service;

pub const PRESETS: [&str; 3] = ["careful", "balanced", "aggressive"];

#[derive(clap::Args)]
pub struct Args {
    /// The base model: a GGUF file or a Hugging Face safetensors folder (default: the demo
    /// SmolLM2-135M-Instruct).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// How boldly training changes the model.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    preset: Option<String>,
    /// How people rate in chat: slash_only (/rl), slash_and_reactions (also 👍/👎),
    /// slash_reactions_prompt (also buttons under each reply).
    #[arg(long, value_name = "MODE", value_parser = clap::builder::PossibleValuesParser::new(FEEDBACK_MODES))]
    feedback_mode: Option<String>,
    /// A sender id that may run admin commands (/rl train, rollback, reset...); repeat for more.
    /// Given at all, the list replaces the current one.
    #[arg(long = "admin", value_name = "ID")]
    admins: Vec<String>,
    /// A sender id that may rate anyone's turns (groups); repeat for more. Replaces the list.
    #[arg(long = "rater", value_name = "ID")]
    raters: Vec<String>,
    /// Also install the Stop hook for this coding agent; repeat for both.
    #[arg(long = "hooks", value_enum, value_name = "AGENT")]
    hooks: Vec<Agent>,
    /// Do not install or start the service.
    #[arg(long)]
    no_service: bool,
    /// Do not install the OpenClaw plugin.
    #[arg(long)]
    no_plugin: bool,
    /// Ask nothing: use the flags and the current settings.
    #[arg(long, short)]
    yes: bool,
    #[command(flatten)]
    openclaw: OpenClawArgs,
    #[command(flatten)]
    bridge: BridgeArgs,
}

/// What init will apply, after flags, current settings and answers.
struct Plan {
    model: PathBuf,
    preset: String,
    feedback_mode: Option<String>,
    admins: Option<Vec<String>>,
    raters: Option<Vec<String>>,
    plugin: bool,
    service: bool,
}

/// Checks a model path: a GGUF file or a folder with config.json and safetensors.
pub fn check_model(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("the model {} does not exist", path.display()))?;
    if meta.is_file() {
        let gguf = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if !gguf {
            bail!(
                "the model {} is neither a .gguf file nor a safetensors folder",
                path.display()
            );
        }
        return Ok(());
    }
    let has_safetensors = std::fs::read_dir(path)?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
    if !path.join("config.json").is_file() || !has_safetensors {
        bail!(
            "the model folder {} needs config.json and *.safetensors (a Hugging Face model folder)",
            path.display()
        );
    }
    Ok(())
}

fn check_id(kind: &str, id: &str) -> Result<String> {
    let id = id.trim();
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        bail!("{kind} {id:?} is not a sender id (1 to 256 characters, no control characters)");
    }
    Ok(id.to_owned())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    super::service::absolute(path)
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = absolute(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let current = Config::load(&config_path)
        .with_context(|| "fix it or move it away; changed nothing".to_owned())?;
    let oc_config = openclaw::config_path(args.openclaw.openclaw_config.as_deref())?;
    let current_mode = openclaw::entry(&oc_config, "rlclaw")
        .ok()
        .flatten()
        .and_then(|e| e["config"]["feedbackMode"].as_str().map(str::to_owned));
    let default_model = current
        .training
        .model
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(crate::training::demo_model_path);
    let mut plan = Plan {
        model: args
            .model
            .clone()
            .map(|m| absolute(&m))
            .transpose()?
            .unwrap_or(default_model),
        preset: args
            .preset
            .clone()
            .unwrap_or_else(|| current.training.preset.clone()),
        feedback_mode: args.feedback_mode.clone(),
        admins: (!args.admins.is_empty())
            .then(|| {
                args.admins
                    .iter()
                    .map(|a| check_id("admin", a))
                    .collect::<Result<_>>()
            })
            .transpose()?,
        raters: (!args.raters.is_empty())
            .then(|| {
                args.raters
                    .iter()
                    .map(|r| check_id("rater", r))
                    .collect::<Result<_>>()
            })
            .transpose()?,
        plugin: !args.no_plugin,
        service: !args.no_service,
    };
    let interactive = std::io::stdin().is_terminal() && !args.yes;
    if interactive {
        wizard(&mut plan, &current, current_mode.as_deref())?;
    }
    // Validate everything before changing anything.
    let demo = plan.model == crate::training::demo_model_path();
    let mut notes = Vec::new();
    if let Err(e) = check_model(&plan.model) {
        if demo && !plan.model.exists() {
            notes.push(format!(
                "the demo model is not at {} yet: training waits for it (a source checkout fetches it with .ci/fetch-model; or run `rlclaw init --model <path>`)",
                plan.model.display()
            ));
        } else {
            return Err(e.context("changed nothing"));
        }
    }
    if !PRESETS.contains(&plan.preset.as_str()) {
        bail!(
            "the preset must be one of {}; changed nothing",
            PRESETS.join(", ")
        );
    }
    let new_config = merged_config(&config_path, &plan)?;

    let mut done = Vec::new();
    let mut problems = Vec::new();
    let data = DataDir::open(&dir)?;
    let had_key = data.path(datadir::KEY_FILE).exists();
    let key = data.load_or_create_key()?;
    done.push(if had_key {
        format!(
            "kept the key in {} (key id {})",
            data.path(datadir::KEY_FILE).display(),
            key.id()
        )
    } else {
        format!(
            "created the key {} (key id {})",
            data.path(datadir::KEY_FILE).display(),
            key.id()
        )
    });
    let config_changed = match &new_config {
        Some(text) => {
            datadir::write_private(&config_path, text.as_bytes())?;
            done.push(format!("wrote {}", config_path.display()));
            true
        }
        None => {
            done.push(format!(
                "{} already says this; unchanged",
                config_path.display()
            ));
            false
        }
    };

    if plan.plugin {
        let settings = Settings {
            bridge_url: format!("http://{}", args.bridge.addr(&data)),
            key_hex: key.to_hex(),
            feedback_mode: plan.feedback_mode.clone().or_else(|| {
                current_mode
                    .is_none()
                    .then(|| "slash_and_reactions".to_owned())
            }),
            raters: plan.raters.clone(),
            emoji_preset: None,
        };
        if openclaw::find_openclaw(args.openclaw.openclaw.as_deref()).is_none() {
            notes.push("OpenClaw is not installed (no `openclaw` on PATH): skipped the plugin; run `rlclaw plugin install` once it is".into());
        } else {
            match super::plugin::install(&args.openclaw, &settings) {
                Ok(lines) => done.extend(lines),
                Err(e) => problems.push(format!("the OpenClaw plugin: {e:#}")),
            }
        }
    } else {
        notes.push("skipped the OpenClaw plugin (--no-plugin)".into());
    }

    for agent in &args.hooks {
        match super::hooks::install_agent(&dir, *agent) {
            Ok(lines) => done.extend(lines),
            Err(e) => problems.push(format!("the {} hook: {e:#}", agent.label())),
        }
    }

    if plan.service {
        let manager = service::Manager::native();
        let unit_before = std::fs::read_to_string(manager.unit_path()?).ok();
        let mut out = Vec::new();
        match super::service::install_service(&dir, false, &mut out) {
            Ok(()) => {
                done.push(String::from_utf8_lossy(&out).trim().to_owned());
                let unit_after = std::fs::read_to_string(manager.unit_path()?).ok();
                if config_changed && unit_before == unit_after {
                    match service::restart_if_running(manager) {
                        Ok(true) => done.push("restarted the service to read the new config".into()),
                        Ok(false) => {}
                        Err(e) => problems.push(format!("restarting the service: {e:#}")),
                    }
                }
            }
            Err(e) => notes.push(format!(
                "did not install the service: {e:#}. Start the bridge yourself: rlclaw serve --data-dir {}",
                dir.display()
            )),
        }
    } else {
        notes.push(format!(
            "skipped the service (--no-service); start the bridge with: rlclaw serve --data-dir {}",
            dir.display()
        ));
    }

    println!("rlclaw init:");
    for line in &done {
        println!("  ✓ {line}");
    }
    for line in &notes {
        println!("  · {line}");
    }
    for line in &problems {
        println!("  ✗ {line}");
    }
    println!();
    println!(
        "Check everything with `rlclaw doctor`. Rate in chat with /rl good or /rl bad, or here with `rlclaw good|bad`."
    );
    println!(
        "To undo: `rlclaw uninstall` removes the service and the plugin entry and keeps your data ({}); `rlclaw uninstall --purge` deletes it too.",
        dir.display()
    );
    if !problems.is_empty() {
        bail!(
            "{} step(s) failed (see ✗ above); run `rlclaw init` again once fixed",
            problems.len()
        );
    }
    Ok(())
}

/// config.toml with the plan merged in (comments and other keys kept), or `None` when nothing
/// changes. Errors when the existing file is not valid TOML or the result would not load.
fn merged_config(path: &Path, plan: &Plan) -> Result<Option<String>> {
    let before = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = before
        .parse()
        .with_context(|| format!("{} is not valid TOML; changed nothing", path.display()))?;
    let list = |items: &[String]| {
        let mut a = toml_edit::Array::new();
        for i in items {
            a.push(i.as_str());
        }
        toml_edit::value(a)
    };
    let same_list = |doc: &toml_edit::DocumentMut, key: &str, items: &[String]| {
        doc.get(key).and_then(|v| v.as_array()).is_some_and(|a| {
            a.iter()
                .map(|v| v.as_str())
                .eq(items.iter().map(|s| Some(s.as_str())))
        })
    };
    if let Some(admins) = &plan.admins
        && !same_list(&doc, "admins", admins)
    {
        doc["admins"] = list(admins);
    }
    if let Some(raters) = &plan.raters
        && !same_list(&doc, "raters", raters)
    {
        doc["raters"] = list(raters);
    }
    if doc.get("training").is_none() {
        doc["training"] = toml_edit::table();
    }
    let model = plan.model.to_string_lossy().into_owned();
    let training = doc["training"].as_table_like_mut().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: [training] is not a table; changed nothing",
            path.display()
        )
    })?;
    if training.get("preset").and_then(|v| v.as_str()) != Some(plan.preset.as_str()) {
        training.insert("preset", toml_edit::value(plan.preset.as_str()));
    }
    if training.get("model").and_then(|v| v.as_str()) != Some(model.as_str()) {
        training.insert("model", toml_edit::value(model.as_str()));
    }
    let text = doc.to_string();
    Config::parse(&text).with_context(|| {
        format!(
            "the merged {} would not load; changed nothing",
            path.display()
        )
    })?;
    Ok((text != before).then_some(text))
}

fn ask(question: &str, default: &str) -> Result<String> {
    print!("{question} [{default}]: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("cancelled; changed nothing");
    }
    let line = line.trim();
    Ok(if line.is_empty() {
        default.to_owned()
    } else {
        line.to_owned()
    })
}

fn yes_no(question: &str, default: bool) -> Result<bool> {
    loop {
        let hint = if default { "Y/n" } else { "y/N" };
        let answer = ask(question, hint)?.to_lowercase();
        match answer.as_str() {
            "y/n" => return Ok(default),
            "y" | "yes" => return Ok(true),
            "n" | "no" => return Ok(false),
            _ => println!("  answer y or n"),
        }
    }
}

fn wizard(plan: &mut Plan, current: &Config, current_mode: Option<&str>) -> Result<()> {
    println!("rlclaw setup. Press Enter to keep the value in brackets.\n");
    loop {
        let answer = ask(
            "Model (GGUF file or safetensors folder)",
            &plan.model.to_string_lossy(),
        )?;
        let path = absolute(Path::new(&answer))?;
        match check_model(&path) {
            Ok(()) => {
                plan.model = path;
                break;
            }
            Err(_) if path == crate::training::demo_model_path() => {
                plan.model = path;
                break;
            }
            Err(e) => println!("  {e:#}"),
        }
    }
    loop {
        let answer = ask("Preset (careful, balanced, aggressive)", &plan.preset)?;
        if PRESETS.contains(&answer.as_str()) {
            plan.preset = answer;
            break;
        }
        println!("  one of careful, balanced, aggressive");
    }
    let mode_default = plan
        .feedback_mode
        .clone()
        .or(current_mode.map(str::to_owned))
        .unwrap_or_else(|| "slash_and_reactions".into());
    loop {
        let answer = ask(
            "Rating in chat: slash_only (/rl), slash_and_reactions (also 👍/👎), slash_reactions_prompt (also buttons)",
            &mode_default,
        )?;
        if FEEDBACK_MODES.contains(&answer.as_str()) {
            plan.feedback_mode = Some(answer);
            break;
        }
        println!("  one of {}", FEEDBACK_MODES.join(", "));
    }
    let ids = |kind: &str, answer: String| -> Result<Vec<String>> {
        answer
            .split(',')
            .filter(|s| !s.trim().is_empty() && s.trim() != "-")
            .map(|s| check_id(kind, s))
            .collect()
    };
    let admins = plan
        .admins
        .clone()
        .unwrap_or_else(|| current.admins.clone());
    loop {
        let answer = ask(
            "Admins: sender ids allowed to /rl train, rollback, reset (comma-separated, - for none)",
            &display_ids(&admins),
        )?;
        match ids("admin", answer) {
            Ok(list) => {
                plan.admins = Some(list);
                break;
            }
            Err(e) => println!("  {e:#}"),
        }
    }
    let raters = plan
        .raters
        .clone()
        .unwrap_or_else(|| current.raters.clone());
    loop {
        let answer = ask(
            "Raters: sender ids allowed to rate anyone's replies in groups (comma-separated, - for none)",
            &display_ids(&raters),
        )?;
        match ids("rater", answer) {
            Ok(list) => {
                plan.raters = Some(list);
                break;
            }
            Err(e) => println!("  {e:#}"),
        }
    }
    plan.plugin = yes_no("Install the OpenClaw plugin?", plan.plugin)?;
    plan.service = yes_no("Install and start the bridge as a service?", plan.service)?;
    if !yes_no("Apply?", true)? {
        bail!("cancelled; changed nothing");
    }
    Ok(())
}

fn display_ids(ids: &[String]) -> String {
    if ids.is_empty() {
        "-".into()
    } else {
        ids.join(",")
    }
}
