//! Hugging Face folder loading: config.json, tokenizer.json, tokenizer_config.json and
//! *.safetensors (f32, f16 or bf16; converted to f32).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Arch, BaseWeights, ChatTemplate, LayerWeights, Llama3RopeScaling, LoadedModel, ModelConfig,
    ModelSource, validate_weights,
};
use crate::error::{Result, TensorContext, TrainerError};

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    tie_word_embeddings: Option<bool>,
    rope_scaling: Option<Value>,
    num_experts: Option<usize>,
    num_local_experts: Option<usize>,
    n_routed_experts: Option<usize>,
    #[serde(rename = "_name_or_path")]
    name_or_path: Option<String>,
}

pub(super) fn parse_config(path: &Path) -> Result<(ModelConfig, Option<String>)> {
    let file = path.join("config.json");
    let text = std::fs::read_to_string(&file).map_err(|e| TrainerError::io(&file, e))?;
    let c: HfConfig = serde_json::from_str(&text).map_err(|source| TrainerError::Json {
        path: file.clone(),
        source,
    })?;
    let mt = c
        .model_type
        .clone()
        .or_else(|| c.architectures.first().cloned())
        .unwrap_or_default()
        .to_lowercase();
    let arch = if mt.starts_with("qwen3") {
        Arch::Qwen3
    } else if mt.starts_with("qwen2") {
        Arch::Qwen2
    } else if mt.starts_with("llama") || mt.starts_with("smollm") || mt.starts_with("mistral") {
        Arch::Llama
    } else {
        return Err(TrainerError::model(
            path,
            format!("model_type {mt:?} is not supported (llama, qwen2, qwen3)"),
        ));
    };
    let rope_scaling = match &c.rope_scaling {
        Some(v)
            if v.get("rope_type")
                .or_else(|| v.get("type"))
                .and_then(Value::as_str)
                == Some("llama3") =>
        {
            let f = |k: &str| v.get(k).and_then(Value::as_f64);
            Some(Llama3RopeScaling {
                factor: f("factor").unwrap_or(8.0),
                low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
                high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
                original_max_position_embeddings: v
                    .get("original_max_position_embeddings")
                    .and_then(Value::as_u64)
                    .unwrap_or(8192) as usize,
            })
        }
        _ => None,
    };
    let heads = c.num_attention_heads;
    let cfg = ModelConfig {
        arch,
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_layers: c.num_hidden_layers,
        num_heads: heads,
        num_kv_heads: c.num_key_value_heads.unwrap_or(heads),
        head_dim: c.head_dim.unwrap_or(c.hidden_size / heads.max(1)),
        rope_theta: c.rope_theta.unwrap_or(10_000.0),
        rms_eps: c.rms_norm_eps.unwrap_or(1e-6),
        tie_embeddings: c.tie_word_embeddings.unwrap_or(false),
        rope_scaling,
        num_experts: c
            .num_experts
            .or(c.num_local_experts)
            .or(c.n_routed_experts)
            .unwrap_or(0),
    };
    cfg.validate(path)?;
    Ok((cfg, c.name_or_path.filter(|s| !s.is_empty())))
}

fn token_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

fn chat_template(path: &Path) -> Result<ChatTemplate> {
    let tc_path = path.join("tokenizer_config.json");
    let tc: Value = match std::fs::read_to_string(&tc_path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| TrainerError::Json {
            path: tc_path.clone(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
        Err(e) => return Err(TrainerError::io(&tc_path, e)),
    };
    let mut source = match tc.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(items)) => items
            .iter()
            .find(|i| i.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| items.first())
            .and_then(|i| i.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    };
    if source.is_none() {
        let jinja = path.join("chat_template.jinja");
        if jinja.is_file() {
            source =
                Some(std::fs::read_to_string(&jinja).map_err(|e| TrainerError::io(&jinja, e))?);
        }
    }
    Ok(ChatTemplate::new(
        source,
        token_string(tc.get("bos_token")),
        token_string(tc.get("eos_token")),
    ))
}

pub(super) fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    let (cfg, name) = parse_config(path)?;
    let tok_path = path.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| TrainerError::Tokenizer(format!("cannot read {}: {e}", tok_path.display())))?;
    let template = chat_template(path)?;

    let mut files: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| TrainerError::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TrainerError::model(path, "no *.safetensors file"));
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for f in &files {
        let t = candle_core::safetensors::load(f, device)
            .map_err(|e| TrainerError::model(f, format!("cannot read safetensors: {e}")))?;
        tensors.extend(t);
    }
    let mut take = |name: &str| -> Result<Tensor> {
        let t = tensors
            .remove(name)
            .ok_or_else(|| TrainerError::model(path, format!("missing tensor {name}")))?;
        t.to_dtype(DType::F32)
            .ctx(&format!("converting {name} to f32"))
    };
    let embed = take("model.embed_tokens.weight")?;
    let lm_head = if cfg.tie_embeddings {
        embed.clone()
    } else {
        take("lm_head.weight")?
    };
    let final_norm = take("model.norm.weight")?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let qkv_bias = if cfg.qkv_bias() {
            Some([
                take(&p("self_attn.q_proj.bias"))?,
                take(&p("self_attn.k_proj.bias"))?,
                take(&p("self_attn.v_proj.bias"))?,
            ])
        } else {
            None
        };
        let qk_norm = if cfg.qk_norm() {
            Some([
                take(&p("self_attn.q_norm.weight"))?,
                take(&p("self_attn.k_norm.weight"))?,
            ])
        } else {
            None
        };
        layers.push(LayerWeights {
            attn_norm: take(&p("input_layernorm.weight"))?,
            proj: [
                take(&p("self_attn.q_proj.weight"))?,
                take(&p("self_attn.k_proj.weight"))?,
                take(&p("self_attn.v_proj.weight"))?,
                take(&p("self_attn.o_proj.weight"))?,
            ],
            qkv_bias,
            qk_norm,
            mlp_norm: take(&p("post_attention_layernorm.weight"))?,
            gate: take(&p("mlp.gate_proj.weight"))?,
            up: take(&p("mlp.up_proj.weight"))?,
            down: take(&p("mlp.down_proj.weight"))?,
        });
    }
    let weights = BaseWeights {
        embed,
        layers,
        final_norm,
        lm_head,
    };
    validate_weights(path, &cfg, &weights)?;
    let name = name.unwrap_or_else(|| path.display().to_string());
    Ok(LoadedModel {
        config: cfg,
        weights,
        tokenizer,
        template,
        name,
        source: ModelSource::HfDir(path.to_path_buf()),
    })
}
