//! Loading the base model with its merged adapter, and generating with it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use mistralrs::{
    IsqType, LoraModelBuilder, ModelDType, RequestBuilder, SamplingParams, StopTokens,
    TextMessageRole, TextModelBuilder, TokenSource,
};

use crate::adapter;
use crate::convert::{self, ModelShape};
use crate::error::{Result, ServeError};

/// The default listen address: loopback, port 8421.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8421);

/// The default model name served to clients.
pub const DEFAULT_MODEL_ID: &str = "rlclaw";

/// What to serve and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// A GGUF file or a Hugging Face safetensors folder.
    pub model: PathBuf,
    /// A tokenizer.json to use instead of the model's own.
    pub tokenizer: Option<PathBuf>,
    /// A PEFT folder: adapter_config.json + adapter_model.safetensors.
    pub adapter: Option<PathBuf>,
    /// Where the endpoint listens; loopback only. Default 127.0.0.1:8421.
    pub listen: SocketAddr,
    /// The model name served to clients. Default "rlclaw".
    pub model_id: String,
    /// In-situ quantisation applied after the adapter is merged; `None` serves float32.
    /// Default [`default_isq`]; [`isq_from_env`] reads a person's override.
    pub isq: Option<IsqType>,
}

impl ServeConfig {
    /// A config for `model` with the defaults: no adapter, 127.0.0.1:8421, "rlclaw",
    /// [`default_isq`].
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            tokenizer: None,
            adapter: None,
            listen: DEFAULT_LISTEN,
            model_id: DEFAULT_MODEL_ID.to_string(),
            isq: default_isq(),
        }
    }
}

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The role for an OpenAI role name (`developer` counts as `system`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "system" | "developer" => Some(Self::System),
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }

    fn to_mistralrs(self) -> TextMessageRole {
        match self {
            Self::System => TextMessageRole::System,
            Self::User => TextMessageRole::User,
            Self::Assistant => TextMessageRole::Assistant,
            Self::Tool => TextMessageRole::Tool,
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// Sampling for one request. `temperature <= 0` (or none) decodes greedily.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
}

impl Sampling {
    fn params(&self) -> SamplingParams {
        let mut p = match self.temperature {
            Some(t) if t > 0.0 => {
                let mut p = SamplingParams::neutral();
                p.temperature = Some(t);
                p.top_p = self.top_p;
                p
            }
            _ => SamplingParams::deterministic(),
        };
        p.max_len = self.max_tokens;
        if !self.stop.is_empty() {
            p.stop_toks = Some(StopTokens::Seqs(self.stop.clone()));
        }
        p
    }
}

/// A loaded model (base weights with the adapter merged in) ready to generate.
pub struct Engine {
    pub(crate) model: mistralrs::Model,
    adapter: Option<PathBuf>,
    weights_dir: PathBuf,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("adapter", &self.adapter)
            .field("weights_dir", &self.weights_dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The adapter merged into this engine's weights, if any.
    pub fn adapter(&self) -> Option<&Path> {
        self.adapter.as_deref()
    }

    /// The safetensors folder the weights were loaded from (the converted copy for a GGUF).
    pub fn weights_dir(&self) -> &Path {
        &self.weights_dir
    }

    /// Generates a reply to `messages`: at most `max_tokens` tokens, greedy when
    /// `temperature <= 0`.
    pub async fn generate(
        &self,
        messages: &[ChatMessage],
        max_tokens: usize,
        temperature: f64,
    ) -> Result<String> {
        let sampling = Sampling {
            max_tokens: Some(max_tokens),
            temperature: Some(temperature),
            ..Sampling::default()
        };
        let resp = self
            .model
            .send_chat_request(request(messages, &sampling)?)
            .await
            .map_err(|e| ServeError::Generate(e.to_string()))?;
        let choice = resp
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ServeError::Generate("the model returned no choice".into()))?;
        Ok(choice.message.content.unwrap_or_default())
    }
}

pub(crate) fn request(messages: &[ChatMessage], sampling: &Sampling) -> Result<RequestBuilder> {
    if messages.is_empty() {
        return Err(ServeError::Generate("no messages to answer".into()));
    }
    let mut rb = RequestBuilder::new();
    for m in messages {
        rb = rb.add_message(m.role.to_mistralrs(), &m.content);
    }
    Ok(rb.set_sampling(sampling.params()))
}

/// Where converted GGUF copies live: RLCLAW_SERVE_CACHE, else $XDG_CACHE_HOME/rlclaw/serve,
/// else ~/.cache/rlclaw/serve.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("RLCLAW_SERVE_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("rlclaw").join("serve")
}

/// The in-situ quantisation named by RLCLAW_SERVE_ISQ (`q4_0`, `q4_1`, `q5_0`, `q5_1`,
/// `q8_0`, `q4k`, `q5k`, `q6k`, `q8k`; `none` or `f32` for float32), applied after the adapter
/// is merged. Unset: [`default_isq`].
pub fn isq_from_env() -> Result<Option<IsqType>> {
    let Some(v) = std::env::var_os("RLCLAW_SERVE_ISQ") else {
        return Ok(default_isq());
    };
    let v = v.to_string_lossy().to_ascii_lowercase();
    let t = match v.as_str() {
        "" => return Ok(default_isq()),
        "none" | "f32" => return Ok(None),
        "q4_0" => IsqType::Q4_0,
        "q4_1" => IsqType::Q4_1,
        "q5_0" => IsqType::Q5_0,
        "q5_1" => IsqType::Q5_1,
        "q8_0" => IsqType::Q8_0,
        "q4k" => IsqType::Q4K,
        "q5k" => IsqType::Q5K,
        "q6k" => IsqType::Q6K,
        "q8k" => IsqType::Q8K,
        other => {
            return Err(ServeError::Load(format!(
                "RLCLAW_SERVE_ISQ={other} is not one of q4_0 q4_1 q5_0 q5_1 q8_0 q4k q5k q6k q8k"
            )));
        }
    };
    Ok(Some(t))
}

/// Q8_0 on the CPU, none on a GPU (where float weights are fast enough).
///
/// On the CPU Q8_0 decodes about twice as fast as float32 (BENCHMARKS.md, "Serving") and is the
/// most faithful of the formats: teacher-forced on float32's own greedy answers to five prompts,
/// SmolLM2-135M picks the same next token 95 times in 101 (q4_0: 69). The base model people start
/// from is itself a Q4_1 GGUF, which llama.cpp and ollama serve with 8-bit activations the same
/// way. Where float32 sits on a near tie, Q8_0 can pick the other token: SmolLM2's first token
/// for "What is the capital of France?" is "The" at 25.33 against "L" at 25.24, and Q8_0 answers
/// in French. candle's quantised kernels match the exact product of their rounded operands to
/// 1e-7; the difference is the format's rounding. `RLCLAW_SERVE_ISQ=none` serves float32.
pub fn default_isq() -> Option<IsqType> {
    if cfg!(feature = "cuda") {
        None
    } else {
        Some(IsqType::Q8_0)
    }
}

/// Everything that precedes the mistral.rs load: a safetensors folder, the model's shapes and
/// the staged adapter. Blocking file work.
fn prepare(cfg: &ServeConfig) -> Result<(PathBuf, Option<adapter::Staged>)> {
    let model = &cfg.model;
    if !model.exists() {
        return Err(ServeError::ModelMissing(model.clone()));
    }
    if let Some(t) = &cfg.tokenizer
        && !t.is_file()
    {
        return Err(ServeError::Tokenizer {
            path: t.clone(),
            reason: "no such file".into(),
        });
    }
    let dir = if model.is_file() {
        if !convert::is_gguf(model) {
            return Err(ServeError::ModelInvalid {
                path: model.clone(),
                reason: "a model file must be GGUF".into(),
            });
        }
        convert::gguf_to_hf(model, cfg.tokenizer.as_deref(), &cache_root())?
    } else {
        model.clone()
    };
    let config_json = dir.join("config.json");
    if !config_json.is_file() {
        return Err(ServeError::ModelInvalid {
            path: dir,
            reason: "the folder has no config.json".into(),
        });
    }
    let shape = ModelShape::from_config_json(&config_json)?;
    let staged = match &cfg.adapter {
        Some(a) => {
            let checked = adapter::check(a, Some(&shape))?;
            Some(adapter::stage(&checked, &adapter::hub_cache_dir())?)
        }
        None => None,
    };
    Ok((dir, staged))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Loads the model of `cfg` with its adapter (if any) merged into the weights.
///
/// The load runs on a thread of its own: mistral.rs 0.8.1 keeps the adapters to merge in a
/// thread-local list that it never clears, so a second load on a reused thread would merge the
/// previous adapter again.
pub async fn load(cfg: &ServeConfig) -> Result<Engine> {
    let cfg = cfg.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rlclaw-serve-load".into())
        .spawn(move || {
            let out =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_blocking(&cfg)))
                    .unwrap_or_else(|p| {
                        Err(ServeError::Load(format!(
                            "mistral.rs panicked: {}",
                            panic_message(p.as_ref())
                        )))
                    });
            let _ = tx.send(out);
        })
        .map_err(|e| ServeError::Load(format!("cannot start the loader thread: {e}")))?;
    rx.await
        .map_err(|_| ServeError::Load("the loader thread ended without an answer".into()))?
}

fn load_blocking(cfg: &ServeConfig) -> Result<Engine> {
    mistralrs_quant::clear_applied_loras();
    let (dir, staged) = prepare(cfg)?;
    let adapter_id = staged.as_ref().map(|s| s.id.clone());
    let dir_str = dir
        .to_str()
        .ok_or_else(|| ServeError::ModelInvalid {
            path: dir.clone(),
            reason: "the path is not valid UTF-8".into(),
        })?
        .to_string();
    let mut tm = TextModelBuilder::new(dir_str).with_token_source(TokenSource::None);
    tm = if cfg!(feature = "cuda") {
        tm.with_dtype(ModelDType::Auto)
    } else {
        // mistral.rs 0.8.1's prefix cache bounds only the caches it holds on a GPU: on the CPU
        // it kept every finished sequence's KV cache (about 23 MB each for SmolLM2-135M, room
        // for 512 tokens), so the endpoint grew without end, 11 GiB in an hour of use.
        tm.with_dtype(ModelDType::F32).with_prefix_cache_n(None)
    };
    if let Some(q) = cfg.isq {
        tm = tm.with_isq(q);
    }
    if let Some(t) = &cfg.tokenizer
        && !cfg.model.is_file()
    {
        tm = tm.with_tokenizer_json(t.to_string_lossy());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Load(format!("cannot start a runtime: {e}")))?;
    let built = rt.block_on(async move {
        match adapter_id {
            Some(id) => {
                LoraModelBuilder::from_text_model_builder(tm, vec![id])
                    .build()
                    .await
            }
            None => tm.build().await,
        }
    });
    mistralrs_quant::clear_applied_loras();
    drop(staged);
    let model = built.map_err(|e| ServeError::Load(format!("{e:#}")))?;
    Ok(Engine {
        model,
        adapter: cfg.adapter.clone(),
        weights_dir: dir,
    })
}
