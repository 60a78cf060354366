//! GGUF to Hugging Face folder conversion.
//!
//! mistral.rs merges a PEFT adapter only on its safetensors ("normal") loading path; its GGUF
//! path knows only the older X-LoRA style runtime adapters. A GGUF base is therefore turned,
//! once, into a float32 safetensors folder (config.json, model.safetensors, tokenizer.json,
//! tokenizer_config.json, generation_config.json) that the normal loader reads and the adapter
//! is merged into. llama.cpp stores the q/k rows of llama-architecture files permuted for its
//! interleaved rope; they are permuted back so that the weights (and PEFT adapters trained on
//! Hugging Face layout) line up.

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, Seek, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::error::{Result, ServeError, io_err};

/// The files a converted folder holds; it is complete only when all exist.
const CONVERTED_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// Model shapes that the adapter check needs, read from a GGUF or a config.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layers: usize,
}

impl ModelShape {
    /// (in, out) of a projection named like PEFT's target modules.
    pub fn proj_dims(&self, module: &str) -> Option<(usize, usize)> {
        let q = self.heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        match module {
            "q_proj" => Some((self.hidden, q)),
            "k_proj" | "v_proj" => Some((self.hidden, kv)),
            "o_proj" => Some((q, self.hidden)),
            _ => None,
        }
    }

    /// Reads the shapes from a Hugging Face config.json.
    pub fn from_config_json(path: &Path) -> Result<Self> {
        let bad = |reason: String| ServeError::ModelInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let v: Json = serde_json::from_str(&text).map_err(|e| bad(format!("config.json: {e}")))?;
        let get = |k: &str| {
            v.get(k)
                .and_then(Json::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("config.json has no integer `{k}`")))
        };
        let hidden = get("hidden_size")?;
        let heads = get("num_attention_heads")?;
        let kv_heads = v
            .get("num_key_value_heads")
            .and_then(Json::as_u64)
            .map(|x| x as usize)
            .unwrap_or(heads);
        if heads == 0 || kv_heads == 0 {
            return Err(bad("zero attention heads".into()));
        }
        let head_dim = v
            .get("head_dim")
            .and_then(Json::as_u64)
            .map(|x| x as usize)
            .unwrap_or(hidden / heads);
        Ok(Self {
            hidden,
            heads,
            kv_heads,
            head_dim,
            layers: get("num_hidden_layers")?,
        })
    }
}

/// A GGUF file's header: metadata and tensor table, no tensor data.
pub struct GgufHeader {
    path: PathBuf,
    content: Content,
    arch: String,
}

fn md_usize(v: &Value) -> Option<usize> {
    match v {
        Value::U8(x) => Some(*x as usize),
        Value::U16(x) => Some(*x as usize),
        Value::U32(x) => Some(*x as usize),
        Value::U64(x) => usize::try_from(*x).ok(),
        Value::I8(x) => usize::try_from(*x).ok(),
        Value::I16(x) => usize::try_from(*x).ok(),
        Value::I32(x) => usize::try_from(*x).ok(),
        Value::I64(x) => usize::try_from(*x).ok(),
        _ => None,
    }
}

fn md_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        other => md_usize(other).map(|x| x as f64),
    }
}

impl GgufHeader {
    /// Reads the header of the GGUF file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |reason: String| ServeError::Gguf {
            path: path.to_path_buf(),
            reason,
        };
        let f = fs::File::open(path).map_err(io_err(path))?;
        let mut r = BufReader::new(f);
        let content = Content::read(&mut r).map_err(|e| bad(e.to_string()))?;
        let arch = match content.metadata.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(bad("no general.architecture in the metadata".into())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            content,
            arch,
        })
    }

    fn err(&self, reason: impl Into<String>) -> ServeError {
        ServeError::Gguf {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn arch_usize(&self, key: &str) -> Result<usize> {
        let k = format!("{}.{key}", self.arch);
        self.get(&k)
            .and_then(md_usize)
            .ok_or_else(|| self.err(format!("missing or non-integer metadata `{k}`")))
    }

    fn arch_f64(&self, key: &str) -> Option<f64> {
        self.get(&format!("{}.{key}", self.arch)).and_then(md_f64)
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.err(format!("`{key}` holds a non-string"))),
                })
                .collect(),
            _ => Err(self.err(format!("missing string array `{key}`"))),
        }
    }

    /// The shapes of the attention projections.
    pub fn shape(&self) -> Result<ModelShape> {
        let hidden = self.arch_usize("embedding_length")?;
        let heads = self.arch_usize("attention.head_count")?;
        let kv_heads = self.arch_usize("attention.head_count_kv").unwrap_or(heads);
        if heads == 0 || kv_heads == 0 {
            return Err(self.err("zero attention heads"));
        }
        let head_dim = self
            .arch_usize("attention.key_length")
            .unwrap_or(hidden / heads);
        Ok(ModelShape {
            hidden,
            heads,
            kv_heads,
            head_dim,
            layers: self.arch_usize("block_count")?,
        })
    }

    fn vocab_size(&self) -> Result<usize> {
        if let Ok(n) = self.arch_usize("vocab_size") {
            return Ok(n);
        }
        let info = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .ok_or_else(|| self.err("no token_embd.weight tensor"))?;
        // GGUF lists dimensions innermost first; candle reverses them to (vocab, hidden).
        info.shape
            .dims()
            .first()
            .copied()
            .ok_or_else(|| self.err("token_embd.weight has no dimensions"))
    }

    /// The Hugging Face config.json for this model.
    fn config_json(&self) -> Result<Json> {
        let s = self.shape()?;
        let (hf_arch, model_type) = match self.arch.as_str() {
            "llama" => ("LlamaForCausalLM", "llama"),
            "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
            other => {
                return Err(self.err(format!(
                    "architecture `{other}` cannot carry an adapter here (llama and qwen2 can)"
                )));
            }
        };
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        let mut cfg = json!({
            "architectures": [hf_arch],
            "model_type": model_type,
            "hidden_act": "silu",
            "hidden_size": s.hidden,
            "intermediate_size": self.arch_usize("feed_forward_length")?,
            "num_hidden_layers": s.layers,
            "num_attention_heads": s.heads,
            "num_key_value_heads": s.kv_heads,
            "head_dim": s.head_dim,
            "rms_norm_eps": self.arch_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            "rope_theta": self.arch_f64("rope.freq_base").unwrap_or(10000.0),
            "max_position_embeddings": self.arch_usize("context_length").unwrap_or(2048),
            "vocab_size": self.vocab_size()?,
            "tie_word_embeddings": tied,
            "torch_dtype": "float32",
        });
        if let Some(id) = self.get("tokenizer.ggml.bos_token_id").and_then(md_usize) {
            cfg["bos_token_id"] = json!(id);
        }
        if let Some(id) = self.get("tokenizer.ggml.eos_token_id").and_then(md_usize) {
            cfg["eos_token_id"] = json!(id);
        }
        Ok(cfg)
    }

    /// tokenizer.json, tokenizer_config.json and generation_config.json from the GGUF's
    /// `tokenizer.ggml.*` metadata (byte-level BPE only).
    fn tokenizer_files(&self) -> Result<(Json, Json, Json)> {
        let model = match self.get("tokenizer.ggml.model") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(self.err("no tokenizer.ggml.model in the metadata")),
        };
        if model != "gpt2" {
            return Err(self.err(format!(
                "tokenizer model `{model}` is not byte-level BPE; pass a tokenizer.json"
            )));
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types: Vec<usize> = match self.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a.iter().map(|v| md_usize(v).unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let pre = match self.get("tokenizer.ggml.pre") {
            Some(Value::String(s)) => s.as_str(),
            _ => "default",
        };
        let vocab: serde_json::Map<String, Json> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let added: Vec<Json> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
            .map(|(i, t)| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": types.get(i) == Some(&3)})
            })
            .collect();
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        let pre_tokenizer = match pre {
            "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            "llama-bpe" | "llama3" | "qwen2" | "smaug-bpe" | "deepseek-llm" => {
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex":
                        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
                     "behavior": "Isolated", "invert": false},
                    byte_level(false)]})
            }
            _ => byte_level(true),
        };
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": byte_level(false),
            "decoder": byte_level(true),
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let tok = |key: &str| {
            self.get(key)
                .and_then(md_usize)
                .and_then(|i| tokens.get(i).cloned())
        };
        let mut tcfg = json!({
            "model_max_length": self.arch_usize("context_length").unwrap_or(2048),
            "add_bos_token": false,
            "clean_up_tokenization_spaces": false,
            "tokenizer_class": "GPT2Tokenizer",
        });
        if let Some(Value::String(t)) = self.get("tokenizer.chat_template") {
            tcfg["chat_template"] = json!(t);
        }
        let mut gen_cfg = json!({});
        for (name, key) in [
            ("bos", "tokenizer.ggml.bos_token_id"),
            ("eos", "tokenizer.ggml.eos_token_id"),
            ("unk", "tokenizer.ggml.unknown_token_id"),
            ("pad", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(t) = tok(key) {
                tcfg[format!("{name}_token")] = json!(t);
            }
            if let Some(id) = self.get(key).and_then(md_usize) {
                gen_cfg[format!("{name}_token_id")] = json!(id);
            }
        }
        Ok((tokenizer, tcfg, gen_cfg))
    }

    /// Dequantises every tensor to f32 under its Hugging Face name.
    fn hf_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let s = self.shape()?;
        let f = fs::File::open(&self.path).map_err(io_err(&self.path))?;
        let mut r = BufReader::new(f);
        let permuted = self.arch == "llama";
        let mut out = HashMap::new();
        let mut names: Vec<&String> = self.content.tensor_infos.keys().collect();
        names.sort();
        for name in names {
            let Some(hf) = hf_name(name) else {
                // rope_freqs and similar llama.cpp-only tables.
                continue;
            };
            let q = self
                .content
                .tensor(&mut r, name, &Device::Cpu)
                .map_err(|e| self.err(format!("tensor {name}: {e}")))?;
            let mut t = q
                .dequantize(&Device::Cpu)
                .map_err(|e| self.err(format!("dequantising {name}: {e}")))?;
            if permuted && (name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight")) {
                let n_head = if name.ends_with("attn_q.weight") {
                    s.heads
                } else {
                    s.kv_heads
                };
                t = unpermute(&t, n_head).map_err(|e| self.err(format!("{name}: {e}")))?;
            }
            out.insert(hf, t);
        }
        if !out.contains_key("model.embed_tokens.weight") {
            return Err(self.err("no token_embd.weight tensor"));
        }
        Ok(out)
    }
}

/// Inverse of llama.cpp's `permute` of q/k rows: (heads, 2, hd/2, in) -> (heads, hd/2, 2, in).
fn unpermute(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if n_head == 0 || out % (2 * n_head) != 0 {
        candle_core::bail!("{out} rows do not split into {n_head} heads");
    }
    w.reshape((n_head, out / n_head / 2, 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?
        .contiguous()
}

fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// A key for the converted copy: the GGUF's path, size and modification time, and the
/// tokenizer override if any.
fn source_key(gguf: &Path, tokenizer: Option<&Path>) -> Result<String> {
    let mut h = Sha256::new();
    for p in std::iter::once(gguf).chain(tokenizer) {
        let canon = fs::canonicalize(p).map_err(io_err(p))?;
        let meta = fs::metadata(&canon).map_err(io_err(p))?;
        h.update(canon.to_string_lossy().as_bytes());
        h.update(meta.len().to_le_bytes());
        if let Ok(m) = meta.modified()
            && let Ok(d) = m.duration_since(std::time::UNIX_EPOCH)
        {
            h.update(d.as_nanos().to_le_bytes());
        }
        h.update([0]);
    }
    Ok(hex::encode(&h.finalize()[..12]))
}

fn write_json(dir: &Path, name: &str, v: &Json) -> Result<()> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(v).map_err(|e| ServeError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    let mut f = fs::File::create(&path).map_err(io_err(&path))?;
    f.write_all(text.as_bytes()).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))
}

/// Converts `gguf` (once; later calls reuse the copy) into a Hugging Face folder under
/// `cache_root` and returns the folder. A given `tokenizer` (a tokenizer.json) replaces the
/// one rebuilt from the GGUF metadata.
pub fn gguf_to_hf(gguf: &Path, tokenizer: Option<&Path>, cache_root: &Path) -> Result<PathBuf> {
    let dir = cache_root.join(format!("gguf-{}", source_key(gguf, tokenizer)?));
    if CONVERTED_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(dir);
    }
    let header = GgufHeader::read(gguf)?;
    let config = header.config_json()?;
    let (tok_json, tok_cfg, gen_cfg) = match tokenizer {
        Some(t) => {
            let (_, tcfg, gcfg) = header
                .tokenizer_files()
                .unwrap_or_else(|_| (Json::Null, json!({}), json!({})));
            let text = fs::read_to_string(t).map_err(io_err(t))?;
            let v: Json = serde_json::from_str(&text).map_err(|e| ServeError::Tokenizer {
                path: t.to_path_buf(),
                reason: e.to_string(),
            })?;
            (v, tcfg, gcfg)
        }
        None => header.tokenizer_files()?,
    };
    let tensors = header.hf_tensors()?;

    fs::create_dir_all(cache_root).map_err(io_err(cache_root))?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = cache_root.join(format!(
        ".tmp-{}-{seq}-{}",
        std::process::id(),
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    write_json(&tmp, "config.json", &config)?;
    write_json(&tmp, "tokenizer.json", &tok_json)?;
    write_json(&tmp, "tokenizer_config.json", &tok_cfg)?;
    write_json(&tmp, "generation_config.json", &gen_cfg)?;
    let st = tmp.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &st).map_err(|e| ServeError::Io {
        path: st.clone(),
        source: std::io::Error::other(e),
    })?;
    fs::File::open(&st)
        .and_then(|f| f.sync_all())
        .map_err(io_err(&st))?;
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another loader finished the same conversion first.
        Err(_) if CONVERTED_FILES.iter().all(|f| dir.join(f).is_file()) => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(ServeError::Io {
            path: dir,
            source: e,
        }),
    }
}

/// Whether `path` looks like a GGUF file (by its magic bytes).
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| {
            f.rewind()?;
            std::io::Read::read_exact(&mut f, &mut magic)
        })
        .is_ok()
        && &magic == b"GGUF"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // permute (llama.cpp): (h, hd/2, 2, in) view of HF rows -> (h, 2, hd/2, in).
        let (h, hd, inp) = (2usize, 4usize, 3usize);
        let hf = Tensor::arange(0f32, (h * hd * inp) as f32, &Device::Cpu)
            .and_then(|t| t.reshape((h * hd, inp)))
            .expect("tensor");
        let permuted = hf
            .reshape((h, 2, hd / 2, inp))
            .and_then(|t| t.transpose(1, 2))
            .and_then(|t| t.reshape((h * hd, inp)))
            .expect("permute");
        let back = unpermute(&permuted, h).expect("unpermute");
        let a: Vec<Vec<f32>> = back.to_vec2().expect("vec");
        let b: Vec<Vec<f32>> = hf.to_vec2().expect("vec");
        assert_eq!(a, b);
    }

    #[test]
    fn gguf_names_map_to_hf_names() {
        assert_eq!(
            hf_name("blk.12.attn_output.weight").as_deref(),
            Some("model.layers.12.self_attn.o_proj.weight")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}
