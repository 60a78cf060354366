//! `rlclaw hooks install|uninstall claude-code|codex` puts a Stop hook into the agent's
//! settings; `rlclaw hook claude-code|codex` is what that hook runs: it reads the hook payload
//! on stdin, takes the finished turn from the transcript and captures it in the bridge, so that
//! `rlclaw good|bad` can rate it. The hook never blocks or fails the agent: it always exits 0
//! within a few seconds, and its errors go to `hooks.log` in the data folder.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::Method;

use super::{BridgeArgs, runtime};
use crate::client::Client;
use crate::datadir::DataDir;
use crate::install::hooks::{self, Agent};
use crate::install::{self, transcript};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Add rlclaw's Stop hook (merged with the hooks already there).
    Install {
        #[arg(value_enum)]
        agent: Agent,
    },
    /// Remove rlclaw's Stop hook (other hooks stay).
    Uninstall {
        #[arg(value_enum)]
        agent: Agent,
    },
}

#[derive(clap::Args)]
pub struct HookArgs {
    /// Which agent runs the hook.
    #[arg(value_enum)]
    agent: Agent,
    #[command(flatten)]
    bridge: BridgeArgs,
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    match args.action {
        Action::Install { agent } => {
            for line in install_agent(dir, agent)? {
                println!("{line}");
            }
            println!(
                "{} now captures each finished turn; rate the latest with `rlclaw good` or `rlclaw bad`.",
                agent.label()
            );
            Ok(())
        }
        Action::Uninstall { agent } => {
            for line in hooks::uninstall(agent)? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

pub fn install_agent(dir: &Path, agent: Agent) -> Result<Vec<String>> {
    let dir = super::service::absolute(dir)?;
    hooks::install(agent, &install::current_bin()?, &dir)
}

/// Largest hook payload read from stdin.
const MAX_PAYLOAD: u64 = 16 << 20;
/// How much of the end of a transcript is read.
const TRANSCRIPT_TAIL: u64 = 8 << 20;
/// Longest prompt or reply sent (the bridge's default limit is 256 KiB; it never cuts).
const MAX_TEXT: usize = 200 * 1024;
const CONTEXT_MESSAGES: usize = 12;
const CONTEXT_BYTES: usize = 4096;
const LOG_FILE: &str = "hooks.log";
const LOG_MAX: u64 = 1 << 20;

/// Runs the hook: whatever happens, it returns Ok (exit 0) and logs problems.
pub fn run_hook(dir: &Path, args: HookArgs) -> Result<()> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| capture(dir, &args)));
    let message = match outcome {
        Ok(Ok(Some(note))) => Some(note),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => Some(format!("error: {e:#}")),
        Err(_) => Some("error: the hook panicked".to_owned()),
    };
    if let Some(message) = message {
        log(dir, args.agent, &message);
    }
    Ok(())
}

fn log(dir: &Path, agent: Agent, message: &str) {
    let Ok(data) = DataDir::open(dir) else {
        return;
    };
    let path = data.path(LOG_FILE);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_MAX) {
        let _ = std::fs::rename(&path, data.path("hooks.log.1"));
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
    {
        let _ = writeln!(f, "{} {}: {message}", crate::now_ms(), agent.arg());
    }
}

/// Reads the payload and transcript and posts the turn. `Ok(Some(note))` for something worth
/// logging that is not an error.
fn capture(dir: &Path, args: &HookArgs) -> Result<Option<String>> {
    let mut raw = Vec::new();
    std::io::stdin()
        .take(MAX_PAYLOAD)
        .read_to_end(&mut raw)
        .context("cannot read the hook payload")?;
    let payload: serde_json::Value =
        serde_json::from_slice(&raw).context("the hook payload is not JSON")?;
    let session = [
        "session_id",
        "sessionId",
        "conversation_id",
        "conversationId",
    ]
    .iter()
    .find_map(|k| payload[*k].as_str().filter(|s| !s.is_empty()))
    .ok_or_else(|| anyhow::anyhow!("the hook payload has no session_id"))?
    .to_owned();
    let last_assistant = payload["last_assistant_message"].as_str();
    let (bytes, base) = match payload["transcript_path"]
        .as_str()
        .filter(|p| !p.is_empty())
    {
        Some(path) => read_transcript(args.agent, Path::new(path))?,
        None => (Vec::new(), 0),
    };
    let Some(turn) = transcript::last_turn(
        &bytes,
        base,
        last_assistant,
        CONTEXT_MESSAGES,
        CONTEXT_BYTES,
    ) else {
        return Ok(Some(format!(
            "session {session}: no prompt with a reply in the transcript; nothing captured"
        )));
    };
    if turn.prompt.len() > MAX_TEXT || turn.response.len() > MAX_TEXT {
        return Ok(Some(format!(
            "session {session}: the prompt or reply is over {MAX_TEXT} bytes; not captured"
        )));
    }
    let data = DataDir::open(dir)?;
    let key = data.load_key()?;
    let turn_id = format!(
        "{}-{}",
        args.agent.arg(),
        &crate::keys::sha256_hex(format!("{session}\n{}", turn.prompt_pos).as_bytes())[..32]
    );
    // Sent as a rollout: a turn with what the transcript says it cost.
    let mut body = serde_json::json!({
        "rollout_id": turn_id,
        "worker": format!("{}@{}", args.agent.arg(), install::host_name()),
        "session": session,
        "channel": args.agent.arg(),
        "sender": install::user_name(),
        "prompt": turn.prompt,
        "response": turn.response,
        "context": turn.context.iter()
            .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
            .collect::<Vec<_>>(),
    });
    let m = &turn.measures;
    if let Some(d) = m.duration_s {
        body["duration_s"] = serde_json::json!(d);
    }
    if let Some(t) = m.tokens {
        body["tokens"] = serde_json::json!(t);
    }
    if let Some(e) = m.errors {
        body["errors"] = serde_json::json!(e);
    }
    let model = payload["model"]
        .as_str()
        .map(str::to_owned)
        .or(turn.model.clone());
    if let Some(model) = model {
        body["model"] = serde_json::json!(model);
    }
    if let Some(at) = turn.at {
        body["at"] = serde_json::json!(at);
    }
    let addr = args.bridge.addr(&data);
    let answer = runtime()?.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut client = Client::connect(addr, key).await?;
            client.send(Method::POST, "/v1/rollouts", Some(&body)).await
        })
        .await
        .map_err(|_| anyhow::anyhow!("the bridge at {addr} did not answer within 5 s"))?
    })?;
    match answer.status {
        200 | 201 => Ok(None),
        409 => Ok(Some(format!(
            "turn {turn_id} was already captured with other content; kept the first"
        ))),
        _ => {
            answer.ok()?;
            Ok(None)
        }
    }
}

/// Reads the end of a transcript, which must be a regular file inside the agent's folder.
fn read_transcript(agent: Agent, path: &Path) -> Result<(Vec<u8>, u64)> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read the transcript {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("the transcript {} is not a regular file", path.display());
    }
    let real = path.canonicalize()?;
    let home: PathBuf = agent.home()?;
    let home = home.canonicalize().unwrap_or(home);
    if !real.starts_with(&home) {
        bail!(
            "the transcript {} is outside {}; not read",
            path.display(),
            home.display()
        );
    }
    let mut file = std::fs::File::open(&real)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TRANSCRIPT_TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    if start > 0 {
        // Drop the partial first line.
        let cut = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(bytes.len());
        bytes.drain(..cut);
        return Ok((bytes, start + cut as u64));
    }
    Ok((bytes, 0))
}
