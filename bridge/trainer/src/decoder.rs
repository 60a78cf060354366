//! Our own Llama/Qwen-family decoder built only from differentiable candle ops (plus the custom
//! ops in [`crate::ops`], [`crate::fused`] and [`crate::device_ops`], which carry their own
//! backward). The base is frozen; LoRA on q, k, v and o is added when a [`LoraSet`] is given.

use candle_core::{D, DType, Device, Tensor};

use crate::anchor::Anchor;
use crate::error::{Result, TensorContext, TrainerError};
use crate::lora::LoraSet;
use crate::model::{BaseWeights, ModelConfig};
use crate::ops::{
    cpu_frozen_linear, cpu_lora_linear, custom_ops_run_on, frozen_linear, lora_linear,
    token_logprobs,
};

/// Response rows per block of logits on the CPU (small blocks stay in cache and let the
/// allocator reuse them).
const LOGIT_BLOCK_CPU: usize = 64;
/// Response rows per block of logits on a GPU (fewer, larger kernels).
const LOGIT_BLOCK_GPU: usize = 512;

/// Runs `f` on one of rayon's worker threads (at once if already on one). The kernels split
/// their work over rayon's threads; called from outside the pool, each kernel is handed over
/// and its caller sleeps, and on two cores the caller's own serial work then competed with
/// the pool's spinning threads: running the pass inside the pool made a CPU training step
/// 6–10 % faster.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Which kernels the decoder's forward, and so its backward, is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The fused CPU kernels of [`crate::fused`]: the default on the CPU.
    FusedCpu,
    /// The device-generic ops of [`crate::device_ops`] (candle's own forward kernels, our
    /// backward): the default on CUDA. They also run on the CPU, where the tests check them.
    Device,
    /// Plain candle ops only: the reference, on any device.
    Reference,
}

impl Kernels {
    /// The default for `device`.
    pub fn default_for(device: &Device) -> Self {
        if device.is_cpu() {
            Self::FusedCpu
        } else if custom_ops_run_on(device) {
            Self::Device
        } else {
            Self::Reference
        }
    }

    /// `self` where `device` supports it, else the nearest that it does.
    fn on(self, device: &Device) -> Self {
        match self {
            Self::FusedCpu if !device.is_cpu() => Self::default_for(device),
            Self::Device if !custom_ops_run_on(device) => Self::Reference,
            k => k,
        }
    }
}

/// A forward pass over a frozen base.
pub struct Decoder<'m> {
    cfg: &'m ModelConfig,
    w: &'m BaseWeights,
    inv_freq: Vec<f64>,
    kernels: Kernels,
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let r = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(w)
}

fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    // softmax is shift-invariant, so the max needs no gradient.
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

fn rotate_half(x: &Tensor) -> candle_core::Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

struct LoraRef {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

/// `x · Wᵀ` with a frozen `W`, in the kernels' own op.
fn frozen(kernels: Kernels, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    match kernels {
        Kernels::FusedCpu => cpu_frozen_linear(x, w),
        Kernels::Device | Kernels::Reference => frozen_linear(x, w),
    }
}

fn linear(
    kernels: Kernels,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    lora: Option<&LoraRef>,
) -> candle_core::Result<Tensor> {
    let mut y = match (lora, kernels) {
        (Some(l), Kernels::FusedCpu) => cpu_lora_linear(x, w, &l.a, &l.b, l.scale)?,
        (Some(l), Kernels::Device) => lora_linear(x, w, &l.a, &l.b, l.scale)?,
        (Some(l), Kernels::Reference) => {
            // Scale the small B (out × r) rather than the (tokens × out) product.
            let b = (&l.b * l.scale)?;
            (frozen_linear(x, w)? + x.matmul(&l.a.t()?)?.matmul(&b.t()?)?)?
        }
        (None, k) => frozen(k, x, w)?,
    };
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    Ok(y)
}

/// What [`Decoder::response_kl`] reads at each response position.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// KL(reference ‖ lora) of the next-token distributions, nats.
    pub kl: Vec<f64>,
    /// The log-probability of the token that is there, under the reference and under `lora`.
    pub reference_logprobs: Vec<f32>,
    pub logprobs: Vec<f32>,
}

impl<'m> Decoder<'m> {
    pub fn new(cfg: &'m ModelConfig, w: &'m BaseWeights) -> Self {
        let hd = cfg.head_dim;
        let mut inv_freq: Vec<f64> = (0..hd / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / hd as f64))
            .collect();
        if let Some(s) = cfg.rope_scaling {
            let low_wavelen = s.original_max_position_embeddings as f64 / s.low_freq_factor;
            let high_wavelen = s.original_max_position_embeddings as f64 / s.high_freq_factor;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= s.factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (s.original_max_position_embeddings as f64 / wavelen
                        - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        let kernels = Kernels::default_for(w.device());
        Self {
            cfg,
            w,
            inv_freq,
            kernels,
        }
    }

    /// `true`: the device's default kernels (fused on the CPU, device ops on CUDA); `false`:
    /// the plain-candle-op reference path.
    pub fn with_fused_ops(self, on: bool) -> Self {
        let k = if on {
            Kernels::default_for(self.w.device())
        } else {
            Kernels::Reference
        };
        self.with_kernels(k)
    }

    /// Chooses the kernels; one the weights' device cannot run falls back to its default
    /// ([`Kernels::FusedCpu`] off the CPU) or to [`Kernels::Reference`].
    pub fn with_kernels(mut self, k: Kernels) -> Self {
        self.kernels = k.on(self.w.device());
        self
    }

    /// The kernels in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let eps = self.cfg.rms_eps;
        match self.kernels {
            Kernels::FusedCpu => crate::fused::rms_norm(x, w, eps),
            Kernels::Device => crate::device_ops::rms_norm(x, w, eps),
            Kernels::Reference => rms_norm(x, w, eps),
        }
    }

    fn rope_f64(&self, t: usize) -> crate::fused::RopeTables {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in 0..t {
            for f in &self.inv_freq {
                let a = p as f64 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        crate::fused::RopeTables {
            cos: std::sync::Arc::new(cos),
            sin: std::sync::Arc::new(sin),
            t,
            half,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        self.cfg
    }

    fn device(&self) -> &Device {
        self.w.device()
    }

    fn dtype(&self) -> DType {
        self.w.dtype()
    }

    /// cos and sin of every position's angles on the device: (t, head_dim) with each angle
    /// twice (`copies` = 2, the reference path) or (t, head_dim / 2) (`copies` = 1).
    fn rope_tables(&self, t: usize, copies: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half * copies);
        let mut sin = Vec::with_capacity(t * half * copies);
        for p in 0..t {
            for _ in 0..copies {
                for f in &self.inv_freq {
                    let a = p as f64 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let dev = self.device();
        let cos = Tensor::from_vec(cos, (t, half * copies), dev)?.to_dtype(self.dtype())?;
        let sin = Tensor::from_vec(sin, (t, half * copies), dev)?.to_dtype(self.dtype())?;
        Ok((cos, sin))
    }

    fn causal_mask(&self, rep: usize, t: usize) -> candle_core::Result<Tensor> {
        let mut m = Vec::with_capacity(rep * t * t);
        for _ in 0..rep {
            for i in 0..t {
                for j in 0..t {
                    m.push(if j > i { f64::NEG_INFINITY } else { 0.0 });
                }
            }
        }
        Tensor::from_vec(m, (rep * t, t), self.device())?.to_dtype(self.dtype())
    }

    /// Hidden states (tokens, hidden) after the last layer, before the final norm.
    fn hidden(
        &self,
        ids: &[u32],
        lora: Option<&LoraSet>,
        track: bool,
    ) -> candle_core::Result<Tensor> {
        let cfg = self.cfg;
        let t = ids.len();
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let rep = nh / nkv;
        let idx = Tensor::from_slice(ids, t, self.device())?;
        let mut x = self.w.embed.index_select(&idx, 0)?;
        let kernels = self.kernels;
        let fused = kernels == Kernels::FusedCpu;
        let (tables, cos_sin, mask) = match kernels {
            Kernels::FusedCpu => (Some(self.rope_f64(t)), None, None),
            Kernels::Device => (
                None,
                Some(self.rope_tables(t, 1)?),
                Some(self.causal_mask(rep, t)?),
            ),
            Kernels::Reference => (
                None,
                Some(self.rope_tables(t, 2)?),
                Some(self.causal_mask(rep, t)?),
            ),
        };
        let scale_qk = 1.0 / (hd as f64).sqrt();
        for (li, lw) in self.w.layers.iter().enumerate() {
            let lr: Option<Vec<LoraRef>> = lora.map(|set| {
                set.layers[li]
                    .iter()
                    .map(|p| {
                        let (a, b) = if track {
                            (p.a.as_tensor().clone(), p.b.as_tensor().clone())
                        } else {
                            (p.a.as_tensor().detach(), p.b.as_tensor().detach())
                        };
                        LoraRef {
                            a,
                            b,
                            scale: set.scale(),
                        }
                    })
                    .collect()
            });
            let l = |j: usize| lr.as_ref().map(|v| &v[j]);
            let bias = |j: usize| lw.qkv_bias.as_ref().map(|b| &b[j]);
            let h = self.norm(&x, &lw.attn_norm)?;
            let q = linear(kernels, &h, &lw.proj[0], bias(0), l(0))?;
            let k = linear(kernels, &h, &lw.proj[1], bias(1), l(1))?;
            let v = linear(kernels, &h, &lw.proj[2], bias(2), l(2))?;
            let (q, k, v) = match (&tables, &cos_sin) {
                (Some(tables), _) => {
                    let (mut q, mut k) = (q, k);
                    if let Some([qn, kn]) = &lw.qk_norm {
                        q = self.norm(&q.reshape((t, nh, hd))?, qn)?;
                        k = self.norm(&k.reshape((t, nkv, hd))?, kn)?;
                    }
                    (
                        crate::fused::to_heads(&q, nh, hd, Some(tables))?,
                        crate::fused::to_heads(&k, nkv, hd, Some(tables))?,
                        crate::fused::to_heads(&v, nkv, hd, None)?,
                    )
                }
                (None, Some((cos, sin))) => {
                    let mut q = q.reshape((t, nh, hd))?.transpose(0, 1)?.contiguous()?;
                    let mut k = k.reshape((t, nkv, hd))?.transpose(0, 1)?.contiguous()?;
                    let v = v.reshape((t, nkv, hd))?.transpose(0, 1)?.contiguous()?;
                    if let Some([qn, kn]) = &lw.qk_norm {
                        q = self.norm(&q, qn)?;
                        k = self.norm(&k, kn)?;
                    }
                    if kernels == Kernels::Device {
                        (
                            crate::device_ops::rope(&q, cos, sin)?,
                            crate::device_ops::rope(&k, cos, sin)?,
                            v,
                        )
                    } else {
                        (
                            (q.broadcast_mul(cos)? + rotate_half(&q)?.broadcast_mul(sin)?)?,
                            (k.broadcast_mul(cos)? + rotate_half(&k)?.broadcast_mul(sin)?)?,
                            v,
                        )
                    }
                }
                (None, None) => candle_core::bail!("internal: no rope tables"),
            };
            let o = if fused {
                let o = crate::attention::causal_attention(&q, &k, &v, scale_qk)?;
                crate::fused::from_heads(&o)?
            } else {
                // Grouped-query attention without copying k/v: the `rep` query heads of one
                // kv head are stacked along the token axis.
                let q = q.reshape((nkv, rep * t, hd))?;
                let scores = q.matmul(&k.t()?)?;
                let p = match (&mask, kernels) {
                    (Some(mask), Kernels::Device) => {
                        crate::device_ops::masked_softmax(&scores, scale_qk, mask)?
                    }
                    (Some(mask), _) => softmax_last(&(scores * scale_qk)?.broadcast_add(mask)?)?,
                    (None, _) => candle_core::bail!("internal: no attention mask"),
                };
                let o = p.matmul(&v)?.reshape((nh, t, hd))?;
                o.transpose(0, 1)?.reshape((t, nh * hd))?
            };
            let o = linear(kernels, &o, &lw.proj[3], None, l(3))?;
            x = (x + o)?;
            let h = self.norm(&x, &lw.mlp_norm)?;
            let g = frozen(kernels, &h, &lw.gate)?;
            let u = frozen(kernels, &h, &lw.up)?;
            let a = match kernels {
                Kernels::FusedCpu => crate::fused::swiglu(&g, &u)?,
                Kernels::Device => crate::device_ops::swiglu(&g, &u)?,
                Kernels::Reference => (g.silu()? * u)?,
            };
            x = (x + frozen(kernels, &a, &lw.down)?)?;
        }
        Ok(x)
    }

    /// Log-probabilities of `ids[start..]`, each given the tokens before it: shape
    /// (ids.len() − start,). Logits are computed for those positions only. With `track`,
    /// the result carries the graph back to the LoRA variables.
    pub fn response_logprobs(
        &self,
        ids: &[u32],
        start: usize,
        lora: Option<&LoraSet>,
        track: bool,
    ) -> Result<Tensor> {
        let parts = self.response_blocks(ids, start, lora, track, |rows, logits| {
            token_logprobs(logits, &ids[start + rows.start..start + rows.end])
        })?;
        Tensor::cat(&parts, 0).ctx("decoder forward")
    }

    /// [`Self::response_logprobs`] with the LoRA graph tracked, and beside it KL(anchor ‖ lora)
    /// at each position (see [`Anchor::kl`]), both from the same logits.
    pub fn response_logprobs_anchored(
        &self,
        ids: &[u32],
        start: usize,
        lora: &LoraSet,
        anchor: &Anchor,
    ) -> Result<(Tensor, Tensor)> {
        let (lp, mut kls) = self.response_logprobs_anchored_to(ids, start, lora, &[anchor])?;
        let kl = kls
            .pop()
            .ok_or_else(|| TrainerError::Request("no anchor".into()))?;
        Ok((lp, kl))
    }

    /// [`Self::response_logprobs_anchored`] against several anchors at once (the base's and a
    /// hint teacher's): one KL tensor per anchor, all from the same logits.
    pub fn response_logprobs_anchored_to(
        &self,
        ids: &[u32],
        start: usize,
        lora: &LoraSet,
        anchors: &[&Anchor],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let n = ids.len().saturating_sub(start);
        if let Some(a) = anchors.iter().find(|a| a.positions() != n) {
            return Err(TrainerError::Request(format!(
                "the anchor covers {} positions, the response has {n}",
                a.positions(),
            )));
        }
        let parts = self.response_blocks(ids, start, Some(lora), true, |rows, logits| {
            let lp = token_logprobs(logits, &ids[start + rows.start..start + rows.end])?;
            let kls = anchors
                .iter()
                .map(|a| a.kl(logits, rows.clone()))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok((lp, kls))
        })?;
        let mut lps = Vec::with_capacity(parts.len());
        let mut kls: Vec<Vec<Tensor>> = vec![Vec::with_capacity(parts.len()); anchors.len()];
        for (lp, ks) in parts {
            lps.push(lp);
            for (slot, k) in kls.iter_mut().zip(ks) {
                slot.push(k);
            }
        }
        let cat = |t: &[Tensor]| Tensor::cat(t, 0).ctx("decoder forward");
        Ok((
            cat(&lps)?,
            kls.iter().map(|k| cat(k)).collect::<Result<_>>()?,
        ))
    }

    /// The `k` likeliest next tokens and the mass of the rest at each position of `ids[start..]`
    /// (no graph): what [`Self::response_logprobs_anchored`] holds a policy near; and, from the
    /// same pass, the log-probability of each token that is there.
    pub fn response_anchor(
        &self,
        ids: &[u32],
        start: usize,
        lora: Option<&LoraSet>,
        k: usize,
    ) -> Result<(Anchor, Vec<f32>)> {
        // Never more tokens than the vocabulary: a padded slot would count a token twice.
        let mut anchor = Anchor::new(k.min(self.cfg.vocab_size));
        let parts = self.response_blocks(ids, start, lora, false, |rows, logits| {
            let lsm = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
            let lsm = lsm.to_vec2::<f32>()?;
            anchor.push_rows(&lsm);
            let targets = &ids[start + rows.start..start + rows.end];
            Ok(lsm
                .iter()
                .zip(targets)
                .map(|(row, &t)| row[t as usize])
                .collect::<Vec<f32>>())
        })?;
        Ok((anchor, parts.concat()))
    }

    /// Runs the decoder over `ids` and hands `f` the logits of the response positions
    /// `ids[start..]` in blocks of rows (positions relative to `start`): a (tokens × vocab)
    /// matrix is never whole in memory, and each block stays small enough for the allocator
    /// to reuse.
    fn response_blocks<T: Send>(
        &self,
        ids: &[u32],
        start: usize,
        lora: Option<&LoraSet>,
        track: bool,
        mut f: impl FnMut(std::ops::Range<usize>, &Tensor) -> candle_core::Result<T> + Send,
    ) -> Result<Vec<T>> {
        self.check_ids(ids, start)?;
        let n = ids.len() - start;
        let run = || -> candle_core::Result<Vec<T>> {
            let x = self.hidden(ids, lora, track)?;
            let x = x.narrow(0, start - 1, n)?;
            let x = self.norm(&x, &self.w.final_norm)?;
            let block = self.logit_block();
            let mut parts = Vec::with_capacity(n.div_ceil(block));
            for s in (0..n).step_by(block) {
                let len = block.min(n - s);
                let logits = frozen(self.kernels, &x.narrow(0, s, len)?, &self.w.lm_head)?;
                parts.push(f(s..s + len, &logits)?);
            }
            Ok(parts)
        };
        in_pool(run).ctx("decoder forward")
    }

    /// KL(reference ‖ lora) of the next-token distributions at each position of `ids[start..]`,
    /// in nats: how far an adapter moved the whole distribution, not only the probability of
    /// the tokens that are there. A policy pushed off its own replies can keep the text's
    /// tokens as likely as before while spreading mass over the rest of the vocabulary. The
    /// tokens' own log-probabilities under both come from the same pass.
    pub fn response_kl(
        &self,
        ids: &[u32],
        start: usize,
        reference: Option<&LoraSet>,
        lora: Option<&LoraSet>,
    ) -> Result<Divergence> {
        self.check_ids(ids, start)?;
        let n = ids.len() - start;
        let run = || -> candle_core::Result<Divergence> {
            let states = |l: Option<&LoraSet>| -> candle_core::Result<Tensor> {
                let x = self.hidden(ids, l, false)?.narrow(0, start - 1, n)?;
                self.norm(&x, &self.w.final_norm)
            };
            let (xr, xl) = (states(reference)?, states(lora)?);
            let block = self.logit_block();
            let mut out = Divergence {
                kl: Vec::with_capacity(n),
                reference_logprobs: Vec::with_capacity(n),
                logprobs: Vec::with_capacity(n),
            };
            for s in (0..n).step_by(block) {
                let len = block.min(n - s);
                let log_softmax = |x: &Tensor| -> candle_core::Result<Tensor> {
                    let logits = frozen(self.kernels, &x.narrow(0, s, len)?, &self.w.lm_head)?
                        .to_dtype(DType::F32)?;
                    candle_nn::ops::log_softmax(&logits, D::Minus1)
                };
                let (lr, ll) = (log_softmax(&xr)?, log_softmax(&xl)?);
                let kl = lr.exp()?.mul(&(&lr - &ll)?)?.sum(D::Minus1)?;
                out.kl
                    .extend(kl.to_vec1::<f32>()?.into_iter().map(f64::from));
                let idx =
                    Tensor::from_slice(&ids[start + s..start + s + len], (len, 1), lr.device())?;
                let token = |l: &Tensor| l.gather(&idx, 1)?.squeeze(1)?.to_vec1::<f32>();
                out.reference_logprobs.extend(token(&lr)?);
                out.logprobs.extend(token(&ll)?);
            }
            Ok(out)
        };
        in_pool(run).ctx("decoder forward")
    }

    /// A response range inside `ids`, and every id inside the vocabulary.
    fn check_ids(&self, ids: &[u32], start: usize) -> Result<()> {
        check_response_range(ids, start)?;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(TrainerError::Request(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Rows of logits computed at once (small blocks on the CPU stay in cache).
    fn logit_block(&self) -> usize {
        if self.device().is_cpu() {
            LOGIT_BLOCK_CPU
        } else {
            LOGIT_BLOCK_GPU
        }
    }

    /// Next-token logits at the last position (for tests and sampling checks).
    pub fn last_logits(&self, ids: &[u32], lora: Option<&LoraSet>) -> Result<Tensor> {
        let run = || -> candle_core::Result<Tensor> {
            let x = self.hidden(ids, lora, false)?;
            let x = x.narrow(0, ids.len() - 1, 1)?;
            let x = self.norm(&x, &self.w.final_norm)?;
            frozen(self.kernels, &x, &self.w.lm_head)?.squeeze(0)
        };
        if ids.is_empty() {
            return Err(TrainerError::Request("no tokens".into()));
        }
        run().ctx("decoder forward")
    }
}

/// A response must start after the first token (its logits come from the one before) and
/// before the end.
fn check_response_range(ids: &[u32], start: usize) -> Result<()> {
    if start == 0 || start >= ids.len() {
        return Err(TrainerError::Request(format!(
            "response must start after the first token and before the end (start {start}, length {})",
            ids.len()
        )));
    }
    Ok(())
}
