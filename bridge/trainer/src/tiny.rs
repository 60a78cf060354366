//! A tiny random model for tests that need only shapes: a Hugging Face folder with
//! config.json, model.safetensors, tokenizer.json (byte-level BPE over the 256 bytes plus
//! ChatML tokens) and tokenizer_config.json.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::error::{Result, TensorContext, TrainerError};
use crate::lora::SplitMix64;
use crate::model::template::CHATML_TEMPLATE;
use crate::model::{Arch, BaseWeights, LayerWeights, ModelConfig};

pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// GPT-2's byte → printable character map.
pub fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        out[*b as usize] = char::from_u32(c).unwrap_or(' ');
    }
    out
}

/// The shape of the tiny model.
pub fn tiny_config(arch: Arch) -> ModelConfig {
    ModelConfig {
        arch,
        vocab_size: 256 + SPECIAL_TOKENS.len(),
        hidden_size: 32,
        intermediate_size: 48,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        rope_theta: 10_000.0,
        rms_eps: 1e-6,
        tie_embeddings: arch == Arch::Llama,
        rope_scaling: None,
        num_experts: 0,
    }
}

/// Random weights for a config (deterministic in `seed`).
pub fn random_weights(cfg: &ModelConfig, seed: u64, dtype: DType) -> Result<BaseWeights> {
    let dev = Device::Cpu;
    let mut rng = SplitMix64::new(seed);
    let mut mk = |shape: &[usize], center: f64, bound: f64| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| center + rng.uniform(bound)).collect();
        Tensor::from_vec(v, shape, &dev)
            .and_then(|t| t.to_dtype(dtype))
            .ctx("random weights")
    };
    let h = cfg.hidden_size;
    let shapes = cfg.proj_shapes();
    let lin = |inp: usize| (3.0 / inp as f64).sqrt();
    let embed = mk(&[cfg.vocab_size, h], 0.0, 1.0)?;
    let mut layers = Vec::new();
    for _ in 0..cfg.num_layers {
        let mut proj = Vec::new();
        for (o, i) in shapes {
            proj.push(mk(&[o, i], 0.0, lin(i))?);
        }
        let proj: [Tensor; 4] = proj
            .try_into()
            .map_err(|_| TrainerError::Request("internal: projection count".into()))?;
        let qkv_bias = if cfg.qkv_bias() {
            Some([
                mk(&[shapes[0].0], 0.0, 0.1)?,
                mk(&[shapes[1].0], 0.0, 0.1)?,
                mk(&[shapes[2].0], 0.0, 0.1)?,
            ])
        } else {
            None
        };
        let qk_norm = if cfg.qk_norm() {
            Some([
                mk(&[cfg.head_dim], 1.0, 0.1)?,
                mk(&[cfg.head_dim], 1.0, 0.1)?,
            ])
        } else {
            None
        };
        layers.push(LayerWeights {
            attn_norm: mk(&[h], 1.0, 0.1)?,
            proj,
            qkv_bias,
            qk_norm,
            mlp_norm: mk(&[h], 1.0, 0.1)?,
            gate: mk(&[cfg.intermediate_size, h], 0.0, lin(h))?,
            up: mk(&[cfg.intermediate_size, h], 0.0, lin(h))?,
            down: mk(&[h, cfg.intermediate_size], 0.0, lin(cfg.intermediate_size))?,
        });
    }
    let final_norm = mk(&[h], 1.0, 0.1)?;
    let lm_head = if cfg.tie_embeddings {
        embed.clone()
    } else {
        mk(&[cfg.vocab_size, h], 0.0, lin(h))?
    };
    Ok(BaseWeights {
        embed,
        layers,
        final_norm,
        lm_head,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| TrainerError::io(path, e))
}

/// Writes a tiny random model of `arch` into `dir` (created if needed).
pub fn write_tiny_model(dir: &Path, arch: Arch, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainerError::io(dir, e))?;
    let cfg = tiny_config(arch);
    let w = random_weights(&cfg, seed, DType::F32)?;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), w.embed.clone());
    t.insert("model.norm.weight".into(), w.final_norm.clone());
    if !cfg.tie_embeddings {
        t.insert("lm_head.weight".into(), w.lm_head.clone());
    }
    for (i, l) in w.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        t.insert(p("input_layernorm.weight"), l.attn_norm.clone());
        t.insert(p("post_attention_layernorm.weight"), l.mlp_norm.clone());
        for (j, m) in ["q_proj", "k_proj", "v_proj", "o_proj"].iter().enumerate() {
            t.insert(p(&format!("self_attn.{m}.weight")), l.proj[j].clone());
        }
        if let Some(b) = &l.qkv_bias {
            for (j, m) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                t.insert(p(&format!("self_attn.{m}.bias")), b[j].clone());
            }
        }
        if let Some([qn, kn]) = &l.qk_norm {
            t.insert(p("self_attn.q_norm.weight"), qn.clone());
            t.insert(p("self_attn.k_norm.weight"), kn.clone());
        }
        t.insert(p("mlp.gate_proj.weight"), l.gate.clone());
        t.insert(p("mlp.up_proj.weight"), l.up.clone());
        t.insert(p("mlp.down_proj.weight"), l.down.clone());
    }
    let st = dir.join("model.safetensors");
    candle_core::safetensors::save(&t, &st)
        .map_err(|e| TrainerError::model(&st, format!("cannot write: {e}")))?;
    let model_type = match arch {
        Arch::Llama => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 => "qwen3",
    };
    let config = json!({
        "model_type": model_type,
        "architectures": [format!("{}ForCausalLM", match arch { Arch::Llama => "Llama", Arch::Qwen2 => "Qwen2", Arch::Qwen3 => "Qwen3" })],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": "float32",
        "_name_or_path": format!("rlclaw-tiny-{model_type}"),
    });
    write(&dir.join("config.json"), config.to_string().as_bytes())?;
    let chars = bytes_to_unicode();
    let tokens: Vec<String> = chars
        .iter()
        .map(|c| c.to_string())
        .chain(SPECIAL_TOKENS.iter().map(|s| s.to_string()))
        .collect();
    let types: Vec<i64> = (0..tokens.len())
        .map(|i| if i < 256 { 1 } else { 3 })
        .collect();
    let vocab = crate::model::tokenizer::GgufVocab {
        model: "gpt2",
        pre: None,
        tokens,
        merges: Vec::new(),
        token_types: types,
    };
    let tok = crate::model::tokenizer::bpe_tokenizer_json(&vocab)?;
    write(&dir.join("tokenizer.json"), tok.to_string().as_bytes())?;
    let tc = json!({
        "chat_template": CHATML_TEMPLATE,
        "bos_token": null,
        "eos_token": "<|im_end|>",
    });
    write(
        &dir.join("tokenizer_config.json"),
        tc.to_string().as_bytes(),
    )?;
    Ok(())
}
