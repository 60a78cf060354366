//! PEFT adapter folders: checking them against the model, and handing them to mistral.rs.
//!
//! mistral.rs 0.8.1 reads LoRA adapters only through the Hugging Face hub client, which looks
//! in the hub cache before going online. A local adapter therefore gets a cache entry of its
//! own (`models--rlclaw-local--adapter-<hash>/snapshots/<hash>/...` with `refs/main`), named
//! by a hash of its content so that a changed adapter never reuses a stale entry.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::convert::ModelShape;
use crate::error::{Result, ServeError, io_err};

pub(crate) const CONFIG_FILE: &str = "adapter_config.json";
pub(crate) const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The parts of adapter_config.json that mistral.rs uses, plus PEFT's type fields.
#[derive(Debug, Clone, Deserialize)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub peft_type: Option<String>,
    #[serde(default)]
    pub use_dora: Option<bool>,
    #[serde(default)]
    pub use_rslora: Option<bool>,
}

/// A checked adapter: its config and the hash of its two files.
#[derive(Debug, Clone)]
pub struct CheckedAdapter {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    pub hash: String,
    pub tensors: usize,
    /// The bytes of adapter_config.json and adapter_model.safetensors as checked.
    bytes: std::sync::Arc<(Vec<u8>, Vec<u8>)>,
}

fn malformed(dir: &Path, reason: impl Into<String>) -> ServeError {
    ServeError::AdapterMalformed {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// Splits a PEFT key `base_model.model.model.layers.{i}.self_attn.{m}.lora_{A|B}.weight` (the
/// `base_model.model.` prefix is optional) into (layer, module, 'A' or 'B').
fn parse_key(key: &str) -> Option<(usize, &str, char)> {
    let k = key.strip_prefix("base_model.model.").unwrap_or(key);
    let k = k.strip_prefix("model.layers.")?;
    let (layer, rest) = k.split_once('.')?;
    let layer = layer.parse().ok()?;
    let rest = rest
        .strip_prefix("self_attn.")
        .or_else(|| rest.strip_prefix("mlp."))?;
    let (module, tail) = rest.split_once('.')?;
    let which = match tail {
        "lora_A.weight" => 'A',
        "lora_B.weight" => 'B',
        _ => return None,
    };
    Some((layer, module, which))
}

/// Checks an adapter folder on its own and, given the model's shapes, against the model.
pub fn check(dir: &Path, shape: Option<&ModelShape>) -> Result<CheckedAdapter> {
    if !dir.is_dir() {
        return Err(ServeError::AdapterMissing(dir.to_path_buf()));
    }
    let cfg_path = dir.join(CONFIG_FILE);
    let w_path = dir.join(WEIGHTS_FILE);
    let cfg_text = fs::read(&cfg_path)
        .map_err(|e| malformed(dir, format!("cannot read {CONFIG_FILE}: {e}")))?;
    let config: AdapterConfig = serde_json::from_slice(&cfg_text)
        .map_err(|e| malformed(dir, format!("{CONFIG_FILE}: {e}")))?;
    if config.r == 0 {
        return Err(malformed(dir, "rank r is 0"));
    }
    if !config.lora_alpha.is_finite() {
        return Err(malformed(dir, "lora_alpha is not a finite number"));
    }
    if config.target_modules.is_empty() {
        return Err(malformed(dir, "target_modules is empty"));
    }
    if let Some(t) = &config.peft_type
        && t != "LORA"
    {
        return Err(malformed(
            dir,
            format!("peft_type is {t}; only LORA merges"),
        ));
    }
    if config.use_dora == Some(true) || config.use_rslora == Some(true) {
        return Err(malformed(
            dir,
            "DoRA and rsLoRA adapters are not supported by the merge",
        ));
    }
    let weights = fs::read(&w_path)
        .map_err(|e| malformed(dir, format!("cannot read {WEIGHTS_FILE}: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&weights, &candle_core::Device::Cpu)
        .map_err(|e| malformed(dir, format!("{WEIGHTS_FILE}: {e}")))?;
    if tensors.is_empty() {
        return Err(malformed(dir, format!("{WEIGHTS_FILE} holds no tensors")));
    }
    let mut matched = 0usize;
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    for key in keys {
        let view = &tensors[key];
        let Some((layer, module, which)) = parse_key(key) else {
            return Err(malformed(
                dir,
                format!(
                    "tensor `{key}` is not a PEFT LoRA key (…layers.N.self_attn.M.lora_A/B.weight)"
                ),
            ));
        };
        if !config.target_modules.iter().any(|m| m == module) {
            return Err(malformed(
                dir,
                format!("tensor `{key}` is for `{module}`, which is not in target_modules"),
            ));
        }
        let dims = view.dims();
        if dims.len() != 2 {
            return Err(malformed(
                dir,
                format!("tensor `{key}` is not 2-D: {dims:?}"),
            ));
        }
        let rank_dim = if which == 'A' { dims[0] } else { dims[1] };
        if rank_dim != config.r {
            return Err(malformed(
                dir,
                format!("tensor `{key}` has shape {dims:?}; rank r is {}", config.r),
            ));
        }
        if let Some(s) = shape {
            let mismatch = |reason: String| ServeError::AdapterMismatch {
                path: dir.to_path_buf(),
                reason,
            };
            if layer >= s.layers {
                return Err(mismatch(format!(
                    "tensor `{key}` is for layer {layer}; the model has {} layers",
                    s.layers
                )));
            }
            if let Some((inp, out)) = s.proj_dims(module) {
                let want = if which == 'A' {
                    [config.r, inp]
                } else {
                    [out, config.r]
                };
                if dims != want {
                    return Err(mismatch(format!(
                        "tensor `{key}` has shape {dims:?}; the model needs {want:?}"
                    )));
                }
            }
        }
        let finite = view
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map(|v| v.iter().all(|x| x.is_finite()))
            .map_err(|e| malformed(dir, format!("tensor `{key}`: {e}")))?;
        if !finite {
            return Err(malformed(
                dir,
                format!("tensor `{key}` holds NaN or infinity"),
            ));
        }
        matched += 1;
    }
    if let Some(s) = shape {
        // mistral.rs merges into every linear whose name matches target_modules and fails
        // when one has no A/B pair, so every layer must carry every targeted module.
        for module in &config.target_modules {
            for layer in 0..s.layers {
                for w in ['A', 'B'] {
                    let found = tensors
                        .keys()
                        .any(|k| parse_key(k) == Some((layer, module.as_str(), w)));
                    if !found {
                        return Err(ServeError::AdapterMismatch {
                            path: dir.to_path_buf(),
                            reason: format!(
                                "no lora_{w} for `{module}` of layer {layer}; every layer of a \
                                 targeted module needs both matrices"
                            ),
                        });
                    }
                }
            }
        }
    }
    let mut h = Sha256::new();
    h.update((cfg_text.len() as u64).to_le_bytes());
    h.update(&cfg_text);
    h.update(&weights);
    Ok(CheckedAdapter {
        dir: dir.to_path_buf(),
        config,
        hash: hex::encode(&h.finalize()[..12]),
        tensors: matched,
        bytes: std::sync::Arc::new((cfg_text, weights)),
    })
}

/// The Hugging Face hub cache folder mistral.rs reads (HF_HUB_CACHE, else HF_HOME/hub, else
/// ~/.cache/huggingface/hub).
pub(crate) fn hub_cache_dir() -> PathBuf {
    mistralrs::core::hf_hub_cache_dir().unwrap_or_else(|| {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".cache").join("huggingface").join("hub")
    })
}

/// An adapter placed in the hub cache for one load; the entry is removed on drop.
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) id: String,
    repo: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.repo);
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Places the checked adapter's bytes (exactly those checked, even if the folder changed
/// since) in the hub cache under a name of its own, for one load.
pub(crate) fn stage(adapter: &CheckedAdapter, hub_cache: &Path) -> Result<Staged> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("adapter-{}-{}-{seq}", adapter.hash, std::process::id());
    let repo = hub_cache.join(format!("models--rlclaw-local--{name}"));
    let staged = Staged {
        id: format!("rlclaw-local/{name}"),
        repo: repo.clone(),
    };
    let snap = repo.join("snapshots").join(&adapter.hash);
    fs::create_dir_all(&snap).map_err(io_err(&snap))?;
    write_synced(&snap.join(CONFIG_FILE), &adapter.bytes.0)?;
    write_synced(&snap.join(WEIGHTS_FILE), &adapter.bytes.1)?;
    let refs = repo.join("refs");
    fs::create_dir_all(&refs).map_err(io_err(&refs))?;
    // The hub client reads the commit id verbatim: no trailing newline.
    write_synced(&refs.join("main"), adapter.hash.as_bytes())?;
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_keys_parse() {
        assert_eq!(
            parse_key("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some((3, "q_proj", 'A'))
        );
        assert_eq!(
            parse_key("model.layers.0.mlp.down_proj.lora_B.weight"),
            Some((0, "down_proj", 'B'))
        );
        assert_eq!(parse_key("lm_head.weight"), None);
    }
}
