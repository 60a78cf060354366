//! GGUF loading for every supported architecture: a tiny random model written as GGUF (with
//! llama.cpp's q/k row permutation for llama files and the tokenizer in the metadata) loads
//! back to the same log-probabilities as the weights it was written from.

use std::fs::File;

use candle_core::quantized::gguf_file::{Value, write};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use rlclaw_trainer::tiny::{SPECIAL_TOKENS, bytes_to_unicode, random_weights, tiny_config};
use rlclaw_trainer::{Arch, Decoder, LoadedModel, ModelSource};

/// llama.cpp's permutation of q/k rows (HF layout → interleaved-rope layout).
fn permute(w: &Tensor, n_head: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((n_head, 2, out / n_head / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((out, inp))
        .unwrap()
        .contiguous()
        .unwrap()
}

fn check(arch: Arch) {
    let cfg = tiny_config(arch);
    let w = random_weights(&cfg, 21, DType::F32).unwrap();
    let name = match arch {
        Arch::Llama => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 => "qwen3",
    };
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("token_embd.weight".into(), w.embed.clone()),
        ("output_norm.weight".into(), w.final_norm.clone()),
    ];
    if !cfg.tie_embeddings {
        tensors.push(("output.weight".into(), w.lm_head.clone()));
    }
    for (i, l) in w.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        let (q, k) = if arch == Arch::Llama {
            (
                permute(&l.proj[0], cfg.num_heads),
                permute(&l.proj[1], cfg.num_kv_heads),
            )
        } else {
            (l.proj[0].clone(), l.proj[1].clone())
        };
        tensors.push((n("attn_q.weight"), q));
        tensors.push((n("attn_k.weight"), k));
        tensors.push((n("attn_v.weight"), l.proj[2].clone()));
        tensors.push((n("attn_output.weight"), l.proj[3].clone()));
        tensors.push((n("attn_norm.weight"), l.attn_norm.clone()));
        tensors.push((n("ffn_norm.weight"), l.mlp_norm.clone()));
        tensors.push((n("ffn_gate.weight"), l.gate.clone()));
        tensors.push((n("ffn_up.weight"), l.up.clone()));
        tensors.push((n("ffn_down.weight"), l.down.clone()));
        if let Some([bq, bk, bv]) = &l.qkv_bias {
            tensors.push((n("attn_q.bias"), bq.clone()));
            tensors.push((n("attn_k.bias"), bk.clone()));
            tensors.push((n("attn_v.bias"), bv.clone()));
        }
        if let Some([qn, kn]) = &l.qk_norm {
            tensors.push((n("attn_q_norm.weight"), qn.clone()));
            tensors.push((n("attn_k_norm.weight"), kn.clone()));
        }
    }
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), QTensor::quantize(t, GgmlDType::F32).unwrap()))
        .collect();
    let tokens: Vec<Value> = bytes_to_unicode()
        .iter()
        .map(|c| Value::String(c.to_string()))
        .chain(SPECIAL_TOKENS.iter().map(|s| Value::String(s.to_string())))
        .collect();
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i < 256 { 1 } else { 3 }))
        .collect();
    let k = |s: &str| format!("{name}.{s}");
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(name.into())),
        ("general.name".into(), Value::String(format!("tiny-{name}"))),
        (k("block_count"), Value::U32(cfg.num_layers as u32)),
        (k("embedding_length"), Value::U32(cfg.hidden_size as u32)),
        (
            k("feed_forward_length"),
            Value::U32(cfg.intermediate_size as u32),
        ),
        (k("attention.head_count"), Value::U32(cfg.num_heads as u32)),
        (
            k("attention.head_count_kv"),
            Value::U32(cfg.num_kv_heads as u32),
        ),
        (k("attention.key_length"), Value::U32(cfg.head_dim as u32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_eps as f32),
        ),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.merges".into(), Value::Array(vec![])),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(258)),
    ];
    let dir = tempfile::Builder::new()
        .prefix(&format!("rlclaw-gguf-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("tiny.gguf");
    let mut f = File::create(&path).unwrap();
    let mdr: Vec<(&str, &Value)> = md.iter().map(|(a, b)| (a.as_str(), b)).collect();
    let qr: Vec<(&str, &QTensor)> = q.iter().map(|(a, b)| (a.as_str(), b)).collect();
    write(&mut f, &mdr, &qr).unwrap();
    drop(f);

    let m = LoadedModel::load(&ModelSource::from_path(&path).unwrap()).unwrap();
    assert_eq!(m.config.arch, arch);
    assert_eq!(m.config.tie_embeddings, cfg.tie_embeddings);
    assert_eq!(m.name, format!("tiny-{name}"));
    let ids = m.encode("<|im_start|>user\nhi<|im_end|>\n").unwrap();
    assert_eq!(ids[0], 257, "special tokens from token_type 3");
    assert_eq!(m.decode(&ids).unwrap(), "<|im_start|>user\nhi<|im_end|>\n");
    assert_eq!(m.template.eos_token, "<|im_end|>");
    let from_file = Decoder::new(&m.config, &m.weights)
        .response_logprobs(&ids, 3, None, false)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let direct = Decoder::new(&cfg, &w)
        .response_logprobs(&ids, 3, None, false)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (a, b) in from_file.iter().zip(&direct) {
        assert!((a - b).abs() < 1e-5, "{arch:?}: {a} vs {b}");
    }
}

#[test]
fn gguf_llama_with_permuted_qk_loads_exactly() {
    check(Arch::Llama);
}

#[test]
fn gguf_qwen2_with_biases_loads_exactly() {
    check(Arch::Qwen2);
}

#[test]
fn gguf_qwen3_with_qk_norm_loads_exactly() {
    check(Arch::Qwen3);
}
