//! AdamW over LoRA variables, and global gradient-norm clipping.
//!
//! The optimiser keeps its moments as one flat vector over all variables and updates them with
//! a handful of whole-vector ops: on a GPU, where each op is a kernel launch, a per-variable
//! update (about 16 ops for each of the 240 variables of a 30-layer model) cost more than the
//! forward pass.

use candle_core::{DType, Tensor, Var};

use crate::error::{Result, TensorContext, TrainerError};
use crate::preset::HyperParams;

/// All tensors flattened and concatenated, in order.
fn flat(ts: &[Tensor]) -> candle_core::Result<Tensor> {
    let parts = ts
        .iter()
        .map(|t| t.flatten_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// L2 norm of a flat vector, summed in f64, read back once.
fn norm_of(g: &Tensor) -> Result<f64> {
    let sq = g
        .to_dtype(DType::F64)
        .and_then(|t| t.sqr())
        .and_then(|t| t.sum_all())
        .and_then(|t| t.to_scalar::<f64>())
        .ctx("gradient norm")?;
    Ok(sq.sqrt())
}

/// Global L2 norm of gradients.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    if grads.is_empty() {
        return Ok(0.0);
    }
    norm_of(&flat(grads).ctx("gradient norm")?)
}

/// The factor that brings a gradient of norm `norm` to at most `max_norm`.
fn clip_factor(norm: f64, max_norm: f64) -> Option<f64> {
    (norm.is_finite() && norm > max_norm).then(|| max_norm / (norm + 1e-6))
}

/// Scales gradients so that their global norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    if let Some(c) = clip_factor(norm, max_norm) {
        for g in grads.iter_mut() {
            *g = (&*g * c).ctx("clipping gradients")?;
        }
    }
    Ok(norm)
}

/// AdamW over LoRA variables with summed (accumulated) gradients.
pub struct AdamW {
    /// First and second moments of all variables, flat, in `vars` order.
    m: Tensor,
    v: Tensor,
    sizes: Vec<usize>,
    t: i32,
}

impl AdamW {
    pub fn new(vars: &[&Var]) -> Result<Self> {
        let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
        let Some(first) = vars.first() else {
            return Err(TrainerError::Request("no variables to optimise".into()));
        };
        let z = Tensor::zeros(sizes.iter().sum::<usize>(), first.dtype(), first.device())
            .ctx("optimiser state")?;
        Ok(Self {
            m: z.clone(),
            v: z,
            sizes,
            t: 0,
        })
    }

    fn check(&self, vars: &[&Var], grads: &[Tensor]) -> Result<()> {
        let ok = vars.len() == self.sizes.len()
            && grads.len() == self.sizes.len()
            && vars
                .iter()
                .zip(grads)
                .zip(&self.sizes)
                .all(|((v, g), &n)| v.elem_count() == n && g.elem_count() == n);
        if ok {
            Ok(())
        } else {
            Err(TrainerError::Request(
                "optimiser: variables or gradients differ from those it was made for".into(),
            ))
        }
    }

    /// One update with (already accumulated and clipped) gradients, in `vars` order.
    pub fn step(&mut self, vars: &[&Var], grads: &[Tensor], h: &HyperParams) -> Result<()> {
        self.check(vars, grads)?;
        let g = flat(grads).ctx("optimiser step")?;
        self.step_flat(vars, &g, h)
    }

    /// Clips the gradients to a global norm of `h.grad_clip` and updates, with one pass over
    /// them; returns the norm before clipping. A norm that is not finite is returned without an
    /// update (the caller decides what a diverged step means).
    pub fn clip_and_step(
        &mut self,
        vars: &[&Var],
        grads: &[Tensor],
        h: &HyperParams,
    ) -> Result<f64> {
        self.check(vars, grads)?;
        let mut g = flat(grads).ctx("optimiser step")?;
        let norm = norm_of(&g)?;
        if !norm.is_finite() {
            return Ok(norm);
        }
        if let Some(c) = clip_factor(norm, h.grad_clip) {
            g = (g * c).ctx("clipping gradients")?;
        }
        self.step_flat(vars, &g, h)?;
        Ok(norm)
    }

    fn step_flat(&mut self, vars: &[&Var], g: &Tensor, h: &HyperParams) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - h.beta1.powi(self.t);
        let bc2 = 1.0 - h.beta2.powi(self.t);
        let run = || -> candle_core::Result<(Tensor, Tensor)> {
            let m = ((&self.m * h.beta1)? + (g * (1.0 - h.beta1))?)?;
            let v = ((&self.v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
            // lr · m̂ / (√v̂ + ε)
            let denom = v.affine(1.0 / bc2, 0.0)?.sqrt()?.affine(1.0, h.adam_eps)?;
            let upd = (m.affine(h.lr / bc1, 0.0)? / denom)?;
            let mut off = 0;
            for (var, &n) in vars.iter().zip(&self.sizes) {
                let u = upd.narrow(0, off, n)?.reshape(var.shape())?;
                let theta = var.as_tensor().detach();
                let theta = if h.weight_decay > 0.0 {
                    theta.affine(1.0 - h.lr * h.weight_decay, 0.0)?
                } else {
                    theta
                };
                var.set(&(theta - u)?)?;
                off += n;
            }
            Ok((m, v))
        };
        let (m, v) = run().ctx("optimiser step")?;
        self.m = m;
        self.v = v;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::{ModelProfile, Preset};
    use candle_core::Device;

    /// The textbook per-variable AdamW, for comparison.
    fn reference(
        theta: &[f64],
        grads: &[Vec<f64>],
        h: &HyperParams,
        clip: Option<f64>,
    ) -> Vec<f64> {
        let (mut th, mut m, mut v) = (
            theta.to_vec(),
            vec![0.0; theta.len()],
            vec![0.0; theta.len()],
        );
        for (t, g) in grads.iter().enumerate() {
            let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            let c = match clip {
                Some(mx) if norm > mx => mx / (norm + 1e-6),
                _ => 1.0,
            };
            let t = t as i32 + 1;
            for i in 0..th.len() {
                let gi = g[i] * c;
                m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * gi;
                v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * gi * gi;
                let mh = m[i] / (1.0 - h.beta1.powi(t));
                let vh = v[i] / (1.0 - h.beta2.powi(t));
                th[i] =
                    th[i] * (1.0 - h.lr * h.weight_decay) - h.lr * mh / (vh.sqrt() + h.adam_eps);
            }
        }
        th
    }

    #[test]
    fn flat_adamw_with_clipping_equals_the_per_element_formula() {
        let dev = Device::Cpu;
        let mut h = Preset::Balanced.hyper_params(&ModelProfile::new(
            crate::preset::ModelKind::Dense,
            1,
            1,
        ));
        h.lr = 0.05;
        h.weight_decay = 0.1;
        let init = [
            vec![0.5f64, -0.25, 1.0, 2.0, -1.5, 0.75],
            vec![0.1, 0.2, -0.3],
        ];
        let vars: Vec<Var> = vec![
            Var::from_vec(init[0].clone(), (2, 3), &dev).unwrap(),
            Var::from_vec(init[1].clone(), 3, &dev).unwrap(),
        ];
        let refs: Vec<&Var> = vars.iter().collect();
        let steps: Vec<Vec<f64>> = (0..4)
            .map(|s| (0..9).map(|i| ((i * 3 + s * 5) % 7) as f64 - 3.0).collect())
            .collect();
        for (clip, max) in [(false, f64::INFINITY), (true, 2.0)] {
            for (v, i) in vars.iter().zip(&init) {
                v.set(&Tensor::from_vec(i.clone(), v.shape(), &dev).unwrap())
                    .unwrap();
            }
            h.grad_clip = max;
            let mut opt = AdamW::new(&refs).unwrap();
            for g in &steps {
                let gs = vec![
                    Tensor::from_vec(g[..6].to_vec(), (2, 3), &dev).unwrap(),
                    Tensor::from_vec(g[6..].to_vec(), 3, &dev).unwrap(),
                ];
                let norm = opt.clip_and_step(&refs, &gs, &h).unwrap();
                let want = g.iter().map(|x| x * x).sum::<f64>().sqrt();
                assert!((norm - want).abs() < 1e-12);
            }
            let all: Vec<f64> = init.concat();
            let want = reference(&all, &steps, &h, clip.then_some(max));
            let got: Vec<f64> = vars
                .iter()
                .flat_map(|v| v.flatten_all().unwrap().to_vec1::<f64>().unwrap())
                .collect();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "clip {clip}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_diverged_gradient_is_reported_and_not_applied() {
        let dev = Device::Cpu;
        let h = Preset::Balanced.hyper_params(&ModelProfile::new(
            crate::preset::ModelKind::Dense,
            1,
            1,
        ));
        let v = Var::from_vec(vec![1.0f64, 2.0], 2, &dev).unwrap();
        let mut opt = AdamW::new(&[&v]).unwrap();
        let g = Tensor::from_vec(vec![f64::NAN, 1.0], 2, &dev).unwrap();
        assert!(opt.clip_and_step(&[&v], &[g], &h).unwrap().is_nan());
        assert_eq!(v.to_vec1::<f64>().unwrap(), vec![1.0, 2.0]);
        let wrong = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], 3, &dev).unwrap();
        assert!(opt.step(&[&v], &[wrong], &h).is_err());
        assert!(AdamW::new(&[]).is_err());
    }
}
