//! Serves a model (with an optional PEFT adapter) on an OpenAI-compatible loopback endpoint.
//!
//! `rlclaw-serve --model M.gguf [--adapter DIR] [--listen 127.0.0.1:8421] [--model-id rlclaw]`
//! `rlclaw-serve --model M.gguf --prompt "Hi" [--max-tokens 32]` generates once and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rlclaw_serve::{ChatMessage, DEFAULT_LISTEN, DEFAULT_MODEL_ID, Role, ServeConfig};

#[derive(Debug, Parser)]
#[command(name = "rlclaw-serve", version, about)]
struct Args {
    /// A GGUF file or a Hugging Face safetensors folder.
    #[arg(long)]
    model: PathBuf,
    /// A tokenizer.json to use instead of the model's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A PEFT adapter folder to merge in.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Loopback address to listen on.
    #[arg(long, default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Model name served to clients.
    #[arg(long, default_value = DEFAULT_MODEL_ID)]
    model_id: String,
    /// Generate one greedy reply to this prompt, print it and exit instead of serving.
    #[arg(long)]
    prompt: Option<String>,
    /// Token limit for --prompt.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
}

async fn run(args: Args) -> rlclaw_serve::Result<()> {
    let cfg = ServeConfig {
        model: args.model,
        tokenizer: args.tokenizer,
        adapter: args.adapter,
        listen: args.listen,
        model_id: args.model_id,
        isq: rlclaw_serve::isq_from_env()?,
    };
    if let Some(p) = args.prompt {
        let engine = rlclaw_serve::load(&cfg).await?;
        let out = engine
            .generate(&[ChatMessage::new(Role::User, p)], args.max_tokens, 0.0)
            .await?;
        println!("{out}");
        return Ok(());
    }
    let server = rlclaw_serve::bind(&cfg).await?;
    eprintln!(
        "rlclaw-serve: serving `{}` on http://{}/v1",
        cfg.model_id,
        server.local_addr()?
    );
    let (_keep, rx) = tokio::sync::watch::channel(cfg.adapter.clone());
    server.run(rx).await
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rlclaw-serve: {e}");
            ExitCode::FAILURE
        }
    }
}
