//! Fused CPU kernels with exact backward passes for the decoder's elementwise parts: RMS norm,
//! rotary embedding, SwiGLU and the head layout change (attention is in [`crate::attention`]).
//! Each replaces a chain of 5–10 candle ops (each a full pass over memory plus an allocation)
//! with one pass forward and one backward. candle's own fused kernels have no backward
//! (reference/training.md); these do, and the decoder's finite-difference check runs through
//! them. On CUDA the decoder uses [`crate::device_ops`] instead, and on other devices the
//! plain-op reference path.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor, WithDType,
};
use rayon::prelude::*;

/// The float types the kernels run in.
pub trait Fl:
    WithDType
    + Copy
    + Send
    + Sync
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::DivAssign
    + PartialOrd
{
    fn exp_(self) -> Self;
}
impl Fl for f32 {
    fn exp_(self) -> Self {
        self.exp()
    }
}
impl Fl for f64 {
    fn exp_(self) -> Self {
        self.exp()
    }
}

pub(crate) fn slice<'a, T: Fl>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    if !l.is_contiguous() {
        candle_core::bail!("fused op: input must be contiguous");
    }
    let o = l.start_offset();
    Ok(&T::cpu_storage_as_slice(s)?[o..o + l.shape().elem_count()])
}

/// Runs `f` on the contiguous CPU data of `t`.
pub(crate) fn with_data<T: Fl, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(s) => f(slice::<T>(s, l)?),
        _ => candle_core::bail!("fused op: not a CPU tensor"),
    }
}

macro_rules! dispatch {
    ($dt:expr, $f:ident ( $($a:expr),* )) => {
        match $dt {
            DType::F32 => $f::<f32>($($a),*),
            DType::F64 => $f::<f64>($($a),*),
            d => candle_core::bail!("fused op: unsupported dtype {d:?}"),
        }
    };
}

// ---------------------------------------------------------------- RMS norm

struct RmsNorm {
    w: Vec<f64>,
    eps: f64,
}

impl RmsNorm {
    fn fwd<T: Fl>(&self, x: &[T]) -> Vec<T> {
        let h = self.w.len();
        let w: Vec<T> = self.w.iter().map(|&v| T::from_f64(v)).collect();
        let mut y = vec![T::from_f64(0.0); x.len()];
        y.par_chunks_mut(h)
            .zip(x.par_chunks(h))
            .for_each(|(yr, xr)| {
                let ms = xr.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / h as f64;
                let r = T::from_f64(1.0 / (ms + self.eps).sqrt());
                for ((yi, &xi), &wi) in yr.iter_mut().zip(xr).zip(&w) {
                    *yi = xi * r * wi;
                }
            });
        y
    }
    fn bwd<T: Fl>(&self, x: &[T], g: &[T]) -> Vec<T> {
        let h = self.w.len();
        let mut dx = vec![T::from_f64(0.0); x.len()];
        dx.par_chunks_mut(h)
            .zip(x.par_chunks(h).zip(g.par_chunks(h)))
            .for_each(|(dr, (xr, gr))| {
                let ms = xr.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / h as f64;
                let r = 1.0 / (ms + self.eps).sqrt();
                let dot = xr
                    .iter()
                    .zip(gr)
                    .zip(&self.w)
                    .map(|((x, g), w)| x.to_f64() * g.to_f64() * w)
                    .sum::<f64>()
                    / h as f64;
                let c = T::from_f64(r * r * r * dot);
                let r = T::from_f64(r);
                for (((d, &xi), &gi), &wi) in dr.iter_mut().zip(xr).zip(gr).zip(&self.w) {
                    *d = r * gi * T::from_f64(wi) - xi * c;
                }
            });
        dx
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Fl>(op: &RmsNorm, s: &CpuStorage, l: &Layout) -> candle_core::Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(op.fwd(slice::<T>(s, l)?)))
        }
        Ok((dispatch!(s.dtype(), run(self, s, l))?, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        fn run<T: Fl>(op: &RmsNorm, x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
            let v = with_data::<T, _>(x, |xs| with_data::<T, _>(g, |gs| Ok(op.bwd(xs, gs))))?;
            Tensor::from_vec(v, x.shape(), x.device())
        }
        Ok(Some(dispatch!(x.dtype(), run(self, x, g))?))
    }
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension; `w` is frozen.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let w = w.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    if x.dim(candle_core::D::Minus1)? != w.len() {
        candle_core::bail!("rms_norm: width mismatch");
    }
    x.contiguous()?.apply_op1(RmsNorm { w, eps })
}

// ---------------------------------------------------------------- rotary embedding

/// cos/sin tables, (positions, head_dim/2) each, shared by the q and k ops of every layer.
#[derive(Clone)]
pub struct RopeTables {
    pub cos: Arc<Vec<f64>>,
    pub sin: Arc<Vec<f64>>,
    pub t: usize,
    pub half: usize,
}

struct Rope {
    tab: RopeTables,
    inverse: bool,
}

impl Rope {
    fn apply<T: Fl>(&self, x: &[T]) -> Vec<T> {
        let (t, half) = (self.tab.t, self.tab.half);
        let hd = 2 * half;
        let sgn = if self.inverse { -1.0 } else { 1.0 };
        let cos: Vec<T> = self.tab.cos.iter().map(|&v| T::from_f64(v)).collect();
        let sin: Vec<T> = self.tab.sin.iter().map(|&v| T::from_f64(v * sgn)).collect();
        let mut y = vec![T::from_f64(0.0); x.len()];
        y.par_chunks_mut(t * hd)
            .zip(x.par_chunks(t * hd))
            .for_each(|(yh, xh)| {
                for p in 0..t {
                    let (c, s) = (
                        &cos[p * half..(p + 1) * half],
                        &sin[p * half..(p + 1) * half],
                    );
                    let xr = &xh[p * hd..(p + 1) * hd];
                    let yr = &mut yh[p * hd..(p + 1) * hd];
                    for i in 0..half {
                        let (x1, x2) = (xr[i], xr[i + half]);
                        yr[i] = x1 * c[i] - x2 * s[i];
                        yr[i + half] = x2 * c[i] + x1 * s[i];
                    }
                }
            });
        y
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Fl>(op: &Rope, s: &CpuStorage, l: &Layout) -> candle_core::Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(op.apply(slice::<T>(s, l)?)))
        }
        Ok((dispatch!(s.dtype(), run(self, s, l))?, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // A rotation: the backward is the rotation by the opposite angle.
        let inv = Rope {
            tab: self.tab.clone(),
            inverse: !self.inverse,
        };
        fn run<T: Fl>(op: &Rope, x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
            let v = with_data::<T, _>(g, |gs| Ok(op.apply(gs)))?;
            Tensor::from_vec(v, x.shape(), x.device())
        }
        Ok(Some(dispatch!(x.dtype(), run(&inv, x, g))?))
    }
}

/// HF-style (rotate_half) rotary embedding of `x` (heads, positions, head_dim).
pub fn rope(x: &Tensor, tab: &RopeTables) -> candle_core::Result<Tensor> {
    let (_, t, hd) = x.dims3()?;
    if t != tab.t || hd != 2 * tab.half {
        candle_core::bail!("rope: table shape mismatch");
    }
    x.contiguous()?.apply_op1(Rope {
        tab: tab.clone(),
        inverse: false,
    })
}

// ---------------------------------------------------------------- SwiGLU

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Fl>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<CpuStorage> {
            let (g, u) = (slice::<T>(s1, l1)?, slice::<T>(s2, l2)?);
            let mut y = vec![T::from_f64(0.0); g.len()];
            y.par_chunks_mut(4096)
                .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
                .for_each(|(yc, (gc, uc))| {
                    let one = T::from_f64(1.0);
                    for ((y, &g), &u) in yc.iter_mut().zip(gc).zip(uc) {
                        *y = g / (one + (-g).exp_()) * u;
                    }
                });
            Ok(T::to_cpu_storage_owned(y))
        }
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu: shape mismatch");
        }
        Ok((
            dispatch!(s1.dtype(), run(s1, l1, s2, l2))?,
            l1.shape().clone(),
        ))
    }
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Fl>(
            gate: &Tensor,
            up: &Tensor,
            grad: &Tensor,
        ) -> candle_core::Result<(Tensor, Tensor)> {
            let (dg, du) = with_data::<T, _>(gate, |gs| {
                with_data::<T, _>(up, |us| {
                    with_data::<T, _>(grad, |ds| {
                        let mut dg = vec![T::from_f64(0.0); gs.len()];
                        let mut du = vec![T::from_f64(0.0); gs.len()];
                        dg.par_chunks_mut(4096)
                            .zip(du.par_chunks_mut(4096))
                            .zip(
                                gs.par_chunks(4096)
                                    .zip(us.par_chunks(4096))
                                    .zip(ds.par_chunks(4096)),
                            )
                            .for_each(|((dgc, duc), ((gc, uc), dc))| {
                                let one = T::from_f64(1.0);
                                for i in 0..gc.len() {
                                    let g = gc[i];
                                    let s = one / (one + (-g).exp_());
                                    let d = dc[i];
                                    duc[i] = d * g * s;
                                    dgc[i] = d * uc[i] * s * (one + g * (one - s));
                                }
                            });
                        Ok((dg, du))
                    })
                })
            })?;
            Ok((
                Tensor::from_vec(dg, gate.shape(), gate.device())?,
                Tensor::from_vec(du, up.shape(), up.device())?,
            ))
        }
        let (dg, du) = dispatch!(gate.dtype(), run(gate, up, grad))?;
        Ok((Some(dg), Some(du)))
    }
}

/// `silu(gate) · up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

// ---------------------------------------------------------------- head layout (+ rope)

/// (a, b, d) → (b, a, d) for contiguous data.
fn swap01<T: Fl>(x: &[T], a: usize, b: usize, d: usize) -> Vec<T> {
    let mut y = vec![T::from_f64(0.0); x.len()];
    y.par_chunks_mut(a * d).enumerate().for_each(|(j, yb)| {
        for i in 0..a {
            yb[i * d..(i + 1) * d].copy_from_slice(&x[(i * b + j) * d..(i * b + j + 1) * d]);
        }
    });
    y
}

/// (tokens, heads·head_dim) → (heads, tokens, head_dim), optionally with rotary embedding; or
/// the inverse layout change (`to_heads == false`, never with rope).
struct Heads {
    t: usize,
    n: usize,
    hd: usize,
    rope: Option<RopeTables>,
    to_heads: bool,
}

impl Heads {
    fn forward<T: Fl>(&self, x: &[T]) -> Vec<T> {
        if self.to_heads {
            let y = swap01(x, self.t, self.n, self.hd);
            match &self.rope {
                Some(tab) => Rope {
                    tab: tab.clone(),
                    inverse: false,
                }
                .apply(&y),
                None => y,
            }
        } else {
            swap01(x, self.n, self.t, self.hd)
        }
    }
    fn backward<T: Fl>(&self, g: &[T]) -> Vec<T> {
        if self.to_heads {
            let g = match &self.rope {
                Some(tab) => Rope {
                    tab: tab.clone(),
                    inverse: true,
                }
                .apply(g),
                None => g.to_vec(),
            };
            swap01(&g, self.n, self.t, self.hd)
        } else {
            swap01(g, self.t, self.n, self.hd)
        }
    }
}

impl CustomOp1 for Heads {
    fn name(&self) -> &'static str {
        "fused-heads"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Fl>(op: &Heads, s: &CpuStorage, l: &Layout) -> candle_core::Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(op.forward(slice::<T>(s, l)?)))
        }
        if l.shape().elem_count() != self.t * self.n * self.hd {
            candle_core::bail!("heads: shape mismatch");
        }
        let shape = if self.to_heads {
            Shape::from((self.n, self.t, self.hd))
        } else {
            Shape::from((self.t, self.n * self.hd))
        };
        Ok((dispatch!(s.dtype(), run(self, s, l))?, shape))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        fn run<T: Fl>(op: &Heads, x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
            let v = with_data::<T, _>(g, |gs| Ok(op.backward(gs)))?;
            Tensor::from_vec(v, x.shape(), x.device())
        }
        Ok(Some(dispatch!(x.dtype(), run(self, x, g))?))
    }
}

/// (tokens, heads·head_dim) or (tokens, heads, head_dim) → (heads, tokens, head_dim), with the
/// rotary embedding applied when `rope` is given.
pub fn to_heads(
    x: &Tensor,
    n: usize,
    hd: usize,
    rope: Option<&RopeTables>,
) -> candle_core::Result<Tensor> {
    let t = x.dim(0)?;
    if let Some(tab) = rope
        && (tab.t != t || 2 * tab.half != hd)
    {
        candle_core::bail!("to_heads: rope table mismatch");
    }
    x.contiguous()?.apply_op1(Heads {
        t,
        n,
        hd,
        rope: rope.cloned(),
        to_heads: true,
    })
}

/// (heads, tokens, head_dim) → (tokens, heads·head_dim).
pub fn from_heads(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, t, hd) = x.dims3()?;
    x.contiguous()?.apply_op1(Heads {
        t,
        n,
        hd,
        rope: None,
        to_heads: false,
    })
}
