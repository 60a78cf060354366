//! Adapters trained elsewhere (PEFT, TRL, Unsloth on a GPU host): read a PEFT LoRA folder and
//! check that it fits the base model — the base recorded in `adapter_config.json`, the tensor
//! names, every shape — before anything is written.
//!
//! Accepted: `peft_type` LORA for CAUSAL_LM on any subset of q/k/v/o_proj (modules and layers
//! the adapter does not train become zero, which changes nothing), in f32, f16 or bf16, with
//! plain or rank-stabilised (rsLoRA) scaling. Anything else is refused with the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::Value;

use crate::adapter::{CONFIG_FILE, LoraWeights, WEIGHTS_FILE};
use crate::lora::TARGET_MODULES;
use crate::model::LoadedModel;

/// Why an adapter folder cannot be served on this base model.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("{path}: {what}")]
    Unreadable { path: PathBuf, what: String },
    #[error("{path}: not a PEFT LoRA adapter: {what}")]
    NotLora { path: PathBuf, what: String },
    #[error("{path}: unsupported adapter: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error(
        "{path}: the adapter was trained on {recorded:?} but the base model here is {model:?} ({model_path}); pass the matching model with --model, or --any-base if they are the same weights under another name"
    )]
    OtherBase {
        path: PathBuf,
        recorded: String,
        model: String,
        model_path: PathBuf,
    },
    #[error("{path}: tensor {key} is not a LoRA A/B weight of q/k/v/o_proj in a decoder layer")]
    UnknownTensor { path: PathBuf, key: String },
    #[error("{path}: tensor {key} is for layer {layer}, but the base model has {layers} layers")]
    NoSuchLayer {
        path: PathBuf,
        key: String,
        layer: usize,
        layers: usize,
    },
    #[error("{path}: tensor {key} has shape {found:?}; the base model needs {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: {what}")]
    Incomplete { path: PathBuf, what: String },
}

/// An adapter from elsewhere that fits the base model.
#[derive(Debug, Clone)]
pub struct ForeignAdapter {
    /// All four projections of every layer; untrained ones are zero.
    pub weights: LoraWeights,
    pub info: ForeignInfo,
}

/// What is recorded about an imported adapter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForeignInfo {
    pub from: PathBuf,
    /// `base_model_name_or_path` as the adapter recorded it.
    pub base_model_name_or_path: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    /// The modules it trains, in q, k, v, o order.
    pub target_modules: Vec<String>,
    /// Layers with at least one trained module.
    pub layers_trained: usize,
    pub tensors: usize,
    /// The stored dtype of the weights (F32, F16, BF16).
    pub dtype: String,
    pub peft_version: Option<String>,
}

/// A model name reduced to what identifies the weights: the last path segment, lower case,
/// without a `.gguf` extension or a quantisation suffix, with spaces and underscores as dashes.
pub fn normalise_model_name(name: &str) -> String {
    let last = name
        .trim()
        .trim_end_matches('/')
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut s = last
        .strip_suffix(".gguf")
        .unwrap_or(&last)
        .replace([' ', '_'], "-");
    // "smollm2-135m-instruct.q4-1", "model-q4-k-m", "model-gguf"
    if let Some(i) = s.rfind('.') {
        let tail = &s[i + 1..];
        let digits = ["iq", "bf", "q", "f"]
            .iter()
            .find_map(|p| tail.strip_prefix(p))
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if digits {
            s.truncate(i);
        }
    }
    for suffix in [
        "-gguf", "-q4-k-m", "-q4-0", "-q4-1", "-q5-k-m", "-q8-0", "-f16", "-bf16",
    ] {
        if let Some(t) = s.strip_suffix(suffix) {
            s = t.to_string();
        }
    }
    s
}

/// The names the base model here answers to: its own name and its file or folder name.
fn model_names(model: &LoadedModel) -> Vec<String> {
    let mut names = vec![normalise_model_name(&model.name)];
    let p = model.source.path();
    if let Some(stem) = p.file_name() {
        names.push(normalise_model_name(&stem.to_string_lossy()));
    }
    names.retain(|n| !n.is_empty());
    names
}

fn unsupported(path: &Path, what: impl Into<String>) -> FitError {
    FitError::Unsupported {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Parsed `adapter_config.json`, checked.
struct Config {
    r: usize,
    alpha: f64,
    rslora: bool,
    modules: Vec<usize>,
    base: Option<String>,
    peft_version: Option<String>,
}

fn read_config(dir: &Path) -> Result<Config, FitError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| FitError::Unreadable {
        path: dir.to_path_buf(),
        what: format!("cannot read {CONFIG_FILE}: {e}"),
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| FitError::NotLora {
        path: path.clone(),
        what: format!("not JSON: {e}"),
    })?;
    let not_lora = |what: String| FitError::NotLora {
        path: path.clone(),
        what,
    };
    match v.get("peft_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("lora") => {}
        Some(t) => return Err(not_lora(format!("peft_type is {t}, not LORA"))),
        None => return Err(not_lora("peft_type is missing".into())),
    }
    if let Some(t) = v.get("task_type").and_then(Value::as_str)
        && t != "CAUSAL_LM"
    {
        return Err(unsupported(
            &path,
            format!("task_type is {t}; only CAUSAL_LM adapters fit a chat model"),
        ));
    }
    let r = v
        .get("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| not_lora("r (the LoRA rank) is missing or not a positive integer".into()))?
        as usize;
    let alpha = v
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .filter(|a| a.is_finite() && *a > 0.0)
        .ok_or_else(|| not_lora("lora_alpha is missing or not a positive number".into()))?;
    for (key, what) in [
        ("use_dora", "DoRA (use_dora)"),
        ("fan_in_fan_out", "transposed weights (fan_in_fan_out)"),
        ("lora_bias", "LoRA biases (lora_bias)"),
        (
            "modules_to_save",
            "fully trained extra modules (modules_to_save)",
        ),
        ("rank_pattern", "per-module ranks (rank_pattern)"),
        ("alpha_pattern", "per-module alphas (alpha_pattern)"),
        ("layer_replication", "layer replication"),
        ("trainable_token_indices", "trained token embeddings"),
        ("target_parameters", "target_parameters"),
    ] {
        if is_set(v.get(key)) {
            return Err(unsupported(&path, format!("{what} is not supported")));
        }
    }
    if let Some(b) = v.get("bias").and_then(Value::as_str)
        && b != "none"
    {
        return Err(unsupported(
            &path,
            format!("bias = {b:?}: trained biases are not supported (only \"none\")"),
        ));
    }
    let targets: Vec<String> = match v.get("target_modules") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|m| m.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| not_lora("target_modules holds something other than names".into()))?,
        Some(Value::String(s)) => {
            return Err(unsupported(
                &path,
                format!(
                    "target_modules = {s:?}; name the modules (q_proj, k_proj, v_proj, o_proj)"
                ),
            ));
        }
        _ => return Err(not_lora("target_modules is missing".into())),
    };
    let mut modules = Vec::new();
    for t in &targets {
        let short = t.rsplit('.').next().unwrap_or(t);
        match TARGET_MODULES.iter().position(|m| *m == short) {
            Some(j) if !modules.contains(&j) => modules.push(j),
            Some(_) => {}
            None => {
                return Err(unsupported(
                    &path,
                    format!(
                        "it trains {t}; rlclaw serves LoRA on the attention projections only (q_proj, k_proj, v_proj, o_proj)"
                    ),
                ));
            }
        }
    }
    if modules.is_empty() {
        return Err(not_lora("target_modules is empty".into()));
    }
    modules.sort_unstable();
    Ok(Config {
        r,
        alpha,
        rslora: v
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        modules,
        base: v
            .get("base_model_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|s| !s.trim().is_empty()),
        peft_version: v
            .get("peft_version")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// `base_model.model.model.layers.{i}.self_attn.{m}.lora_{A|B}[.default].weight` → (i, m, is_b).
fn parse_key(key: &str) -> Option<(usize, usize, bool)> {
    let rest = key.strip_prefix("base_model.model.").unwrap_or(key);
    let rest = rest.strip_prefix("model.layers.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    let (i, m, ab) = match parts.as_slice() {
        [i, "self_attn", m, ab, "weight"] => (i, m, ab),
        [i, "self_attn", m, ab, "default", "weight"] => (i, m, ab),
        _ => return None,
    };
    let layer = i.parse().ok()?;
    let module = TARGET_MODULES.iter().position(|x| x == m)?;
    let b = match *ab {
        "lora_A" => false,
        "lora_B" => true,
        _ => return None,
    };
    Some((layer, module, b))
}

/// Reads a PEFT adapter folder and checks it against the base model. Nothing is written.
/// `any_base` accepts a different recorded base name (the shapes are still checked).
pub fn read_foreign_adapter(
    dir: &Path,
    model: &LoadedModel,
    any_base: bool,
) -> Result<ForeignAdapter, FitError> {
    if !dir.is_dir() {
        return Err(FitError::Unreadable {
            path: dir.to_path_buf(),
            what: "no such folder".into(),
        });
    }
    let cfg = read_config(dir)?;
    if let Some(recorded) = &cfg.base
        && !any_base
    {
        let want = normalise_model_name(recorded);
        if !model_names(model).contains(&want) {
            return Err(FitError::OtherBase {
                path: dir.to_path_buf(),
                recorded: recorded.clone(),
                model: model.name.clone(),
                model_path: model.source.path().to_path_buf(),
            });
        }
    }
    let w_path = dir.join(WEIGHTS_FILE);
    if !w_path.is_file() {
        return Err(FitError::Unreadable {
            path: dir.to_path_buf(),
            what: format!("{WEIGHTS_FILE} is missing"),
        });
    }
    let tensors = candle_core::safetensors::load(&w_path, &Device::Cpu).map_err(|e| {
        FitError::Unreadable {
            path: w_path.clone(),
            what: format!("unreadable or corrupt safetensors: {e}"),
        }
    })?;
    if tensors.is_empty() {
        return Err(FitError::Incomplete {
            path: w_path,
            what: "it holds no tensors".into(),
        });
    }
    let mc = &model.config;
    let shapes = mc.proj_shapes();
    let mut slots: HashMap<(usize, usize), (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    let mut dtypes: Vec<DType> = Vec::new();
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    for key in keys {
        let t = &tensors[key];
        let Some((layer, module, is_b)) = parse_key(key) else {
            return Err(FitError::UnknownTensor {
                path: w_path,
                key: key.clone(),
            });
        };
        if layer >= mc.num_layers {
            return Err(FitError::NoSuchLayer {
                path: w_path,
                key: key.clone(),
                layer,
                layers: mc.num_layers,
            });
        }
        if !cfg.modules.contains(&module) {
            return Err(FitError::Incomplete {
                path: w_path,
                what: format!(
                    "tensor {key} is for {}, which target_modules does not list",
                    TARGET_MODULES[module]
                ),
            });
        }
        let (out, inp) = shapes[module];
        let expected = if is_b {
            vec![out, cfg.r]
        } else {
            vec![cfg.r, inp]
        };
        if t.dims() != expected.as_slice() {
            return Err(FitError::Shape {
                path: w_path,
                key: key.clone(),
                found: t.dims().to_vec(),
                expected,
            });
        }
        if !dtypes.contains(&t.dtype()) {
            dtypes.push(t.dtype());
        }
        let t = t.to_dtype(DType::F32).map_err(|e| FitError::Unreadable {
            path: w_path.clone(),
            what: format!("tensor {key} cannot be converted to f32: {e}"),
        })?;
        let slot = slots.entry((layer, module)).or_default();
        if is_b {
            slot.1 = Some(t);
        } else {
            slot.0 = Some(t);
        }
    }
    let mut layers = Vec::with_capacity(mc.num_layers);
    let mut trained_layers = 0;
    for i in 0..mc.num_layers {
        let mut pairs: Vec<(Tensor, Tensor)> = Vec::with_capacity(4);
        let mut any = false;
        for (j, &(out, inp)) in shapes.iter().enumerate() {
            let pair = match slots.remove(&(i, j)) {
                Some((Some(a), Some(b))) => {
                    any = true;
                    (a, b)
                }
                Some((a, _)) => {
                    let which = if a.is_some() { "lora_B" } else { "lora_A" };
                    return Err(FitError::Incomplete {
                        path: w_path,
                        what: format!("layer {i} {} has no {which}", TARGET_MODULES[j]),
                    });
                }
                None => {
                    let zero = |shape: (usize, usize)| {
                        Tensor::zeros(shape, DType::F32, &Device::Cpu).map_err(|e| {
                            FitError::Unreadable {
                                path: w_path.clone(),
                                what: format!("cannot fill an untrained module: {e}"),
                            }
                        })
                    };
                    (zero((cfg.r, inp))?, zero((out, cfg.r))?)
                }
            };
            pairs.push(pair);
        }
        trained_layers += usize::from(any);
        let arr: [(Tensor, Tensor); 4] = pairs.try_into().map_err(|_| FitError::Incomplete {
            path: w_path.clone(),
            what: "internal: wrong module count".into(),
        })?;
        layers.push(arr);
    }
    // rsLoRA scales by alpha/√r; as a plain LoRA that is alpha·√r over r.
    let alpha = if cfg.rslora {
        cfg.alpha * (cfg.r as f64).sqrt()
    } else {
        cfg.alpha
    };
    let weights = LoraWeights {
        rank: cfg.r,
        alpha,
        layers,
    };
    weights
        .check_compatible(mc)
        .map_err(|e| FitError::Incomplete {
            path: dir.to_path_buf(),
            what: e.to_string(),
        })?;
    Ok(ForeignAdapter {
        weights,
        info: ForeignInfo {
            from: dir.to_path_buf(),
            base_model_name_or_path: cfg.base,
            r: cfg.r,
            lora_alpha: cfg.alpha,
            use_rslora: cfg.rslora,
            target_modules: cfg
                .modules
                .iter()
                .map(|&j| TARGET_MODULES[j].to_string())
                .collect(),
            layers_trained: trained_layers,
            tensors: tensors.len(),
            dtype: dtypes
                .iter()
                .map(|d| format!("{d:?}").to_uppercase())
                .collect::<Vec<_>>()
                .join("+"),
            peft_version: cfg.peft_version,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_normalise_across_hubs_files_and_quantisations() {
        let n = normalise_model_name;
        assert_eq!(
            n("HuggingFaceTB/SmolLM2-135M-Instruct"),
            "smollm2-135m-instruct"
        );
        assert_eq!(
            n("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "smollm2-135m-instruct"
        );
        assert_eq!(n("/models/SmolLM2-135M-Instruct/"), "smollm2-135m-instruct");
        assert_eq!(n("Qwen2.5-0.5B-Instruct-GGUF"), "qwen2.5-0.5b-instruct");
        assert_eq!(n("Smollm2 135M 8k"), "smollm2-135m-8k");
        assert_eq!(n("my.final"), "my.final");
        assert_ne!(
            n("HuggingFaceTB/SmolLM2-360M-Instruct"),
            n("SmolLM2-135M-Instruct")
        );
    }

    #[test]
    fn peft_keys_parse_with_and_without_the_adapter_name() {
        assert_eq!(
            parse_key("base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight"),
            Some((3, 2, true))
        );
        assert_eq!(
            parse_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"),
            Some((0, 0, false))
        );
        assert_eq!(
            parse_key("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"),
            None
        );
        assert_eq!(parse_key("base_model.model.lm_head.weight"), None);
    }
}
