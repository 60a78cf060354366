//! Causal grouped-query attention as one CPU op with its own backward.
//!
//! Built from candle ops, attention is four graph nodes (scores, softmax, the product with V and
//! a transpose) whose (heads · tokens × tokens) intermediates candle's backward zero-fills and
//! adds into, one thread at a time, and it computes the masked half of every score matrix. Here
//! each query head is one task: scores in blocks of query rows against only the keys those rows
//! may see, softmax in place, the product with V; the backward recomputes the probabilities
//! from the saved log-sum-exp instead of keeping them.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_gemm::{View, gemm_serial};
use crate::fused::{Fl, slice, with_data};

/// Query rows per block: a block's scores (rows × keys so far) stay in cache.
const ROW_BLOCK: usize = 64;

struct CausalAttention {
    /// Query heads per key/value head.
    rep: usize,
    scale: f64,
    /// Per query head and position, the log-sum-exp of its scaled scores (forward, for the
    /// backward).
    lse: OnceLock<Vec<f64>>,
}

/// The shapes of one call: query heads, key/value heads, tokens, head size.
#[derive(Clone, Copy)]
struct Dims {
    nh: usize,
    nkv: usize,
    t: usize,
    d: usize,
}

impl CausalAttention {
    /// One query head's forward: its output rows and the log-sum-exp of each row.
    fn head_forward<T: Fl>(
        &self,
        dims: Dims,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &mut [T],
        lse: &mut [f64],
    ) {
        let Dims { t, d, .. } = dims;
        let scale = T::from_f64(self.scale);
        let mut p = vec![T::from_f64(0.0); ROW_BLOCK * t];
        for start in (0..t).step_by(ROW_BLOCK) {
            let rows = ROW_BLOCK.min(t - start);
            let keys = start + rows;
            let p = &mut p[..rows * keys];
            let qb = View::rows(&q[start * d..keys * d], rows, d);
            gemm_serial(
                p,
                keys,
                qb,
                View::rows(&k[..keys * d], keys, d).t(),
                scale,
                false,
            );
            for (i, row) in p.chunks_mut(keys).enumerate() {
                lse[start + i] = softmax_causal(&mut row[..=start + i]);
                row[start + i + 1..].fill(T::from_f64(0.0));
            }
            let ob = &mut o[start * d..keys * d];
            gemm_serial(
                ob,
                d,
                View::rows(p, rows, keys),
                View::rows(&v[..keys * d], keys, d),
                T::from_f64(1.0),
                false,
            );
        }
    }

    /// One query head's backward: writes its query gradient and returns its contributions to
    /// the key and value gradients of its key/value head.
    #[allow(clippy::too_many_arguments)]
    fn head_backward<T: Fl>(
        &self,
        dims: Dims,
        (q, k, v): (&[T], &[T], &[T]),
        o: &[T],
        go: &[T],
        lse: &[f64],
        dq: &mut [T],
    ) -> (Vec<T>, Vec<T>) {
        let Dims { t, d, .. } = dims;
        let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
        let scale = T::from_f64(self.scale);
        let mut dk = vec![zero; t * d];
        let mut dv = vec![zero; t * d];
        // D_i = dO_i · O_i: the softmax backward's row term.
        let dot: Vec<T> = go
            .chunks(d)
            .zip(o.chunks(d))
            .map(|(g, o)| g.iter().zip(o).fold(zero, |acc, (&g, &o)| acc + g * o))
            .collect();
        let mut p = vec![zero; ROW_BLOCK * t];
        let mut ds = vec![zero; ROW_BLOCK * t];
        for start in (0..t).step_by(ROW_BLOCK) {
            let rows = ROW_BLOCK.min(t - start);
            let keys = start + rows;
            let (p, ds) = (&mut p[..rows * keys], &mut ds[..rows * keys]);
            let qb = View::rows(&q[start * d..keys * d], rows, d);
            let gob = View::rows(&go[start * d..keys * d], rows, d);
            let kk = View::rows(&k[..keys * d], keys, d);
            let vk = View::rows(&v[..keys * d], keys, d);
            gemm_serial(p, keys, qb, kk.t(), scale, false);
            for (i, row) in p.chunks_mut(keys).enumerate() {
                let pos = start + i;
                let m = T::from_f64(lse[pos]);
                for x in &mut row[..=pos] {
                    *x = (*x - m).exp_();
                }
                row[pos + 1..].fill(zero);
            }
            gemm_serial(
                &mut dv[..keys * d],
                d,
                View::rows(p, rows, keys).t(),
                gob,
                one,
                true,
            );
            gemm_serial(ds, keys, gob, vk.t(), one, false);
            for (i, (dr, pr)) in ds.chunks_mut(keys).zip(p.chunks(keys)).enumerate() {
                let di = dot[start + i];
                for (x, &pv) in dr.iter_mut().zip(pr) {
                    *x = pv * (*x - di);
                }
            }
            let dsb = View::rows(&ds[..], rows, keys);
            gemm_serial(&mut dq[start * d..keys * d], d, dsb, kk, scale, false);
            gemm_serial(&mut dk[..keys * d], d, dsb.t(), qb, scale, true);
        }
        (dk, dv)
    }

    fn forward<T: Fl>(&self, dims: Dims, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
        let Dims { nh, t, d, .. } = dims;
        let mut o = vec![T::from_f64(0.0); nh * t * d];
        let mut lse = vec![0.0; nh * t];
        o.par_chunks_mut(t * d)
            .zip(lse.par_chunks_mut(t))
            .enumerate()
            .for_each(|(h, (oh, lh))| {
                let kv = (h / self.rep) * t * d..(h / self.rep + 1) * t * d;
                let own = &q[h * t * d..(h + 1) * t * d];
                self.head_forward(dims, own, &k[kv.clone()], &v[kv], oh, lh);
            });
        // A second forward of the same node would find the first one's values, which are
        // the same.
        let _ = self.lse.set(lse);
        o
    }

    #[allow(clippy::type_complexity)]
    fn backward<T: Fl>(
        &self,
        dims: Dims,
        (q, k, v): (&[T], &[T], &[T]),
        o: &[T],
        go: &[T],
    ) -> candle_core::Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let Dims { nh, nkv, t, d } = dims;
        let Some(lse) = self.lse.get() else {
            candle_core::bail!("attention: backward before forward");
        };
        let head = t * d;
        let mut dq = vec![T::from_f64(0.0); nh * head];
        let parts: Vec<(Vec<T>, Vec<T>)> = dq
            .par_chunks_mut(head)
            .enumerate()
            .map(|(h, dqh)| {
                let kv = (h / self.rep) * head..(h / self.rep + 1) * head;
                let own = h * head..(h + 1) * head;
                self.head_backward(
                    dims,
                    (&q[own.clone()], &k[kv.clone()], &v[kv]),
                    &o[own.clone()],
                    &go[own],
                    &lse[h * t..(h + 1) * t],
                    dqh,
                )
            })
            .collect();
        let mut dk = vec![T::from_f64(0.0); nkv * head];
        let mut dv = vec![T::from_f64(0.0); nkv * head];
        for (h, (pk, pv)) in parts.iter().enumerate() {
            let kv = (h / self.rep) * head;
            for (x, &y) in dk[kv..kv + head].iter_mut().zip(pk) {
                *x += y;
            }
            for (x, &y) in dv[kv..kv + head].iter_mut().zip(pv) {
                *x += y;
            }
        }
        Ok((dq, dk, dv))
    }
}

/// Softmax of `row` in place; returns the log-sum-exp.
fn softmax_causal<T: Fl>(row: &mut [T]) -> f64 {
    let mut m = row[0];
    for &x in &row[1..] {
        if x > m {
            m = x;
        }
    }
    let mut sum = T::from_f64(0.0);
    for x in row.iter_mut() {
        *x = (*x - m).exp_();
        sum += *x;
    }
    for x in row.iter_mut() {
        *x /= sum;
    }
    m.to_f64() + sum.to_f64().ln()
}

fn dims_of(q: &Layout, k: &Layout, v: &Layout, rep: usize) -> candle_core::Result<Dims> {
    let (nh, t, d) = q.shape().dims3()?;
    let (nkv, tk, dk) = k.shape().dims3()?;
    if (tk, dk) != (t, d) || v.shape() != k.shape() || nkv * rep != nh {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} with {rep} query heads per kv head",
            q.shape(),
            k.shape(),
            v.shape()
        );
    }
    Ok(Dims { nh, nkv, t, d })
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }
    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Fl>(
            op: &CausalAttention,
            (qs, ql): (&CpuStorage, &Layout),
            (ks, kl): (&CpuStorage, &Layout),
            (vs, vl): (&CpuStorage, &Layout),
        ) -> candle_core::Result<CpuStorage> {
            let dims = dims_of(ql, kl, vl, op.rep)?;
            let o = op.forward(dims, slice::<T>(qs, ql)?, slice(ks, kl)?, slice(vs, vl)?);
            Ok(T::to_cpu_storage_owned(o))
        }
        let o = match qs {
            CpuStorage::F32(_) => run::<f32>(self, (qs, ql), (ks, kl), (vs, vl))?,
            CpuStorage::F64(_) => run::<f64>(self, (qs, ql), (ks, kl), (vs, vl))?,
            _ => candle_core::bail!("attention: only f32 and f64"),
        };
        Ok((o, ql.shape().clone()))
    }
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        go: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: Fl>(
            op: &CausalAttention,
            (q, k, v): (&Tensor, &Tensor, &Tensor),
            o: &Tensor,
            go: &Tensor,
        ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let dims = dims_of(q.layout(), k.layout(), v.layout(), op.rep)?;
            let (dq, dk, dv) = with_data::<T, _>(q, |qs| {
                with_data::<T, _>(k, |ks| {
                    with_data::<T, _>(v, |vs| {
                        with_data::<T, _>(o, |os| {
                            with_data::<T, _>(go, |gs| op.backward(dims, (qs, ks, vs), os, gs))
                        })
                    })
                })
            })?;
            Ok((
                Tensor::from_vec(dq, q.shape(), q.device())?,
                Tensor::from_vec(dk, k.shape(), k.device())?,
                Tensor::from_vec(dv, v.shape(), v.device())?,
            ))
        }
        let (dq, dk, dv) = match q.dtype() {
            candle_core::DType::F32 => run::<f32>(self, (q, k, v), o, go)?,
            _ => run::<f64>(self, (q, k, v), o, go)?,
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// `softmax(scale · q · kᵀ + causal mask) · v` for q (heads, tokens, head_dim) and k, v
/// (kv_heads, tokens, head_dim), query head h reading kv head `h / (heads / kv_heads)`.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (nh, nkv) = (q.dim(0)?, k.dim(0)?);
    if nkv == 0 || nh % nkv != 0 {
        candle_core::bail!("attention: {nh} query heads over {nkv} kv heads");
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        CausalAttention {
            rep: nh / nkv,
            scale,
            lse: OnceLock::new(),
        },
    )
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Var};

    use super::*;

    fn vals(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 29 + seed * 11) % 31) as f64 - 15.0) / 12.0)
            .collect()
    }

    /// The same attention from plain candle ops.
    fn plain(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let (nh, t, d) = q.dims3().unwrap();
        let nkv = k.dim(0).unwrap();
        let rep = nh / nkv;
        let mask: Vec<f64> = (0..t * t)
            .map(|i| {
                if i % t > i / t {
                    f64::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), q.device()).unwrap();
        let q = q.reshape((nkv, rep, t, d)).unwrap();
        let expand = |x: &Tensor| {
            let x = x
                .unsqueeze(1)
                .unwrap()
                .broadcast_as((nkv, rep, t, d))
                .unwrap();
            x.contiguous().unwrap()
        };
        let (k, v) = (expand(k), expand(v));
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale)
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&v).unwrap().reshape((nh, t, d)).unwrap()
    }

    #[test]
    fn fused_attention_matches_plain_ops_over_several_row_blocks() {
        let dev = Device::Cpu;
        // 150 tokens: two full row blocks and a partial one; 3 query heads per kv head.
        let (nh, nkv, t, d) = (6, 2, 150, 8);
        let q = Var::from_vec(vals(nh * t * d, 1), (nh, t, d), &dev).unwrap();
        let k = Var::from_vec(vals(nkv * t * d, 2), (nkv, t, d), &dev).unwrap();
        let v = Var::from_vec(vals(nkv * t * d, 3), (nkv, t, d), &dev).unwrap();
        let up = Tensor::from_vec(vals(nh * t * d, 4), (nh, t, d), &dev).unwrap();
        let scale = 0.35;
        let fused = causal_attention(&q, &k, &v, scale).unwrap();
        let reference = plain(&q, &k, &v, scale);
        let close = |a: &Tensor, b: &Tensor| {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            let diff = diff.to_scalar::<f64>().unwrap();
            assert!(diff < 1e-10, "differ by {diff}");
        };
        close(&fused, &reference);
        let grads = |y: &Tensor| y.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gr) = (grads(&fused), grads(&reference));
        for x in [&q, &k, &v] {
            close(gf.get(x).unwrap(), gr.get(x).unwrap());
        }
    }

    #[test]
    fn heads_that_do_not_share_kv_heads_evenly_are_refused() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((5, 4, 2), candle_core::DType::F32, &dev).unwrap();
        let kv = Tensor::zeros((2, 4, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(causal_attention(&q, &kv, &kv, 1.0).is_err());
    }
}
