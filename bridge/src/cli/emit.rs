//! `rlclaw emit`: send one rollout (an agent's finished task with its measurements) to the
//! bridge, signed like every other client. clients/rlclaw_emit.py does the same from machines
//! without rlclaw installed.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use hyper::Method;

use super::{BridgeArgs, existing, runtime};
use crate::client::Client;
use crate::keys::random_bytes;

#[derive(clap::Args)]
#[command(
    after_help = "Texts may be given as @FILE, or - for standard input. Without --rollout-id \
                  a fresh id is made; the bridge stamps the time, so sending the same rollout \
                  again is recognised.",
    allow_negative_numbers = true
)]
pub struct Args {
    /// Which agent or machine did the task (e.g. build-bot@vm).
    #[arg(long)]
    worker: String,
    /// The task as given.
    #[arg(long)]
    prompt: String,
    /// What the agent answered or did.
    #[arg(long)]
    response: String,
    /// A unique id; a fresh random one by default. Sending the same id and body again is safe.
    #[arg(long)]
    rollout_id: Option<String>,
    /// How long the task took, in seconds.
    #[arg(long, value_parser = non_negative)]
    duration_s: Option<f64>,
    /// Tokens the agent used.
    #[arg(long)]
    tokens: Option<u64>,
    /// Errors the agent hit.
    #[arg(long)]
    errors: Option<u64>,
    /// Earlier messages as a JSON list of {"role", "content"}.
    #[arg(long)]
    context: Option<String>,
    /// Where the reply was shown (with --message-id, so reactions there can rate it).
    #[arg(long)]
    channel: Option<String>,
    /// The chat it was shown in.
    #[arg(long)]
    chat: Option<String>,
    /// A channel message id of the reply; repeat for every chunk.
    #[arg(long = "message-id")]
    message_ids: Vec<String>,
    /// The person the task was done for (who may rate it).
    #[arg(long)]
    sender: Option<String>,
    /// Which model did it.
    #[arg(long)]
    model: Option<String>,
    /// Print the bridge's answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bridge: BridgeArgs,
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a non-negative number")),
    }
}

/// `@path` reads the text from a file, `-` from standard input.
fn text(arg: &str, what: &str) -> Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
        return Ok(s);
    }
    if let Some(path) = arg.strip_prefix('@') {
        return std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} from {path}"));
    }
    Ok(arg.to_string())
}

pub fn run(dir: &Path, args: Args) -> Result<()> {
    let dir = existing(dir)?;
    let from_stdin = [
        Some(&args.prompt),
        Some(&args.response),
        args.context.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter(|a| a.as_str() == "-")
    .count();
    if from_stdin > 1 {
        bail!("only one text can come from standard input");
    }
    let rollout_id = match &args.rollout_id {
        Some(id) => id.clone(),
        None => format!("ro-{}", hex::encode(random_bytes::<12>()?)),
    };
    let mut body = serde_json::json!({
        "rollout_id": rollout_id,
        "worker": args.worker,
        "prompt": text(&args.prompt, "prompt")?,
        "response": text(&args.response, "response")?,
    });
    if let Some(context) = &args.context {
        let context: serde_json::Value = serde_json::from_str(&text(context, "context")?)
            .context("--context is not JSON (a list of {\"role\", \"content\"})")?;
        body["context"] = context;
    }
    let optional = [
        ("duration_s", args.duration_s.map(serde_json::Value::from)),
        ("tokens", args.tokens.map(serde_json::Value::from)),
        ("errors", args.errors.map(serde_json::Value::from)),
        ("channel", args.channel.map(serde_json::Value::from)),
        ("chat", args.chat.map(serde_json::Value::from)),
        ("sender", args.sender.map(serde_json::Value::from)),
        ("model", args.model.map(serde_json::Value::from)),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            body[name] = v;
        }
    }
    if !args.message_ids.is_empty() {
        body["message_ids"] = serde_json::json!(args.message_ids);
    }
    let addr = args.bridge.addr(&dir);
    let (status, answer) = runtime()?.block_on(async {
        let mut client = Client::connect(addr, dir.load_key()?).await?;
        let answer = client
            .send(Method::POST, "/v1/rollouts", Some(&body))
            .await?;
        let status = answer.status;
        anyhow::Ok((status, answer.ok()?))
    })?;
    if args.json {
        println!("{answer}");
    } else if status == 201 {
        let automatic = match answer["rewards"]["automatic"].as_f64() {
            Some(score) => format!(" (automatic reward {score:.2} of 1)"),
            None => String::new(),
        };
        println!(
            "Stored rollout {rollout_id} from {}{automatic}.",
            args.worker
        );
    } else {
        println!("Rollout {rollout_id} was already stored; nothing changed.");
    }
    Ok(())
}
