//! Decode speed and time to first token of SmolLM2-135M-Instruct with a merged rlclaw adapter,
//! measured through the OpenAI endpoint (streaming, greedy, loopback HTTP).
//!
//! `cargo bench -p rlclaw-serve --bench endpoint [-- RUNS MAX_TOKENS]` (defaults 3, 128).
//! CONCURRENCY="1 2 4" adds, for each figure, 8 requests with that many in flight at once, and
//! their tokens per second all together (does batching in the engine pay on this machine?).
//! RLCLAW_SERVE_ISQ=q4_0 (etc., or none) quantises after the merge; unset, the build's default
//! (`rlclaw_serve::default_isq`).
//! Prompt: "Write a short paragraph about the history of tea." with SmolLM2's chat template,
//! as in shared/reference/anchor-decode-cpu.md, so the figures compare with llama.cpp's there.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use rlclaw_serve::ServeConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PROMPT: &str = "Write a short paragraph about the history of tea.";

struct Run {
    ttft_s: f64,
    decode_tok_s: f64,
    tokens: usize,
    total_s: f64,
}

/// One streaming request; every SSE chunk with content is one token.
async fn run(addr: std::net::SocketAddr, max_tokens: usize, salt: usize) -> Run {
    // A different first word per run keeps the prefix cache from serving the user turn.
    let body = serde_json::json!({
        "model": "rlclaw",
        "messages": [{"role": "user", "content": format!("{} {PROMPT}", ["Please.", "Now.", "Kindly.", "Hello.", "Go."][salt % 5])}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
    })
    .to_string();
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut lines = BufReader::new(s).lines();
    let mut stamps = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data).expect("chunk JSON");
        if v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            stamps.push(t0.elapsed().as_secs_f64());
        }
    }
    let total_s = t0.elapsed().as_secs_f64();
    let ttft_s = stamps.first().copied().unwrap_or(total_s);
    let decode_tok_s = match (stamps.first(), stamps.last()) {
        (Some(a), Some(b)) if stamps.len() > 1 && b > a => (stamps.len() - 1) as f64 / (b - a),
        _ => 0.0,
    };
    Run {
        ttft_s,
        decode_tok_s,
        tokens: stamps.len(),
        total_s,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let max_tokens: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(128);

    let dir = common::scratch("bench-adapter");
    let adapter = dir.join("v1");
    common::write_mild_adapter(&adapter, &common::smollm2_shape(), 7);
    let mut cfg = ServeConfig::new(common::smollm2_gguf());
    cfg.isq = rlclaw_serve::isq_from_env().expect("RLCLAW_SERVE_ISQ");
    cfg.adapter = Some(adapter);
    cfg.listen = "127.0.0.1:0".parse().expect("addr");

    let t = Instant::now();
    let server = rlclaw_serve::bind(&cfg).await.expect("load and bind");
    let load_s = t.elapsed().as_secs_f64();
    let addr = server.local_addr().expect("addr");
    let (_keep, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(server.run(rx));

    let isq = match cfg.isq {
        Some(t) => format!("{t:?}"),
        None => "none (f32)".into(),
    };
    println!(
        "model SmolLM2-135M-Instruct (GGUF -> f32, adapter r8 q/k/v/o merged), isq {isq}, load+bind {load_s:.2} s"
    );
    let warm = run(addr, max_tokens, 99).await;
    println!(
        "warm-up: {} tokens, ttft {:.3} s, decode {:.1} tok/s",
        warm.tokens, warm.ttft_s, warm.decode_tok_s
    );
    let mut ttft = Vec::new();
    let mut dec = Vec::new();
    for i in 0..runs {
        let r = run(addr, max_tokens, i).await;
        println!(
            "run {i}: {} tokens, ttft {:.3} s, decode {:.1} tok/s, total {:.2} s",
            r.tokens, r.ttft_s, r.decode_tok_s, r.total_s
        );
        ttft.push(r.ttft_s);
        dec.push(r.decode_tok_s);
    }
    println!(
        "median over {runs}: ttft {:.3} s, decode {:.1} tok/s",
        median(ttft),
        median(dec)
    );
    let levels = std::env::var("CONCURRENCY").unwrap_or_default();
    for level in levels.split_whitespace() {
        let level: usize = level.parse().expect("CONCURRENCY: numbers");
        let r = concurrent(addr, max_tokens, level.max(1), 8).await;
        println!(
            "{level} in flight: 8 requests, {} tokens in {:.2} s, {:.1} tok/s together",
            r.tokens,
            r.total_s,
            r.tokens as f64 / r.total_s
        );
    }
}

/// `requests` requests, `level` of them in flight at any time; tokens and wall time of all.
async fn concurrent(
    addr: std::net::SocketAddr,
    max_tokens: usize,
    level: usize,
    requests: usize,
) -> Run {
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut next, mut tokens) = (0, 0);
    loop {
        while tasks.len() < level && next < requests {
            tasks.spawn(run(addr, max_tokens, next));
            next += 1;
        }
        match tasks.join_next().await {
            Some(r) => tokens += r.expect("request task").tokens,
            None => break,
        }
    }
    Run {
        ttft_s: 0.0,
        decode_tok_s: 0.0,
        tokens,
        total_s: t0.elapsed().as_secs_f64(),
    }
}
