//! Loading a base model for training: a GGUF file (dequantised to f32) or a Hugging Face
//! safetensors folder, for the Llama family (SmolLM2, Llama 3.x) and Qwen2/Qwen3.

mod gguf;
mod hf;
pub mod template;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};
pub use template::{ChatMessage, ChatTemplate};

/// Which family of decoder the weights belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama family: SmolLM2, Llama 3.x (no biases, no q/k norm).
    Llama,
    /// Qwen2/Qwen2.5: biases on q, k and v.
    Qwen2,
    /// Qwen3: RMS norm on q and k per head, no biases.
    Qwen3,
}

/// Llama 3.x rope scaling ("rope_type": "llama3").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Shape and numerics of a decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Number of experts; 0 for a dense model. Only dense decoders can be trained here.
    pub num_experts: usize,
}

impl ModelConfig {
    pub fn qkv_bias(&self) -> bool {
        self.arch == Arch::Qwen2
    }
    pub fn qk_norm(&self) -> bool {
        self.arch == Arch::Qwen3
    }
    /// Output width of q, k, v and o projections, and their input width.
    pub fn proj_shapes(&self) -> [(usize, usize); 4] {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        [(q, h), (kv, h), (kv, h), (h, q)]
    }
    /// Parameter count estimate (embeddings counted once when tied).
    pub fn param_count(&self) -> u64 {
        let [q, k, v, o] = self.proj_shapes();
        let attn = q.0 * q.1 + k.0 * k.1 + v.0 * v.1 + o.0 * o.1;
        let mlp = 3 * self.hidden_size * self.intermediate_size;
        let per_layer = (attn + mlp + 2 * self.hidden_size) as u64;
        let embed = (self.vocab_size * self.hidden_size) as u64;
        per_layer * self.num_layers as u64 + embed * if self.tie_embeddings { 1 } else { 2 }
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        let bad = |r: &str| Err(TrainerError::model(path, r.to_string()));
        if self.num_layers == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return bad("zero layers, hidden size or vocabulary");
        }
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return bad("head counts must be non-zero and heads a multiple of kv heads");
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad("head_dim must be even and non-zero");
        }
        if self.num_experts > 0 {
            return bad("mixture-of-experts models are not supported by this trainer yet");
        }
        Ok(())
    }
}

/// Frozen weights of one decoder layer. Linear weights are (out, in) as in PyTorch.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    /// q, k, v, o projections.
    pub proj: [Tensor; 4],
    /// Biases of q, k, v (Qwen2).
    pub qkv_bias: Option<[Tensor; 3]>,
    /// q and k norms (Qwen3), each (head_dim,).
    pub qk_norm: Option<[Tensor; 2]>,
    pub mlp_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// All frozen weights of a decoder.
#[derive(Debug, Clone)]
pub struct BaseWeights {
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Tensor,
    /// (vocab, hidden); the embedding itself when tied.
    pub lm_head: Tensor,
}

impl BaseWeights {
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }
    pub fn device(&self) -> &Device {
        self.embed.device()
    }
    /// Converts every weight to `dtype` (f64 for gradient checks).
    pub fn to_dtype(&self, dtype: DType) -> candle_core::Result<Self> {
        self.map(|t| t.to_dtype(dtype))
    }

    /// Copies every weight to `device` (a tied output projection stays one tensor).
    pub fn to_device(&self, device: &Device) -> candle_core::Result<Self> {
        self.map(|t| t.to_device(device))
    }

    fn map(&self, c: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> candle_core::Result<Self> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            layers.push(LayerWeights {
                attn_norm: c(&l.attn_norm)?,
                proj: [
                    c(&l.proj[0])?,
                    c(&l.proj[1])?,
                    c(&l.proj[2])?,
                    c(&l.proj[3])?,
                ],
                qkv_bias: match &l.qkv_bias {
                    Some([a, b, d]) => Some([c(a)?, c(b)?, c(d)?]),
                    None => None,
                },
                qk_norm: match &l.qk_norm {
                    Some([a, b]) => Some([c(a)?, c(b)?]),
                    None => None,
                },
                mlp_norm: c(&l.mlp_norm)?,
                gate: c(&l.gate)?,
                up: c(&l.up)?,
                down: c(&l.down)?,
            });
        }
        let embed = c(&self.embed)?;
        let lm_head = if self.lm_head.id() == self.embed.id() {
            embed.clone()
        } else {
            c(&self.lm_head)?
        };
        Ok(Self {
            embed,
            layers,
            final_norm: c(&self.final_norm)?,
            lm_head,
        })
    }
}

/// Where a base model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "path", rename_all = "snake_case")]
pub enum ModelSource {
    /// A GGUF file (any quantisation candle can dequantise).
    Gguf(PathBuf),
    /// A folder with config.json, tokenizer.json and *.safetensors.
    HfDir(PathBuf),
}

impl ModelSource {
    /// A `.gguf` file or a folder with `config.json`.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let p = path.as_ref();
        if p.is_dir() {
            if p.join("config.json").is_file() {
                return Ok(Self::HfDir(p.to_path_buf()));
            }
            return Err(TrainerError::model(p, "folder has no config.json"));
        }
        if p.is_file() {
            return Ok(Self::Gguf(p.to_path_buf()));
        }
        Err(TrainerError::model(p, "no such file or folder"))
    }
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf(p) | Self::HfDir(p) => p,
        }
    }
}

/// A base model ready for training: config, frozen weights, tokenizer and chat template.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub weights: BaseWeights,
    pub tokenizer: tokenizers::Tokenizer,
    pub template: ChatTemplate,
    /// Name written as `base_model_name_or_path` in adapters.
    pub name: String,
    pub source: ModelSource,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("config", &self.config)
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// Loads a model in f32 on the CPU.
    pub fn load(source: &ModelSource) -> Result<Self> {
        Self::load_on(source, &Device::Cpu)
    }

    /// Loads a model in f32 on `device`.
    pub fn load_on(source: &ModelSource, device: &Device) -> Result<Self> {
        match source {
            ModelSource::Gguf(p) => gguf::load(p, device),
            ModelSource::HfDir(p) => hf::load(p, device),
        }
    }

    /// Token ids of a text, special tokens written in the text recognised, none added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TrainerError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| TrainerError::Tokenizer(e.to_string()))
    }
}

pub(crate) fn check_shape(path: &Path, name: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        return Err(TrainerError::model(
            path,
            format!("tensor {name} has shape {:?}, expected {dims:?}", t.dims()),
        ));
    }
    Ok(())
}

/// Checks every weight's shape against the config.
pub(crate) fn validate_weights(path: &Path, cfg: &ModelConfig, w: &BaseWeights) -> Result<()> {
    let h = cfg.hidden_size;
    check_shape(path, "embed", &w.embed, &[cfg.vocab_size, h])?;
    check_shape(path, "lm_head", &w.lm_head, &[cfg.vocab_size, h])?;
    check_shape(path, "final_norm", &w.final_norm, &[h])?;
    if w.layers.len() != cfg.num_layers {
        return Err(TrainerError::model(path, "layer count differs from config"));
    }
    let shapes = cfg.proj_shapes();
    for (i, l) in w.layers.iter().enumerate() {
        for (j, name) in ["q", "k", "v", "o"].iter().enumerate() {
            let (o, inp) = shapes[j];
            check_shape(path, &format!("layer {i} {name}"), &l.proj[j], &[o, inp])?;
        }
        if let Some(b) = &l.qkv_bias {
            for j in 0..3 {
                check_shape(path, &format!("layer {i} bias {j}"), &b[j], &[shapes[j].0])?;
            }
        }
        if let Some(n) = &l.qk_norm {
            check_shape(path, &format!("layer {i} q_norm"), &n[0], &[cfg.head_dim])?;
            check_shape(path, &format!("layer {i} k_norm"), &n[1], &[cfg.head_dim])?;
        }
        check_shape(path, &format!("layer {i} attn_norm"), &l.attn_norm, &[h])?;
        check_shape(path, &format!("layer {i} mlp_norm"), &l.mlp_norm, &[h])?;
        check_shape(
            path,
            &format!("layer {i} gate"),
            &l.gate,
            &[cfg.intermediate_size, h],
        )?;
        check_shape(
            path,
            &format!("layer {i} up"),
            &l.up,
            &[cfg.intermediate_size, h],
        )?;
        check_shape(
            path,
            &format!("layer {i} down"),
            &l.down,
            &[h, cfg.intermediate_size],
        )?;
    }
    Ok(())
}
