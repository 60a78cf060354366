//! PEFT-format LoRA adapters: `adapter_config.json` + `adapter_model.safetensors` with PEFT key
//! names, loadable by mistral.rs, PEFT, vLLM and Ollama.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};
use crate::lora::TARGET_MODULES;
use crate::model::ModelConfig;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The fields of PEFT's `adapter_config.json` that matter here (others are kept on read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub task_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub inference_mode: bool,
}

fn default_bias() -> String {
    "none".into()
}

/// LoRA weights as plain tensors: per layer, [(A, B)] for q, k, v, o; A (r, in), B (out, r).
#[derive(Debug, Clone)]
pub struct LoraWeights {
    pub rank: usize,
    pub alpha: f64,
    pub layers: Vec<[(Tensor, Tensor); 4]>,
}

/// PEFT key of one LoRA matrix.
pub fn peft_key(layer: usize, module: &str, which: char) -> String {
    format!("base_model.model.model.layers.{layer}.self_attn.{module}.lora_{which}.weight")
}

/// Per module of one layer: (lora_A, lora_B) as found while reading.
type ModuleSlots = [(Option<Tensor>, Option<Tensor>); 4];

fn fsync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainerError::io(path, e))
}

impl LoraWeights {
    /// Checks that the adapter fits a model: layer count, rank and every shape.
    pub fn check_compatible(&self, cfg: &ModelConfig) -> Result<()> {
        let bad = |r: String| Err(TrainerError::adapter("<in memory>", r));
        if self.layers.len() != cfg.num_layers {
            return bad(format!(
                "adapter has {} layers, the model {}",
                self.layers.len(),
                cfg.num_layers
            ));
        }
        let shapes = cfg.proj_shapes();
        for (i, l) in self.layers.iter().enumerate() {
            for (j, (a, b)) in l.iter().enumerate() {
                let (out, inp) = shapes[j];
                if a.dims() != [self.rank, inp] || b.dims() != [out, self.rank] {
                    return bad(format!(
                        "layer {i} {}: A {:?} and B {:?} do not fit (r={}, in={inp}, out={out})",
                        TARGET_MODULES[j],
                        a.dims(),
                        b.dims(),
                        self.rank
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tensors under their PEFT names (f32, contiguous, CPU).
    pub fn peft_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (j, (a, b)) in l.iter().enumerate() {
                let prep = |t: &Tensor| {
                    t.to_device(&Device::Cpu)
                        .and_then(|t| t.to_dtype(DType::F32))
                        .and_then(|t| t.contiguous())
                        .map_err(|e| TrainerError::adapter("<in memory>", e.to_string()))
                };
                m.insert(peft_key(i, TARGET_MODULES[j], 'A'), prep(a)?);
                m.insert(peft_key(i, TARGET_MODULES[j], 'B'), prep(b)?);
            }
        }
        Ok(m)
    }

    pub fn config(&self, base_model: &str) -> AdapterConfig {
        AdapterConfig {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r: self.rank,
            lora_alpha: self.alpha,
            target_modules: TARGET_MODULES.iter().map(|s| s.to_string()).collect(),
            base_model_name_or_path: Some(base_model.to_string()),
            lora_dropout: 0.0,
            bias: "none".into(),
            fan_in_fan_out: false,
            use_rslora: false,
            inference_mode: true,
        }
    }

    /// Writes the two PEFT files into an existing folder and fsyncs them.
    pub fn write_peft(&self, dir: &Path, base_model: &str) -> Result<()> {
        let cfg_path = dir.join(CONFIG_FILE);
        let json = serde_json::to_vec_pretty(&self.config(base_model)).map_err(|source| {
            TrainerError::Json {
                path: cfg_path.clone(),
                source,
            }
        })?;
        let mut f = File::create(&cfg_path).map_err(|e| TrainerError::io(&cfg_path, e))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(|e| TrainerError::io(&cfg_path, e))?;
        let w_path = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&self.peft_tensors()?, &w_path)
            .map_err(|e| TrainerError::adapter(&w_path, format!("cannot write: {e}")))?;
        fsync_file(&w_path)
    }

    /// Reads a PEFT adapter folder written by us or by PEFT (q/k/v/o LoRA only).
    pub fn read_peft(dir: &Path) -> Result<(Self, AdapterConfig)> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| TrainerError::adapter(dir, format!("cannot read {CONFIG_FILE}: {e}")))?;
        let cfg: AdapterConfig = serde_json::from_str(&text).map_err(|e| {
            TrainerError::adapter(dir, format!("{CONFIG_FILE} is not a PEFT LoRA config: {e}"))
        })?;
        if cfg.peft_type != "LORA" {
            return Err(TrainerError::adapter(
                dir,
                format!("peft_type {} is not LORA", cfg.peft_type),
            ));
        }
        if cfg.r == 0 {
            return Err(TrainerError::adapter(dir, "rank r is 0"));
        }
        if cfg.use_rslora || cfg.fan_in_fan_out {
            return Err(TrainerError::adapter(
                dir,
                "rsLoRA and fan_in_fan_out adapters are not supported",
            ));
        }
        let w_path = dir.join(WEIGHTS_FILE);
        if !w_path.is_file() {
            return Err(TrainerError::adapter(
                dir,
                format!("{WEIGHTS_FILE} is missing"),
            ));
        }
        let tensors = candle_core::safetensors::load(&w_path, &Device::Cpu).map_err(|e| {
            TrainerError::adapter(dir, format!("{WEIGHTS_FILE} is unreadable or corrupt: {e}"))
        })?;
        // layer -> module -> (A, B)
        let mut found: HashMap<usize, ModuleSlots> = HashMap::new();
        for (key, t) in tensors {
            let rest = key
                .strip_prefix("base_model.model.")
                .unwrap_or(&key)
                .strip_prefix("model.layers.");
            let Some(rest) = rest else {
                return Err(TrainerError::adapter(
                    dir,
                    format!("unexpected tensor {key}"),
                ));
            };
            let parts: Vec<&str> = rest.split('.').collect();
            let parsed = match parts.as_slice() {
                [i, "self_attn", m, ab, "weight"] => i
                    .parse::<usize>()
                    .ok()
                    .zip(TARGET_MODULES.iter().position(|x| x == m))
                    .zip(match *ab {
                        "lora_A" => Some(0),
                        "lora_B" => Some(1),
                        _ => None,
                    }),
                _ => None,
            };
            let Some(((layer, module), which)) = parsed else {
                return Err(TrainerError::adapter(
                    dir,
                    format!("tensor {key} is not a LoRA A/B of q/k/v/o_proj"),
                ));
            };
            let t = t
                .to_dtype(DType::F32)
                .map_err(|e| TrainerError::adapter(dir, e.to_string()))?;
            let slot = &mut found.entry(layer).or_default()[module];
            if which == 0 {
                slot.0 = Some(t);
            } else {
                slot.1 = Some(t);
            }
        }
        let n_layers = found.keys().max().map(|m| m + 1).unwrap_or(0);
        if n_layers == 0 {
            return Err(TrainerError::adapter(dir, "no LoRA tensors"));
        }
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let Some(l) = found.remove(&i) else {
                return Err(TrainerError::adapter(
                    dir,
                    format!("layer {i} has no LoRA tensors"),
                ));
            };
            let mut out: Vec<(Tensor, Tensor)> = Vec::with_capacity(4);
            for (j, (a, b)) in l.into_iter().enumerate() {
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(TrainerError::adapter(
                        dir,
                        format!("layer {i} {} lacks lora_A or lora_B", TARGET_MODULES[j]),
                    ));
                };
                let ok =
                    a.rank() == 2 && b.rank() == 2 && a.dims()[0] == cfg.r && b.dims()[1] == cfg.r;
                if !ok {
                    return Err(TrainerError::adapter(
                        dir,
                        format!(
                            "layer {i} {}: shapes A {:?}, B {:?} do not match r={}",
                            TARGET_MODULES[j],
                            a.dims(),
                            b.dims(),
                            cfg.r
                        ),
                    ));
                }
                out.push((a, b));
            }
            let arr: [(Tensor, Tensor); 4] = out
                .try_into()
                .map_err(|_| TrainerError::adapter(dir, "internal: wrong module count"))?;
            layers.push(arr);
        }
        Ok((
            Self {
                rank: cfg.r,
                alpha: cfg.lora_alpha,
                layers,
            },
            cfg,
        ))
    }
}
