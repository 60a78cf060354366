//! The base model's next-token distributions over a reply, kept small, and the KL divergence of
//! a trained policy from them: the training-time twin of the gate's drift bound.
//!
//! Pushing down the likelihood of disliked replies moves probability onto everything else,
//! junk included; the k3 estimate on the sampled tokens does not see that, because it reads
//! only the tokens that are there. The full next-token distribution does. Keeping it whole
//! (tokens × vocabulary) is too much memory for a run's samples, so each position keeps the
//! base's `k` likeliest tokens and the mass of the rest as one bucket. The KL of that
//! coarsened distribution, `Σ_top p_ref (ℓ_ref − ℓ_θ) + P_ref,tail (log P_ref,tail − log
//! P_θ,tail)`, never exceeds the full KL(base ‖ θ) and its gradient pulls both the top tokens
//! and the total tail mass back toward the base.

use candle_core::{D, DType, Tensor};

/// The base's distribution at each response position: its `k` likeliest tokens, their
/// log-probs, and the log of the mass outside them.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchor {
    pub k: usize,
    /// positions × k token ids.
    pub ids: Vec<u32>,
    /// positions × k log-probs.
    pub logprobs: Vec<f32>,
    /// Log of the mass outside the top `k`, per position.
    pub tail: Vec<f32>,
    /// Entropy of the whole distribution, per position (nats): where the base had a choice
    /// to make, which the top-`k` summary cannot tell.
    pub entropy: Vec<f32>,
    /// How much each position's KL counts: 1 where the anchor holds, 0 where it is left free
    /// ([`Anchor::leave_free`]).
    pub weights: Vec<f32>,
}

/// Smallest tail mass either side is given, so a log stays finite.
const MIN_TAIL: f64 = 1e-6;

impl Anchor {
    /// An anchor that keeps `k` tokens a position (at least one), with no positions yet.
    pub fn new(k: usize) -> Self {
        Anchor {
            k: k.max(1),
            ids: Vec::new(),
            logprobs: Vec::new(),
            tail: Vec::new(),
            entropy: Vec::new(),
            weights: Vec::new(),
        }
    }

    pub fn positions(&self) -> usize {
        self.tail.len()
    }

    /// Appends the top-`k` summary of each row of `log_softmax` (rows × vocabulary).
    pub fn push_rows(&mut self, log_softmax: &[Vec<f32>]) {
        for row in log_softmax {
            let k = self.k.min(row.len());
            let mut order: Vec<u32> = (0..row.len() as u32).collect();
            if k < row.len() {
                order.select_nth_unstable_by(k, |&a, &b| {
                    row[b as usize].total_cmp(&row[a as usize])
                });
            }
            let top = &order[..k];
            // The tail summed from its own entries, not as 1 − top: no cancellation.
            let tail: f64 = order[k..]
                .iter()
                .map(|&i| (row[i as usize] as f64).exp())
                .sum();
            let tail = tail.max(MIN_TAIL);
            self.ids.extend_from_slice(top);
            self.logprobs.extend(top.iter().map(|&i| row[i as usize]));
            // Rows shorter than k (tiny vocabularies) pad with zero-mass entries.
            for _ in k..self.k {
                self.ids.push(top.first().copied().unwrap_or(0));
                self.logprobs.push(f32::NEG_INFINITY);
            }
            self.tail.push(tail.ln() as f32);
            self.entropy.push(entropy(row));
            self.weights.push(1.0);
        }
    }

    /// Leaves the `share` of positions where the base's entropy is highest free (at least one
    /// when `share` is above 0) and holds every other one. A reply is decided at a few forking
    /// positions, its first word for one; holding those to the base holds back exactly the
    /// change a rating asks for, while the rest only carry the reply along.
    pub fn leave_free(&mut self, share: f64) {
        self.weights = weights_leaving_free(&self.entropy, share);
    }

    /// Holds only the positions where `at` is true and leaves every other one free: a hint
    /// teacher's distribution counts only where the hint moved the reply.
    pub fn hold_only(&mut self, at: &[bool]) {
        self.weights = (0..self.positions())
            .map(|i| if at.get(i) == Some(&true) { 1.0 } else { 0.0 })
            .collect();
    }

    /// KL(anchor ‖ θ) per position for rows `rows` of the anchor, each times its weight, from
    /// θ's logits for the same positions (rows × vocabulary), differentiable through `logits`.
    pub fn kl(&self, logits: &Tensor, rows: std::ops::Range<usize>) -> candle_core::Result<Tensor> {
        let n = rows.len();
        let dev = logits.device();
        let logits = logits.to_dtype(DType::F32)?;
        let m = logits.max_keepdim(D::Minus1)?.detach();
        let shifted = logits.broadcast_sub(&m)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let lsm = shifted.broadcast_sub(&lse)?;
        let span = rows.start * self.k..rows.end * self.k;
        let idx = Tensor::from_slice(&self.ids[span.clone()], (n, self.k), dev)?;
        let lp_top = lsm.gather(&idx, 1)?;
        let ref_top: Vec<f32> = self.logprobs[span].to_vec();
        let p_ref: Vec<f32> = ref_top.iter().map(|&l| l.exp()).collect();
        // Zero-mass padding contributes nothing; keep its log finite for the product.
        let ref_top: Vec<f32> = ref_top.iter().map(|&l| l.max(-1e4)).collect();
        let p_ref = Tensor::from_vec(p_ref, (n, self.k), dev)?;
        let ref_top = Tensor::from_vec(ref_top, (n, self.k), dev)?;
        let top = (&p_ref * (ref_top - &lp_top)?)?.sum(D::Minus1)?;
        let ref_tail = &self.tail[rows.clone()];
        let p_ref_tail = Tensor::from_vec(
            ref_tail.iter().map(|&l| l.exp()).collect::<Vec<f32>>(),
            n,
            dev,
        )?;
        let ref_tail = Tensor::from_slice(ref_tail, n, dev)?;
        let own_tail = (1.0 - lp_top.exp()?.sum(D::Minus1)?)?
            .clamp(MIN_TAIL, 1.0)?
            .log()?;
        let tail = (p_ref_tail * (ref_tail - own_tail)?)?;
        let weights = Tensor::from_slice(&self.weights[rows], n, dev)?;
        (top + tail)? * weights
    }
}

/// 0 at the `share` of positions with the highest entropy (at least one when `share` is above
/// 0), 1 elsewhere.
fn weights_leaving_free(entropy: &[f32], share: f64) -> Vec<f32> {
    let n = entropy.len();
    let mut w = vec![1.0f32; n];
    if !(share > 0.0) || n == 0 {
        return w;
    }
    let free = ((share * n as f64).ceil() as usize).clamp(1, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| entropy[b].total_cmp(&entropy[a]));
    for &i in &order[..free] {
        w[i] = 0.0;
    }
    w
}

/// `−Σ p ℓ` of one row of log-probabilities, in nats.
pub fn entropy(log_softmax: &[f32]) -> f32 {
    let h: f64 = log_softmax
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| -(l as f64).exp() * l as f64)
        .sum();
    h as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn log_softmax(v: &[f32]) -> Vec<f32> {
        let m = v.iter().cloned().fold(f32::MIN, f32::max);
        let lse = v.iter().map(|x| ((x - m) as f64).exp()).sum::<f64>().ln() as f32 + m;
        v.iter().map(|x| x - lse).collect()
    }

    #[test]
    fn with_k_covering_the_vocabulary_it_is_the_exact_kl() {
        let base = [0.3f32, -1.0, 2.0, 0.5, -0.2];
        let pol = [1.0f32, 0.0, 1.5, -0.5, 0.2];
        let mut a = Anchor::new(5);
        a.push_rows(&[log_softmax(&base)]);
        let logits = Tensor::from_slice(&pol, (1, 5), &Device::Cpu).unwrap();
        let kl = a.kl(&logits, 0..1).unwrap().to_vec1::<f32>().unwrap()[0];
        let (lb, lp) = (log_softmax(&base), log_softmax(&pol));
        let exact: f32 = lb.iter().zip(&lp).map(|(b, p)| b.exp() * (b - p)).sum();
        assert!((kl - exact).abs() < 1e-4, "{kl} vs {exact}");
        let h: f32 = -lb.iter().map(|l| l.exp() * l).sum::<f32>();
        assert!((a.entropy[0] - h).abs() < 1e-5, "{} vs {h}", a.entropy[0]);
        assert!(entropy(&log_softmax(&[0.0; 4])) - 4f32.ln() < 1e-6);
    }

    #[test]
    fn a_coarse_anchor_is_zero_at_the_base_and_its_gradient_pulls_the_tail_back() {
        let base = [3.0f32, 2.5, 0.0, -0.3, -0.1, 0.1];
        let mut a = Anchor::new(2);
        a.push_rows(&[log_softmax(&base)]);
        assert_eq!(&a.ids[..], &[0, 1]);
        let same = Tensor::from_slice(&base, (1, 6), &Device::Cpu).unwrap();
        let kl0 = a.kl(&same, 0..1).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!(kl0.abs() < 1e-5, "{kl0}");
        // A policy that spread mass into the tail: descending the KL takes it back out.
        let spread = [2.0f32, 1.5, 1.0, 0.7, 0.9, 1.1];
        let v = Var::from_slice(&spread, (1, 6), &Device::Cpu).unwrap();
        let kl = a.kl(v.as_tensor(), 0..1).unwrap().sum_all().unwrap();
        assert!(kl.to_scalar::<f32>().unwrap() > 0.1);
        let g = kl.backward().unwrap();
        let g = g
            .get(&v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(g[0] < 0.0 && g[1] < 0.0, "top tokens pulled up: {g:?}");
        assert!(g[2..].iter().all(|&x| x > 0.0), "tail pushed down: {g:?}");
    }

    #[test]
    fn the_anchor_leaves_the_highest_entropy_positions_free() {
        let h = [0.1f32, 2.0, 0.3, 1.5, 0.0, 0.2, 0.05, 0.4, 0.01, 0.02];
        let w = weights_leaving_free(&h, 0.2);
        assert_eq!(w, [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(weights_leaving_free(&h[..3], 0.01), [1.0, 0.0, 1.0]);
        assert!(weights_leaving_free(&h, 0.0).iter().all(|&x| x == 1.0));
        assert!(weights_leaving_free(&h, f64::NAN).iter().all(|&x| x == 1.0));
        assert!(weights_leaving_free(&[], 0.5).is_empty());
    }

    #[test]
    fn holding_only_some_positions_leaves_the_rest_free() {
        let mut a = Anchor::new(2);
        a.push_rows(&vec![log_softmax(&[1.0, 0.0, -1.0]); 3]);
        a.hold_only(&[false, true]);
        assert_eq!(
            a.weights,
            [0.0, 1.0, 0.0],
            "a mask too short leaves the rest free"
        );
    }

    #[test]
    fn a_position_left_free_adds_nothing_to_the_kl() {
        let (sharp, flat) = ([4.0f32, 0.0, 0.0, 0.0], [0.1f32, 0.0, 0.2, 0.1]);
        let mut a = Anchor::new(4);
        a.push_rows(&[log_softmax(&sharp), log_softmax(&flat)]);
        let pol = [0.0f32, 1.0, 0.0, 2.0, 3.0, 0.0, 0.0, -1.0];
        let logits = Tensor::from_slice(&pol, (2, 4), &Device::Cpu).unwrap();
        let held = a.kl(&logits, 0..2).unwrap().to_vec1::<f32>().unwrap();
        assert!(held.iter().all(|&k| k > 0.01), "{held:?}");
        a.leave_free(0.5);
        assert_eq!(a.weights, [1.0, 0.0]);
        let weighted = a.kl(&logits, 0..2).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(weighted, [held[0], 0.0]);
        let second = a.kl(&logits.narrow(0, 1, 1).unwrap(), 1..2).unwrap();
        assert_eq!(second.to_vec1::<f32>().unwrap(), [0.0]);
    }
}
