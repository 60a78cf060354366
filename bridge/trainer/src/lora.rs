//! LoRA parameters on the q, k, v and o projections of every layer.

use candle_core::{DType, Device, Tensor, Var};

use crate::adapter::LoraWeights;
use crate::error::{Result, TensorContext, TrainerError};
use crate::model::ModelConfig;

/// Module names, in the order of `LayerWeights::proj`.
pub const TARGET_MODULES: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

/// A small deterministic generator (SplitMix64), so runs are reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-bound, bound).
    pub fn uniform(&mut self, bound: f64) -> f64 {
        (self.next_f64() * 2.0 - 1.0) * bound
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One adapted projection: `y += scale · (x·Aᵀ)·Bᵀ`, A (r, in), B (out, r).
#[derive(Debug)]
pub struct LoraPair {
    pub a: Var,
    pub b: Var,
}

/// Trainable LoRA parameters for a whole decoder.
#[derive(Debug)]
pub struct LoraSet {
    pub rank: usize,
    pub alpha: f64,
    /// Per layer, [q, k, v, o].
    pub layers: Vec<[LoraPair; 4]>,
}

impl LoraSet {
    /// PEFT's initialisation: A uniform in ±1/√in (kaiming-uniform with a=√5), B zero, so
    /// the adapter starts as the identity.
    pub fn init(
        cfg: &ModelConfig,
        rank: usize,
        alpha: f64,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if rank == 0 {
            return Err(TrainerError::Request("LoRA rank must be at least 1".into()));
        }
        let mut rng = SplitMix64::new(seed);
        let shapes = cfg.proj_shapes();
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            let mut pair = |j: usize| -> Result<LoraPair> {
                let (out, inp) = shapes[j];
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f64> = (0..rank * inp).map(|_| rng.uniform(bound)).collect();
                let a = Tensor::from_vec(a, (rank, inp), device)
                    .and_then(|t| t.to_dtype(dtype))
                    .ctx("initialising LoRA A")?;
                let b = Tensor::zeros((out, rank), dtype, device).ctx("initialising LoRA B")?;
                Ok(LoraPair {
                    a: Var::from_tensor(&a).ctx("LoRA A var")?,
                    b: Var::from_tensor(&b).ctx("LoRA B var")?,
                })
            };
            layers.push([pair(0)?, pair(1)?, pair(2)?, pair(3)?]);
        }
        Ok(Self {
            rank,
            alpha,
            layers,
        })
    }

    /// Trainable copies of stored weights (checked against the model's shapes).
    pub fn from_weights(
        w: &LoraWeights,
        cfg: &ModelConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        w.check_compatible(cfg)?;
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let mk = |t: &Tensor| -> Result<Var> {
                let t = t
                    .to_device(device)
                    .and_then(|t| t.to_dtype(dtype))
                    .ctx("loading LoRA weights")?;
                Var::from_tensor(&t).ctx("LoRA var")
            };
            let p = |j: usize| -> Result<LoraPair> {
                Ok(LoraPair {
                    a: mk(&l[j].0)?,
                    b: mk(&l[j].1)?,
                })
            };
            layers.push([p(0)?, p(1)?, p(2)?, p(3)?]);
        }
        Ok(Self {
            rank: w.rank,
            alpha: w.alpha,
            layers,
        })
    }

    /// Plain f32 CPU copies, ready to be written as a PEFT adapter.
    pub fn to_weights(&self) -> Result<LoraWeights> {
        let cp = |v: &Var| -> Result<Tensor> {
            v.as_tensor()
                .detach()
                .to_device(&Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.contiguous())
                .ctx("copying LoRA weights")
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let p = |j: usize| -> Result<(Tensor, Tensor)> { Ok((cp(&l[j].a)?, cp(&l[j].b)?)) };
            layers.push([p(0)?, p(1)?, p(2)?, p(3)?]);
        }
        Ok(LoraWeights {
            rank: self.rank,
            alpha: self.alpha,
            layers,
        })
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Every variable, A then B, layer by layer.
    pub fn vars(&self) -> Vec<&Var> {
        self.layers
            .iter()
            .flat_map(|l| l.iter().flat_map(|p| [&p.a, &p.b]))
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }
}
