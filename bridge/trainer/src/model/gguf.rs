//! GGUF loading: metadata to config, tensors dequantised to f32, q/k rows un-permuted back to
//! the Hugging Face layout for llama-architecture files, tokenizer rebuilt from metadata.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use super::tokenizer::{GgufVocab, bpe_tokenizer_json, tokenizer_from_json};
use super::{
    Arch, BaseWeights, ChatTemplate, LayerWeights, LoadedModel, ModelConfig, ModelSource,
    validate_weights,
};
use crate::error::{Result, TensorContext, TrainerError};

fn get<'a>(md: &'a HashMap<String, Value>, path: &Path, key: &str) -> Result<&'a Value> {
    md.get(key)
        .ok_or_else(|| TrainerError::model(path, format!("GGUF metadata lacks {key}")))
}

fn get_usize(md: &HashMap<String, Value>, path: &Path, key: &str) -> Result<usize> {
    let v = get(md, path, key)?;
    let n = match v {
        Value::U8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I32(x) if *x >= 0 => *x as u64,
        Value::I64(x) if *x >= 0 => *x as u64,
        _ => {
            return Err(TrainerError::model(
                path,
                format!("{key} is not an unsigned integer"),
            ));
        }
    };
    usize::try_from(n).map_err(|_| TrainerError::model(path, format!("{key} is too large")))
}

fn get_f64(md: &HashMap<String, Value>, key: &str) -> Option<f64> {
    match md.get(key)? {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        _ => None,
    }
}

fn get_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
    match md.get(key)? {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    }
}

fn string_array(md: &HashMap<String, Value>, path: &Path, key: &str) -> Result<Vec<String>> {
    match get(md, path, key)? {
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(TrainerError::model(
                    path,
                    format!("{key} holds a non-string"),
                )),
            })
            .collect(),
        _ => Err(TrainerError::model(path, format!("{key} is not an array"))),
    }
}

fn int_array(md: &HashMap<String, Value>, key: &str) -> Vec<i64> {
    match md.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::I32(x) => *x as i64,
                Value::U32(x) => *x as i64,
                Value::I64(x) => *x,
                Value::U8(x) => *x as i64,
                Value::I8(x) => *x as i64,
                _ => 1,
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    let file = File::open(path).map_err(|e| TrainerError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|e| TrainerError::model(path, format!("not a readable GGUF file: {e}")))?;
    let md = &content.metadata;
    let arch_name = get_str(md, "general.architecture")
        .ok_or_else(|| TrainerError::model(path, "GGUF metadata lacks general.architecture"))?
        .to_string();
    let arch = match arch_name.as_str() {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        other => {
            return Err(TrainerError::model(
                path,
                format!("architecture {other:?} is not supported (llama, qwen2, qwen3)"),
            ));
        }
    };
    let k = |s: &str| format!("{arch_name}.{s}");
    let hidden = get_usize(md, path, &k("embedding_length"))?;
    let heads = get_usize(md, path, &k("attention.head_count"))?;
    let kv_heads = get_usize(md, path, &k("attention.head_count_kv")).unwrap_or(heads);
    let head_dim = get_usize(md, path, &k("attention.key_length")).unwrap_or(hidden / heads.max(1));
    let num_layers = get_usize(md, path, &k("block_count"))?;
    let mut cfg = ModelConfig {
        arch,
        vocab_size: 0,
        hidden_size: hidden,
        intermediate_size: get_usize(md, path, &k("feed_forward_length"))?,
        num_layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        rope_theta: get_f64(md, &k("rope.freq_base")).unwrap_or(10_000.0),
        rms_eps: get_f64(md, &k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        tie_embeddings: !content.tensor_infos.contains_key("output.weight"),
        rope_scaling: None,
        num_experts: get_usize(md, path, &k("expert_count")).unwrap_or(0),
    };

    // Dequantised on the CPU (the same values on every device), then moved to `device`.
    let mut read = |name: &str| -> Result<Tensor> {
        let q = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| TrainerError::model(path, format!("cannot read tensor {name}: {e}")))?;
        q.dequantize(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_device(device))
            .ctx(&format!("dequantising {name}"))
    };
    let embed = read("token_embd.weight")?;
    cfg.vocab_size = embed.dim(0).ctx("embedding shape")?;
    cfg.validate(path)?;
    let lm_head = if cfg.tie_embeddings {
        embed.clone()
    } else {
        read("output.weight")?
    };
    let final_norm = read("output_norm.weight")?;
    // llama.cpp permutes q/k rows of llama-arch files for its interleaved rope.
    let unpermute = |w: Tensor, n_head: usize| -> Result<Tensor> {
        if arch != Arch::Llama {
            return Ok(w);
        }
        let (out, inp) = w.dims2().ctx("q/k weight shape")?;
        w.reshape((n_head, out / n_head / 2, 2, inp))
            .and_then(|t| t.transpose(1, 2))
            .and_then(|t| t.reshape((out, inp)))
            .and_then(|t| t.contiguous())
            .ctx("un-permuting q/k rows")
    };
    let mut layers = Vec::with_capacity(num_layers);
    for i in 0..num_layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        let q = unpermute(read(&n("attn_q.weight"))?, heads)?;
        let kk = unpermute(read(&n("attn_k.weight"))?, kv_heads)?;
        let qkv_bias = if cfg.qkv_bias() {
            Some([
                read(&n("attn_q.bias"))?,
                read(&n("attn_k.bias"))?,
                read(&n("attn_v.bias"))?,
            ])
        } else {
            None
        };
        let qk_norm = if cfg.qk_norm() {
            Some([
                read(&n("attn_q_norm.weight"))?,
                read(&n("attn_k_norm.weight"))?,
            ])
        } else {
            None
        };
        layers.push(LayerWeights {
            attn_norm: read(&n("attn_norm.weight"))?,
            proj: [
                q,
                kk,
                read(&n("attn_v.weight"))?,
                read(&n("attn_output.weight"))?,
            ],
            qkv_bias,
            qk_norm,
            mlp_norm: read(&n("ffn_norm.weight"))?,
            gate: read(&n("ffn_gate.weight"))?,
            up: read(&n("ffn_up.weight"))?,
            down: read(&n("ffn_down.weight"))?,
        });
    }
    let weights = BaseWeights {
        embed,
        layers,
        final_norm,
        lm_head,
    };
    validate_weights(path, &cfg, &weights)?;

    let tokens = string_array(md, path, "tokenizer.ggml.tokens")?;
    let merges = string_array(md, path, "tokenizer.ggml.merges").unwrap_or_default();
    let vocab = GgufVocab {
        model: get_str(md, "tokenizer.ggml.model").unwrap_or("gpt2"),
        pre: get_str(md, "tokenizer.ggml.pre"),
        tokens: tokens.clone(),
        merges,
        token_types: int_array(md, "tokenizer.ggml.token_type"),
    };
    let tokenizer = tokenizer_from_json(&bpe_tokenizer_json(&vocab)?)?;
    let tok_name = |key: &str| -> String {
        get_usize(md, path, key)
            .ok()
            .and_then(|id| tokens.get(id).cloned())
            .unwrap_or_default()
    };
    let template = ChatTemplate::new(
        get_str(md, "tokenizer.chat_template").map(str::to_string),
        tok_name("tokenizer.ggml.bos_token_id"),
        tok_name("tokenizer.ggml.eos_token_id"),
    );
    let name = get_str(md, "general.name")
        .map(str::to_string)
        .unwrap_or_else(|| path.display().to_string());
    Ok(LoadedModel {
        config: cfg,
        weights,
        tokenizer,
        template,
        name,
        source: ModelSource::Gguf(path.to_path_buf()),
    })
}
