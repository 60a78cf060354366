//! AdamW over LoRA variables, and global gradient-norm clipping.

use candle_core::{DType, Tensor, Var};

use crate::error::{Result, TensorContext};
use crate::preset::HyperParams;

/// Global L2 norm of gradients.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads {
        sq += g
            .sqr()
            .and_then(|t| t.sum_all())
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_scalar::<f64>())
            .ctx("gradient norm")?;
    }
    Ok(sq.sqrt())
}

/// Scales gradients so that their global norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    if norm.is_finite() && norm > max_norm {
        let c = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * c).ctx("clipping gradients")?;
        }
    }
    Ok(norm)
}

/// AdamW over LoRA variables with summed (accumulated) gradients.
pub struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
}

impl AdamW {
    pub fn new(vars: &[&Var]) -> Result<Self> {
        let z = |v: &&Var| v.zeros_like().ctx("optimiser state");
        Ok(Self {
            m: vars.iter().map(z).collect::<Result<_>>()?,
            v: vars.iter().map(z).collect::<Result<_>>()?,
            t: 0,
        })
    }

    /// One update with (already accumulated and clipped) gradients, in `vars` order.
    pub fn step(&mut self, vars: &[&Var], grads: &[Tensor], h: &HyperParams) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - h.beta1.powi(self.t);
        let bc2 = 1.0 - h.beta2.powi(self.t);
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            let mut run = || -> candle_core::Result<()> {
                let m = ((&self.m[i] * h.beta1)? + (g * (1.0 - h.beta1))?)?;
                let v = ((&self.v[i] * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
                let upd = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + h.adam_eps)?)?;
                let mut theta = var.as_tensor().detach();
                if h.weight_decay > 0.0 {
                    theta = (&theta * (1.0 - h.lr * h.weight_decay))?;
                }
                var.set(&(theta - (upd * h.lr)?)?)?;
                self.m[i] = m;
                self.v[i] = v;
                Ok(())
            };
            run().ctx("optimiser step")?;
        }
        Ok(())
    }
}
