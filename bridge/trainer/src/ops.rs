//! Custom differentiable ops.
//!
//! * [`frozen_linear`]: `x · Wᵀ` whose backward computes only the activation gradient `g · W`.
//!   candle's matmul backward always computes the weight gradient too, which is wasted work for
//!   a frozen base (reference/training.md: −31 % step time on SmolLM2-135M).
//! * [`token_logprobs`]: `log_softmax(logits)[t, y_t]` in one pass, with the exact backward
//!   `g_t · (onehot(y_t) − softmax_t)`, so the (tokens × vocab) log-softmax is never stored.
//!
//! The linear ops compute their forward with candle's matmul on detached inputs and hand the
//! result to the graph through a custom op, so they run on the CPU and on CUDA alike. The
//! log-prob op has a CPU kernel; on CUDA the same forward and backward are written in candle
//! ops ([`TokenLogProbOps`]). Devices without custom-op support fall back to plain candle ops.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, D, DType, Device, Layout, Shape, Storage, Tensor,
};
use rayon::prelude::*;

use crate::cpu_gemm::{Weight, matmul, matmul_into};
use crate::fused::{Fl, with_data};

/// Whether the custom ops of this crate (precomputed forward + own backward) run on `device`.
pub fn custom_ops_run_on(device: &Device) -> bool {
    device.is_cpu() || device.is_cuda()
}

/// A fresh buffer holding exactly `t`: contiguous from offset 0.
pub(crate) fn fresh(t: Tensor) -> candle_core::Result<Tensor> {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        Ok(t)
    } else {
        t.copy()
    }
}

/// A copy of a precomputed forward result on the GPU, as a custom op's `cuda_fwd` returns it.
/// `out` must come from [`fresh`]: its buffer holds exactly its elements.
pub(crate) fn cuda_storage_of(out: &Tensor) -> candle_core::Result<(CudaStorage, Shape)> {
    let (st, layout) = out.storage_and_layout();
    match &*st {
        Storage::Cuda(s) if layout.is_contiguous() && layout.start_offset() == 0 => {
            Ok((s.try_clone(layout)?, out.shape().clone()))
        }
        Storage::Cuda(_) => candle_core::bail!("precomputed output is not a fresh buffer"),
        _ => candle_core::bail!("precomputed output is not on the GPU"),
    }
}

pub(crate) fn cpu_storage_of(t: &Tensor) -> candle_core::Result<CpuStorage> {
    let t = t.contiguous()?;
    let (st, layout) = t.storage_and_layout();
    let n = layout.shape().elem_count();
    let o = layout.start_offset();
    match &*st {
        Storage::Cpu(CpuStorage::F32(v)) => Ok(CpuStorage::F32(v[o..o + n].to_vec())),
        Storage::Cpu(CpuStorage::F64(v)) => Ok(CpuStorage::F64(v[o..o + n].to_vec())),
        _ => candle_core::bail!("frozen_linear: unsupported storage"),
    }
}

/// `x · Wᵀ` with a frozen `W`: holds the forward result computed on the detached input and
/// passes only the activation gradient back.
struct FrozenMatmul {
    w: Tensor,
    out: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }
    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((cpu_storage_of(&self.out)?, self.out.shape().clone()))
    }
    fn cuda_fwd(&self, _s: &CudaStorage, _l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        cuda_storage_of(&self.out)
    }
    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w)?))
    }
}

/// `x · Wᵀ` for a 2-D `x` (tokens, in) and a frozen `W` (out, in).
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let out = x.detach().matmul(&w.t()?)?;
    if !x.track_op() || !custom_ops_run_on(x.device()) {
        return if x.track_op() {
            x.matmul(&w.t()?)
        } else {
            Ok(out)
        };
    }
    x.apply_op1(FrozenMatmul {
        w: w.clone(),
        out: fresh(out)?,
    })
}

/// `x · Wᵀ + s · (x · Aᵀ) · Bᵀ` as one graph node over (x, A, B): a frozen linear with its
/// LoRA branch. The backward returns `dx = g·W + s·(g·B)·A` (only when x needs it),
/// `dA = s·(g·B)ᵀ·x` and `dB = s·gᵀ·(x·Aᵀ)`, and never a gradient for W.
struct LoraLinear {
    w: Tensor,
    out: Tensor,
    scale: f64,
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
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
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        cuda_storage_of(&self.out)
    }
    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need_dx = x.track_op();
        let (x, a, b) = (x.detach(), a.detach(), b.detach());
        let gb = g.matmul(&b)?;
        let dx = if need_dx {
            Some((g.matmul(&self.w)? + (gb.matmul(&a)? * self.scale)?)?)
        } else {
            None
        };
        let (da, db) = lora_grads(&x, &a, g, &gb, self.scale)?;
        Ok((dx, Some(da), Some(db)))
    }
}

/// The LoRA factors' gradients `dA = s·(g·B)ᵀ·x` and `dB = s·gᵀ·(x·Aᵀ)`, given `gb = g·B`.
fn lora_grads(
    x: &Tensor,
    a: &Tensor,
    g: &Tensor,
    gb: &Tensor,
    scale: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let da = (gb.t()?.matmul(x)? * scale)?;
    let db = (g.t()?.matmul(&x.matmul(&a.t()?)?)? * scale)?;
    Ok((da, db))
}

/// `x · Wᵀ + s · (x · Aᵀ) · Bᵀ` for a 2-D `x` (tokens, in), frozen `W` (out, in) and LoRA
/// `A` (r, in), `B` (out, r).
pub fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let xd = x.detach();
    let bs = (b.detach() * scale)?;
    let out = (xd.matmul(&w.t()?)? + xd.matmul(&a.detach().t()?)?.matmul(&bs.t()?)?)?;
    let tracked = x.track_op() || a.track_op() || b.track_op();
    if !tracked {
        return Ok(out);
    }
    if !custom_ops_run_on(x.device()) {
        let bs = (b * scale)?;
        return frozen_linear(x, w)? + x.matmul(&a.t()?)?.matmul(&bs.t()?)?;
    }
    x.apply_op3(
        a,
        b,
        LoraLinear {
            w: w.clone(),
            out: fresh(out)?,
            scale,
        },
    )
}

// ---------------------------------------------------------------- CPU kernels

/// Whether the CPU kernels of [`crate::cpu_gemm`] take `x · Wᵀ`: both on the CPU, in f32 or f64,
/// `x` 2-D and `W` a contiguous 2-D weight of the same width. Anything else goes to the
/// candle ops, whose errors name the mismatch.
fn cpu_kernels_fit(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == w.dtype()
        && x.rank() == 2
        && w.rank() == 2
        && w.is_contiguous()
        && x.dim(1).ok() == w.dim(1).ok()
}

/// Whether LoRA factors `A` (r, in) and `B` (out, r) fit a weight `W` (out, in) for the CPU
/// kernels.
fn lora_fits(w: &Tensor, a: &Tensor, b: &Tensor) -> bool {
    match (w.dims2(), a.dims2(), b.dims2()) {
        (Ok((out, inp)), Ok((r, a_in)), Ok((b_out, b_r))) => {
            a_in == inp
                && b_out == out
                && b_r == r
                && a.dtype() == w.dtype()
                && b.dtype() == w.dtype()
        }
        _ => false,
    }
}

/// [`frozen_linear`] with the CPU kernels of [`crate::cpu_gemm`] where they fit (else as
/// [`frozen_linear`]).
pub fn cpu_frozen_linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if !cpu_kernels_fit(x, w) {
        return frozen_linear(x, w);
    }
    let op = CpuLinear { w: w.clone() };
    let x = x.contiguous()?;
    if x.track_op() {
        x.apply_op1(op)
    } else {
        x.apply_op1_no_bwd(&op)
    }
}

/// [`lora_linear`] with the CPU kernels of [`crate::cpu_gemm`] where they fit (else as
/// [`lora_linear`]).
pub fn cpu_lora_linear(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    if !cpu_kernels_fit(x, w) || !lora_fits(w, a, b) {
        return lora_linear(x, w, a, b, scale);
    }
    let op = CpuLoraLinear {
        w: w.clone(),
        scale,
    };
    let (x, a, b) = (x.contiguous()?, a.contiguous()?, b.contiguous()?);
    if x.track_op() || a.track_op() || b.track_op() {
        x.apply_op3(&a, &b, op)
    } else {
        x.apply_op3_no_bwd(&a, &b, &op)
    }
}

/// `x · Wᵀ` with a frozen `W` on the CPU; the backward gives only `dx = g · W`.
struct CpuLinear {
    w: Tensor,
}

impl CpuLinear {
    fn fwd<T: Fl>(&self, x: &[T], l: &Layout) -> candle_core::Result<CpuStorage> {
        let (m, k) = l.shape().dims2()?;
        let (n, _) = self.w.dims2()?;
        with_data(&self.w, |w| {
            let y = matmul(x, Weight::Transposed(w), (m, k, n), T::from_f64(1.0));
            Ok(T::to_cpu_storage_owned(y))
        })
    }

    /// `g · W`, row-major (tokens, in).
    fn dx<T: Fl>(&self, g: &Tensor) -> candle_core::Result<Vec<T>> {
        let (m, n) = g.dims2()?;
        let (_, k) = self.w.dims2()?;
        with_data(g, |g| {
            with_data(&self.w, |w| {
                Ok(matmul(g, Weight::AsIs(w), (m, n, k), T::from_f64(1.0)))
            })
        })
    }

    fn bwd<T: Fl>(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        let (m, k) = (g.dim(0)?, self.w.dim(1)?);
        Tensor::from_vec(self.dx::<T>(g)?, (m, k), g.device())
    }
}

impl CustomOp1 for CpuLinear {
    fn name(&self) -> &'static str {
        "cpu-frozen-linear"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, _) = l.shape().dims2()?;
        let (n, _) = self.w.dims2()?;
        let y = match s {
            CpuStorage::F32(_) => self.fwd(crate::fused::slice::<f32>(s, l)?, l)?,
            CpuStorage::F64(_) => self.fwd(crate::fused::slice::<f64>(s, l)?, l)?,
            _ => candle_core::bail!("frozen_linear: only f32 and f64 on the CPU"),
        };
        Ok((y, Shape::from((m, n))))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(match x.dtype() {
            DType::F32 => self.bwd::<f32>(g)?,
            _ => self.bwd::<f64>(g)?,
        }))
    }
}

/// `x · Wᵀ + s · (x · Aᵀ) · Bᵀ` on the CPU, as [`LoraLinear`], with the frozen products in
/// [`crate::cpu_gemm`] and the LoRA branch added into the same buffer.
struct CpuLoraLinear {
    w: Tensor,
    scale: f64,
}

impl CpuLoraLinear {
    fn fwd<T: Fl>(
        &self,
        x: (&[T], &Layout),
        a: &[T],
        b: &[T],
        r: usize,
    ) -> candle_core::Result<CpuStorage> {
        let (m, k) = x.1.shape().dims2()?;
        let (n, _) = self.w.dims2()?;
        let one = T::from_f64(1.0);
        with_data(&self.w, |w| {
            let mut y = matmul(x.0, Weight::Transposed(w), (m, k, n), one);
            let xa = matmul(x.0, Weight::Transposed(a), (m, k, r), one);
            let s = T::from_f64(self.scale);
            matmul_into(&mut y, &xa, Weight::Transposed(b), (m, r, n), s, true);
            Ok(T::to_cpu_storage_owned(y))
        })
    }

    /// `dx = g · W + s · (g · B) · A`: the frozen part as [`CpuLinear`]'s backward, the LoRA
    /// part added into the same buffer.
    fn dx<T: Fl>(&self, g: &Tensor, gb: &Tensor, a: &Tensor) -> candle_core::Result<Tensor> {
        let mut dx = CpuLinear { w: self.w.clone() }.dx::<T>(g)?;
        let (m, (r, k)) = (g.dim(0)?, a.dims2()?);
        with_data(gb, |gb| {
            with_data(a, |a| {
                let s = T::from_f64(self.scale);
                matmul_into(&mut dx, gb, Weight::AsIs(a), (m, r, k), s, true);
                Ok(())
            })
        })?;
        Tensor::from_vec(dx, (m, k), g.device())
    }
}

impl CustomOp3 for CpuLoraLinear {
    fn name(&self) -> &'static str {
        "cpu-lora-linear"
    }
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use crate::fused::slice;
        let (m, _) = xl.shape().dims2()?;
        let (n, _) = self.w.dims2()?;
        let (r, _) = al.shape().dims2()?;
        let y = match xs {
            CpuStorage::F32(_) => self.fwd(
                (slice::<f32>(xs, xl)?, xl),
                slice(as_, al)?,
                slice(bs, bl)?,
                r,
            )?,
            CpuStorage::F64(_) => self.fwd(
                (slice::<f64>(xs, xl)?, xl),
                slice(as_, al)?,
                slice(bs, bl)?,
                r,
            )?,
            _ => candle_core::bail!("lora_linear: only f32 and f64 on the CPU"),
        };
        Ok((y, Shape::from((m, n))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need_dx = x.track_op();
        let (x, a, b) = (x.detach(), a.detach(), b.detach());
        let gb = g.matmul(&b)?;
        let dx = match (need_dx, x.dtype()) {
            (false, _) => None,
            (true, DType::F32) => Some(self.dx::<f32>(g, &gb, &a)?),
            (true, _) => Some(self.dx::<f64>(g, &gb, &a)?),
        };
        let (da, db) = lora_grads(&x, &a, g, &gb, self.scale)?;
        Ok((dx, Some(da), Some(db)))
    }
}

struct TokenLogProb {
    targets: Vec<u32>,
}

macro_rules! lp_fwd {
    ($v:expr, $vocab:expr, $targets:expr, $ty:ty) => {{
        let rows: Vec<$ty> = $v
            .par_chunks($vocab)
            .zip($targets.par_iter())
            .map(|(row, &y)| {
                let m = row.iter().copied().fold(<$ty>::NEG_INFINITY, <$ty>::max);
                let s: $ty = row.iter().map(|&x| (x - m).exp()).sum();
                row[y as usize] - (m + s.ln())
            })
            .collect();
        rows
    }};
}

macro_rules! lp_bwd {
    ($v:expr, $vocab:expr, $targets:expr, $res:expr, $g:expr, $ty:ty) => {{
        let mut out: Vec<$ty> = vec![0.0; $v.len()];
        out.par_chunks_mut($vocab)
            .zip($v.par_chunks($vocab))
            .enumerate()
            .for_each(|(t, (o, row))| {
                let y = $targets[t] as usize;
                let lse = row[y] - $res[t];
                let g = $g[t];
                for (oi, &x) in o.iter_mut().zip(row.iter()) {
                    *oi = -g * (x - lse).exp();
                }
                o[y] += g;
            });
        out
    }};
}

impl CustomOp1 for TokenLogProb {
    fn name(&self) -> &'static str {
        "token-logprob"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, vocab) = l.shape().dims2()?;
        if !l.is_contiguous() || n != self.targets.len() {
            candle_core::bail!("token_logprobs: logits must be contiguous (tokens, vocab)");
        }
        let o = l.start_offset();
        let st = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(lp_fwd!(&v[o..o + n * vocab], vocab, self.targets, f32))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(lp_fwd!(&v[o..o + n * vocab], vocab, self.targets, f64))
            }
            _ => candle_core::bail!("token_logprobs: only f32 and f64"),
        };
        Ok((st, Shape::from(n)))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, vocab) = arg.dims2()?;
        let arg = arg.contiguous()?;
        let (st, l) = arg.storage_and_layout();
        let o = l.start_offset();
        let n = l.shape().elem_count();
        let t = match (&*st, arg.dtype()) {
            (Storage::Cpu(CpuStorage::F32(v)), DType::F32) => {
                let r = res.to_vec1::<f32>()?;
                let g = grad.to_vec1::<f32>()?;
                let out = lp_bwd!(&v[o..o + n], vocab, self.targets, r, g, f32);
                Tensor::from_vec(out, arg.shape(), arg.device())?
            }
            (Storage::Cpu(CpuStorage::F64(v)), DType::F64) => {
                let r = res.to_vec1::<f64>()?;
                let g = grad.to_vec1::<f64>()?;
                let out = lp_bwd!(&v[o..o + n], vocab, self.targets, r, g, f64);
                Tensor::from_vec(out, arg.shape(), arg.device())?
            }
            _ => candle_core::bail!("token_logprobs: only f32 and f64 on the CPU"),
        };
        Ok(Some(t))
    }
}

/// The log-prob op for devices other than the CPU: forward and backward in candle ops, so that
/// only the logits and the per-row log-sum-exp are kept for the backward (the composed
/// reference keeps several tokens × vocab intermediates).
struct TokenLogProbOps {
    /// Target ids, (tokens, 1), on the logits' device.
    idx: Tensor,
    out: Tensor,
}

impl CustomOp1 for TokenLogProbOps {
    fn name(&self) -> &'static str {
        "token-logprob-ops"
    }
    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((cpu_storage_of(&self.out)?, self.out.shape().clone()))
    }
    fn cuda_fwd(&self, _s: &CudaStorage, _l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        cuda_storage_of(&self.out)
    }
    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // d/dx_j of x_y − lse(x) is onehot(y)_j − softmax(x)_j, with lse = x_y − res.
        let x = arg.detach();
        let lse = (x.gather(&self.idx, 1)? - res.detach().unsqueeze(1)?)?;
        let g = grad.detach().unsqueeze(1)?;
        let minus_softmax_g = x.broadcast_sub(&lse)?.exp()?.broadcast_mul(&g.neg()?)?;
        Ok(Some(minus_softmax_g.scatter_add(&self.idx, &g, 1)?))
    }
}

/// Log-probabilities `log_softmax(logits)[t, targets[t]]`, shape (tokens,).
pub fn token_logprobs(logits: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
    let dev = logits.device();
    if dev.is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64) {
        return logits.contiguous()?.apply_op1(TokenLogProb {
            targets: targets.to_vec(),
        });
    }
    if custom_ops_run_on(dev) {
        return token_logprobs_ops(logits, targets);
    }
    token_logprobs_reference(logits, targets)
}

/// [`token_logprobs`] through [`TokenLogProbOps`] on any device with custom-op support (the
/// CUDA path; on the CPU for tests).
pub fn token_logprobs_ops(logits: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
    let x = logits.contiguous()?;
    let idx = Tensor::from_slice(targets, (targets.len(), 1), x.device())?;
    let xd = x.detach();
    let m = xd.max_keepdim(D::Minus1)?;
    let lse = (xd.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?;
    let out = xd.gather(&idx, 1)?.sub(&lse)?.squeeze(1)?;
    if !x.track_op() {
        return Ok(out);
    }
    x.apply_op1(TokenLogProbOps {
        idx,
        out: fresh(out)?,
    })
}

/// The same quantity from plain differentiable candle ops (reference and non-CPU path).
pub fn token_logprobs_reference(logits: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let lsm = shifted.broadcast_sub(&lse)?;
    let idx = Tensor::from_slice(targets, (targets.len(), 1), logits.device())?;
    lsm.gather(&idx, 1)?.squeeze(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_linear_matches_matmul_and_its_input_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_vec(vec![0.5f64, -1.0, 2.0, 0.25, 1.5, -0.5], (2, 3), &dev).unwrap();
        let w = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, -1.0, 0.5, 0.0], (2, 3), &dev).unwrap();
        let y = frozen_linear(&x, &w).unwrap();
        let y_ref = x.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(y.to_vec2::<f64>().unwrap(), y_ref.to_vec2::<f64>().unwrap());
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = y_ref.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec2::<f64>().unwrap(),
            g_ref.get(&x).unwrap().to_vec2::<f64>().unwrap()
        );
    }

    #[test]
    fn cpu_linear_ops_match_plain_ops_in_values_and_gradients() {
        let dev = Device::Cpu;
        let vals = |n: usize, seed: usize| -> Vec<f64> {
            (0..n)
                .map(|i| (((i * 13 + seed * 7) % 19) as f64 - 9.0) / 10.0)
                .collect()
        };
        let (t, k, n, r) = (37, 48, 70, 4);
        let x = Var::from_vec(vals(t * k, 1), (t, k), &dev).unwrap();
        let w = Tensor::from_vec(vals(n * k, 2), (n, k), &dev).unwrap();
        let a = Var::from_vec(vals(r * k, 3), (r, k), &dev).unwrap();
        let b = Var::from_vec(vals(n * r, 4), (n, r), &dev).unwrap();
        let up = Tensor::from_vec(vals(t * n, 5), (t, n), &dev).unwrap();
        let s = 0.75;
        let plain = (x.matmul(&w.t().unwrap()).unwrap()
            + (x.matmul(&a.t().unwrap()).unwrap())
                .matmul(&b.t().unwrap())
                .unwrap()
                .affine(s, 0.0)
                .unwrap())
        .unwrap();
        let fused = cpu_lora_linear(&x, &w, &a, &b, s).unwrap();
        let frozen = cpu_frozen_linear(&x, &w).unwrap();
        let frozen_plain = x.matmul(&w.t().unwrap()).unwrap();
        let close = |p: &Tensor, q: &Tensor| {
            let d = (p - q).unwrap().abs().unwrap().max_all().unwrap();
            let d = d.to_scalar::<f64>().unwrap();
            assert!(d < 1e-10, "differ by {d}");
        };
        close(&fused, &plain);
        close(&frozen, &frozen_plain);
        let loss = |y: &Tensor| y.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (loss(&fused), loss(&plain));
        for v in [&x, &a, &b] {
            close(gf.get(v).unwrap(), gp.get(v).unwrap());
        }
        let (gf, gp) = (loss(&frozen), loss(&frozen_plain));
        close(gf.get(&x).unwrap(), gp.get(&x).unwrap());
    }

    #[test]
    fn mismatched_shapes_are_errors_not_panics_on_the_cpu_path() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((3, 5), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 6), DType::F32, &dev).unwrap();
        assert!(cpu_frozen_linear(&x, &w).is_err());
        let w = Tensor::zeros((4, 5), DType::F32, &dev).unwrap();
        let a = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
        assert!(cpu_lora_linear(&x, &w, &a, &b, 1.0).is_err());
    }

    #[test]
    fn token_logprobs_match_log_softmax_and_gradient() {
        let dev = Device::Cpu;
        let data: Vec<f64> = (0..15).map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.3).collect();
        let x = Var::from_vec(data, (3, 5), &dev).unwrap();
        let targets = [4u32, 0, 2];
        let a = token_logprobs(&x, &targets).unwrap();
        let b = token_logprobs_reference(&x, &targets).unwrap();
        let (va, vb) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
        for (p, q) in va.iter().zip(&vb) {
            assert!((p - q).abs() < 1e-12, "{p} vs {q}");
        }
        let w = Tensor::from_vec(vec![1.0f64, -2.0, 0.5], 3, &dev).unwrap();
        let ga = a.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = b.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (
            ga.get(&x).unwrap().to_vec2::<f64>().unwrap(),
            gb.get(&x).unwrap().to_vec2::<f64>().unwrap(),
        );
        for (ra, rb) in ga.iter().zip(&gb) {
            for (p, q) in ra.iter().zip(rb) {
                assert!((p - q).abs() < 1e-12, "{p} vs {q}");
            }
        }
    }

    #[test]
    fn token_logprobs_in_candle_ops_match_the_cpu_kernel_and_its_gradient() {
        let dev = Device::Cpu;
        let data: Vec<f64> = (0..28).map(|i| ((i * 5 % 13) as f64 - 6.0) * 0.4).collect();
        let x = Var::from_vec(data, (4, 7), &dev).unwrap();
        let targets = [6u32, 0, 3, 3];
        let a = token_logprobs_ops(&x, &targets).unwrap();
        let b = token_logprobs(&x, &targets).unwrap();
        let w = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.25], 4, &dev).unwrap();
        let ga = a.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = b.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        for (p, q) in a
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .zip(&b.to_vec1::<f64>().unwrap())
        {
            assert!((p - q).abs() < 1e-12, "{p} vs {q}");
        }
        let flat = |g: &candle_core::backprop::GradStore| {
            g.get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        for (p, q) in flat(&ga).iter().zip(&flat(&gb)) {
            assert!((p - q).abs() < 1e-12, "{p} vs {q}");
        }
    }
}
