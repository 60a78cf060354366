//! Device-generic differentiable ops for the decoder on the GPU.
//!
//! candle-nn's rms norm, softmax and rope have CUDA kernels but no backward. Each op here runs
//! its forward with those kernels (or plain candle ops) on detached inputs and attaches the
//! result to the graph through a custom op whose exact backward is written in candle ops: one
//! graph node per op instead of the 5–10 of the composed reference, fewer kernel launches, and
//! only the op's input (and output) kept for the backward. They run wherever the crate's custom
//! ops run ([`crate::ops::custom_ops_run_on`]): the decoder uses them on CUDA, and the CPU tests
//! check them against finite differences and against the reference.

use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, D, DType, Layout, Shape, Tensor};

use crate::ops::{cpu_storage_of, cuda_storage_of, fresh};

/// `1 / sqrt(mean(x²) + eps)` over the last dimension, kept (…, 1).
fn inv_rms(x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()
}

macro_rules! precomputed_fwd1 {
    () => {
        fn cpu_fwd(
            &self,
            _s: &CpuStorage,
            _l: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Ok((cpu_storage_of(&self.out)?, self.out.shape().clone()))
        }
        fn cuda_fwd(
            &self,
            _s: &CudaStorage,
            _l: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            cuda_storage_of(&self.out)
        }
    };
}

struct RmsNorm {
    w: Tensor,
    eps: f64,
    out: Tensor,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "rlclaw-rms-norm"
    }
    precomputed_fwd1!();
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // y = w ⊙ x · r, r = (mean(x²) + eps)^(-1/2):
        // dx = r · (g⊙w − x · r² · mean(g⊙w⊙x)).
        let x = x.detach();
        let r = inv_rms(&x, self.eps)?;
        let gw = g.broadcast_mul(&self.w)?;
        let dot = (&gw * &x)?.mean_keepdim(D::Minus1)?;
        let corr = x.broadcast_mul(&(dot * r.sqr()?)?)?;
        Ok(Some((gw - corr)?.broadcast_mul(&r)?))
    }
}

/// RMS norm over the last dimension with a frozen weight `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let xd = x.detach();
    // candle-nn's kernel accumulates in f32; f64 (the gradient checks) stays exact.
    let out = if x.dtype() == DType::F64 {
        xd.broadcast_mul(&inv_rms(&xd, eps)?)?.broadcast_mul(w)?
    } else {
        candle_nn::ops::rms_norm(&xd, w, eps as f32)?
    };
    if !x.track_op() {
        return Ok(out);
    }
    x.apply_op1(RmsNorm {
        w: w.clone(),
        eps,
        out: fresh(out)?,
    })
}

struct Rope {
    cos: Tensor,
    sin: Tensor,
    out: Tensor,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rlclaw-rope"
    }
    precomputed_fwd1!();
    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // A rotation by θ per pair; its transpose is the rotation by −θ.
        let g = g.detach().contiguous()?.unsqueeze(0)?;
        let dx = candle_nn::rotary_emb::rope(&g, &self.cos, &self.sin.neg()?)?;
        Ok(Some(dx.squeeze(0)?))
    }
}

/// Rotary embedding (the rotate-half layout of Llama/Qwen) of `x` (heads, tokens, head_dim)
/// with `cos`, `sin` of shape (tokens, head_dim / 2).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let out = candle_nn::rotary_emb::rope(&x.detach().unsqueeze(0)?, cos, sin)?.squeeze(0)?;
    if !x.track_op() {
        return Ok(out);
    }
    x.apply_op1(Rope {
        cos: cos.clone(),
        sin: sin.clone(),
        out: fresh(out)?,
    })
}

struct MaskedSoftmax {
    scale: f64,
    out: Tensor,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "rlclaw-masked-softmax"
    }
    precomputed_fwd1!();
    fn bwd(&self, _s: &Tensor, res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // p = softmax(scale·s + mask): ds = scale · p ⊙ (g − Σ g⊙p).
        let p = res.detach();
        let dot = (g * &p)?.sum_keepdim(D::Minus1)?;
        let ds = (g.broadcast_sub(&dot)? * p)?;
        Ok(Some((ds * self.scale)?))
    }
}

/// `softmax(scale · scores + mask)` over the last dimension; `mask` is additive (0 or −∞) and
/// broadcast over the leading dimension of `scores`.
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: &Tensor) -> candle_core::Result<Tensor> {
    let s = scores.contiguous()?;
    let z = (s.detach() * scale)?.broadcast_add(mask)?;
    let out = candle_nn::ops::softmax_last_dim(&z)?;
    if !s.track_op() {
        return Ok(out);
    }
    s.apply_op1(MaskedSoftmax {
        scale,
        out: fresh(out)?,
    })
}

struct SwiGlu {
    out: Tensor,
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "rlclaw-swiglu"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((cpu_storage_of(&self.out)?, self.out.shape().clone()))
    }
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        cuda_storage_of(&self.out)
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // y = a·σ(a) ⊙ b: da = g⊙b ⊙ σ(a)·(1 + a·(1 − σ(a))), db = g ⊙ a·σ(a).
        let (a, b) = (a.detach(), b.detach());
        let s = candle_nn::ops::sigmoid(&a)?;
        let silu = (&a * &s)?;
        let dsilu = ((&a * s.affine(-1.0, 1.0)?)?.affine(1.0, 1.0)? * s)?;
        let da = ((g * b)? * dsilu)?;
        let db = (g * silu)?;
        Ok((Some(da), Some(db)))
    }
}

/// `silu(a) ⊙ b` (the gated MLP activation).
pub fn swiglu(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let out = (a.detach().silu()? * b.detach())?;
    if !a.track_op() && !b.track_op() {
        return Ok(out);
    }
    a.apply_op2(b, SwiGlu { out: fresh(out)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn data(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 7 + seed * 13) % 17) as f64 - 8.0) * 0.13)
            .collect()
    }

    fn grad_of(
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        x: &Var,
        w: &Tensor,
    ) -> (Vec<f64>, Vec<f64>) {
        let y = f(x.as_tensor()).unwrap();
        let l = (y.flatten_all().unwrap() * w).unwrap().sum_all().unwrap();
        let g = l.backward().unwrap();
        (
            y.flatten_all().unwrap().to_vec1().unwrap(),
            g.get(x).unwrap().flatten_all().unwrap().to_vec1().unwrap(),
        )
    }

    fn close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(b) {
            assert!(
                (p - q).abs() < 1e-12 * (1.0 + q.abs()),
                "{what}: {p} vs {q}"
            );
        }
    }

    #[test]
    fn each_op_matches_its_composed_reference_in_value_and_gradient() {
        let dev = Device::Cpu;
        let shape = (3, 4, 6);
        let n = 3 * 4 * 6;
        let x = Var::from_vec(data(n, 1), shape, &dev).unwrap();
        let w = Tensor::from_vec(data(n, 2), n, &dev).unwrap();
        let nw = Tensor::from_vec(data(6, 3), 6, &dev).unwrap();
        let eps = 1e-6;

        let ours = grad_of(|x| rms_norm(x, &nw, eps), &x, &w);
        let refr = grad_of(
            |x| x.broadcast_mul(&inv_rms(x, eps)?)?.broadcast_mul(&nw),
            &x,
            &w,
        );
        close(&ours.0, &refr.0, "rms value");
        close(&ours.1, &refr.1, "rms gradient");

        let ang: Vec<f64> = (0..4 * 3).map(|i| i as f64 * 0.37).collect();
        let cos = Tensor::from_vec(ang.iter().map(|a| a.cos()).collect(), (4, 3), &dev).unwrap();
        let sin = Tensor::from_vec(ang.iter().map(|a| a.sin()).collect(), (4, 3), &dev).unwrap();
        let ours = grad_of(|x| rope(x, &cos, &sin), &x, &w);
        let refr = grad_of(
            |x| {
                let c = Tensor::cat(&[&cos, &cos], 1)?;
                let s = Tensor::cat(&[&sin, &sin], 1)?;
                let x1 = x.narrow(D::Minus1, 0, 3)?;
                let x2 = x.narrow(D::Minus1, 3, 3)?;
                let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
                x.broadcast_mul(&c)? + rot.broadcast_mul(&s)?
            },
            &x,
            &w,
        );
        close(&ours.0, &refr.0, "rope value");
        close(&ours.1, &refr.1, "rope gradient");

        let mask: Vec<f64> = (0..4 * 6)
            .map(|i| {
                if i % 6 > i / 6 + 1 {
                    f64::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (4, 6), &dev).unwrap();
        let ours = grad_of(|x| masked_softmax(x, 0.7, &mask), &x, &w);
        let refr = grad_of(
            |x| {
                let z = (x * 0.7)?.broadcast_add(&mask)?;
                let m = z.max_keepdim(D::Minus1)?.detach();
                let e = z.broadcast_sub(&m)?.exp()?;
                e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
            },
            &x,
            &w,
        );
        close(&ours.0, &refr.0, "softmax value");
        close(&ours.1, &refr.1, "softmax gradient");

        let b = Var::from_vec(data(n, 4), shape, &dev).unwrap();
        let y = swiglu(x.as_tensor(), b.as_tensor()).unwrap();
        let y_ref = (x.as_tensor().silu().unwrap() * b.as_tensor()).unwrap();
        let lw = |y: &Tensor| {
            (y.flatten_all().unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (g, g_ref) = (lw(&y), lw(&y_ref));
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        close(&v(&y), &v(&y_ref), "swiglu value");
        close(
            &v(g.get(&x).unwrap()),
            &v(g_ref.get(&x).unwrap()),
            "swiglu da",
        );
        close(
            &v(g.get(&b).unwrap()),
            &v(g_ref.get(&b).unwrap()),
            "swiglu db",
        );
    }
}
