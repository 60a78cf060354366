//! The training objective of DESIGN.md ("The learning algorithm").
//!
//! For one rated reply (one sample) with reward r ∈ [−1, 1] and response tokens t:
//!
//! * advantage `A = r − b`, where `b` is an exponential moving average of past rewards of the
//!   model (decay 0.99), read before the sample and updated after it ([`Baseline`]). No
//!   per-batch z-score: that would erase the baseline. The average is bias-corrected (divided
//!   by `1 − 0.99ⁿ` after `n` rewards, as Adam does its moments): started at zero, the raw
//!   average stays near zero for the first hundred ratings, and when most early replies are
//!   disliked nearly every advantage is then negative, which pushes the policy off its own
//!   replies and onto junk (BENCHMARKS.md, the prefix rater's full run).
//! * with a hint (the reason given with a bad rating), a token-level on-policy-distillation
//!   term: `A_t = A + w · clip(ℓ_teacher,t − ℓ_beh,t, −C, C)`, where the teacher is the same
//!   model (base plus the behaviour adapter) with the hint added to its context and the student
//!   `ℓ_beh` is that model without it: the difference is exactly what the hint changes. The
//!   term acts only on tokens whose difference is at least `opd_min_shift` (half a nat): a hint
//!   moves a few tokens a lot and the rest a little, and distilling the little shifts too
//!   moved the whole reply away from the base ([`hint_terms`]). At those same positions the
//!   teacher's whole next-token distribution is distilled too,
//!   `distill = mean_t m_t KL_t(teacher ‖ θ)` ([`hint_positions`]): the sampled token only
//!   says that the word there was worse, the distribution says which word the hint wanted.
//! * per-token ratio `ρ_t = exp(ℓ_θ,t − ℓ_beh,t)` against the behaviour policy, PPO-style
//!   surrogate `actor = −mean_t min(ρ_t A_t, clip(ρ_t, 0.5, 2.0) A_t)`.
//! * drift filter on the geometric-mean ratio against the frozen base,
//!   `log ρ̄ = mean_t(ℓ_θ,t − ℓ_ref,t)`: its excess in the direction the sample pushes,
//!   `e = sign(mean_t A_t) · log ρ̄`, gives a stop-gradient scale `s = 1` for `e ≤ δ`,
//!   `s = δ/e` for `δ < e ≤ δ_hard`, and `s = 0` beyond (the trajectory is filtered). A sample
//!   that would pull the policy back toward the base is never damped.
//! * k3 KL estimate against the frozen base, `kl = mean_t (exp(ℓ_ref − ℓ_θ) − (ℓ_ref − ℓ_θ) − 1)`.
//! * an anchor on the whole next-token distribution, `anchor = mean_t w_t KL_t(base ‖ θ)` with
//!   the base's distribution kept as its top tokens plus the rest ([`crate::anchor`]): the k3
//!   term reads only the sampled tokens and cannot see mass spread over the rest of the
//!   vocabulary, which is how these policies degenerate. The positions where the base's
//!   entropy is highest (the `anchor_free_share` of each reply, where it was decided) are left
//!   free; the anchor holds the rest ([`crate::anchor::Anchor::leave_free`]).
//! * sample loss `L = s · actor + β · kl + β_anchor · anchor + λ · distill`; a step averages
//!   L over its samples.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TensorContext, TrainerError};

/// Exponential moving average of past rewards for one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub value: f64,
    /// Number of rewards folded in so far.
    pub count: u64,
}

impl Baseline {
    pub const DECAY: f64 = 0.99;

    /// Folds one reward in: `b ← d·b + (1 − d)·r`.
    pub fn update(&mut self, reward: f64, decay: f64) {
        self.value = decay * self.value + (1.0 - decay) * reward;
        self.count += 1;
    }

    /// The average with its start-at-zero bias removed: `b / (1 − dⁿ)` (0 before any reward).
    pub fn estimate(&self, decay: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let weight = 1.0 - decay.powf(self.count as f64);
        if weight <= f64::EPSILON {
            return self.value;
        }
        (self.value / weight).clamp(-1.0, 1.0)
    }
}

/// Advantages `A_i = r_i − b̂_{i−1}` (the bias-corrected baseline) for rewards in time order,
/// and the baseline after them.
pub fn advantages(rewards: &[f64], baseline: Baseline, decay: f64) -> Result<(Vec<f64>, Baseline)> {
    let mut b = baseline;
    let mut out = Vec::with_capacity(rewards.len());
    for &r in rewards {
        if !r.is_finite() || !(-1.0..=1.0).contains(&r) {
            return Err(TrainerError::Request(format!(
                "reward {r} is outside [-1, 1]"
            )));
        }
        out.push(r - b.estimate(decay));
        b.update(r, decay);
    }
    Ok((out, b))
}

/// The hint's term per response token: `w · clip(ℓ_teacher − ℓ_student, −C, C)` where the
/// teacher's log-prob differs from the student's by at least `min_shift` nats, 0 elsewhere.
/// A hint such as "start with 'To'" changes a few tokens a lot (the first word) and every other
/// token a little; distilling those small shifts too moved SmolLM2 further from the base in the
/// hints arm's first run (KL 0.061) than four runs without hints did (0.037; BENCHMARKS.md,
/// "Learning"). Below the threshold the term is exactly 0.
pub fn hint_terms(teacher: &[f32], student: &[f32], p: &ObjectiveParams) -> Vec<f64> {
    hint_positions(teacher, student, p)
        .into_iter()
        .zip(teacher.iter().zip(student))
        .map(|(moved, (&lt, &ls))| {
            let shift = (lt as f64 - ls as f64).clamp(-p.opd_clip, p.opd_clip);
            if moved { p.opd_weight * shift } else { 0.0 }
        })
        .collect()
}

/// The positions [`hint_terms`] acts on: where the hint moved the sampled token's log-prob by
/// at least `min_shift` nats. There the teacher's whole next-token distribution is distilled
/// too (`opd_dist_weight`): the sampled-token term can only say that the token there was
/// worse, not which one the hint wanted instead.
pub fn hint_positions(teacher: &[f32], student: &[f32], p: &ObjectiveParams) -> Vec<bool> {
    teacher
        .iter()
        .zip(student)
        .map(|(&lt, &ls)| (lt as f64 - ls as f64).abs() >= p.opd_min_shift)
        .collect()
}

/// Per-token advantages: the sample's advantage plus, with a hint, [`hint_terms`].
pub fn token_advantages(
    advantage: f64,
    teacher: Option<&[f32]>,
    student: &[f32],
    p: &ObjectiveParams,
) -> Vec<f64> {
    match teacher {
        None => vec![advantage; student.len()],
        Some(t) => hint_terms(t, student, p)
            .into_iter()
            .map(|h| advantage + h)
            .collect(),
    }
}

/// `−mean_t min(ρ_t A_t, clip(ρ_t, lo, hi) A_t)` with `ρ_t = exp(lp_new − lp_beh)`.
pub fn clipped_surrogate(
    lp_new: &Tensor,
    lp_beh: &Tensor,
    adv: &Tensor,
    lo: f64,
    hi: f64,
) -> candle_core::Result<Tensor> {
    let ratio = (lp_new - lp_beh.detach())?.exp()?;
    let unclipped = (&ratio * adv)?;
    let clipped = (ratio.clamp(lo, hi)? * adv)?;
    unclipped.minimum(&clipped)?.mean_all()?.neg()
}

/// k3 estimate of KL(π_θ ‖ π_ref) averaged over tokens.
pub fn k3_kl(lp_new: &Tensor, lp_ref: &Tensor) -> candle_core::Result<Tensor> {
    let d = (lp_ref.detach() - lp_new)?;
    ((d.exp()? - &d)? - 1.0)?.mean_all()
}

/// `β_anchor · mean_t KL_t(base ‖ θ)` from the per-position KL of [`crate::anchor::Anchor::kl`],
/// and the mean KL's value.
pub fn anchor_loss(kl: &Tensor, beta: f64) -> Result<(Tensor, f64)> {
    let mean = kl.mean_all().ctx("anchor KL")?;
    let value = mean
        .to_dtype(candle_core::DType::F64)
        .and_then(|t| t.to_scalar::<f64>())
        .ctx("reading anchor KL")?;
    Ok(((mean * beta).ctx("anchor loss")?, value))
}

/// Drift filter: (scale, log ρ̄) from per-token log-probs (values only, no gradient).
pub fn drift_scale(
    lp_new: &[f32],
    lp_ref: &[f32],
    mean_advantage: f64,
    band: f64,
    hard: f64,
) -> (f64, f64) {
    let n = lp_new.len().max(1) as f64;
    let log_rho: f64 = lp_new
        .iter()
        .zip(lp_ref)
        .map(|(&a, &b)| a as f64 - b as f64)
        .sum::<f64>()
        / n;
    let excess = if mean_advantage >= 0.0 {
        log_rho
    } else {
        -log_rho
    };
    let scale = if excess <= band {
        1.0
    } else if excess <= hard {
        band / excess
    } else {
        0.0
    };
    (scale, log_rho)
}

/// Settings of the objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveParams {
    pub ratio_clip_low: f64,
    pub ratio_clip_high: f64,
    pub kl_beta: f64,
    /// δ: drift (mean log-ratio against the base) allowed before damping.
    pub drift_band: f64,
    /// Drift beyond which a trajectory is filtered out.
    pub drift_hard: f64,
    /// C: clip of the hint-teacher log-prob difference.
    pub opd_clip: f64,
    pub opd_weight: f64,
    /// Smallest teacher-student difference (nats) the hint term acts on; see [`hint_terms`].
    #[serde(default = "default_opd_min_shift")]
    pub opd_min_shift: f64,
    /// λ: weight of `mean_t m_t KL_t(teacher ‖ θ)`, the hint teacher's whole next-token
    /// distribution at the positions the hint moves ([`hint_positions`]); 0 turns it off.
    /// Read as 0 from a version's metadata written before it existed: it was trained without.
    #[serde(default)]
    pub opd_dist_weight: f64,
    pub ema_decay: f64,
    /// β_anchor: weight of the whole-distribution KL from the base (0 turns it off).
    #[serde(default = "default_anchor_beta")]
    pub anchor_beta: f64,
    /// Likeliest base tokens per position the anchor keeps (the rest is one bucket).
    #[serde(default = "default_anchor_top_k")]
    pub anchor_top_k: usize,
    /// Share of each reply's positions, those where the base's entropy is highest (where the
    /// reply was decided), that the anchor leaves free (0 anchors every position).
    #[serde(default)]
    pub anchor_free_share: f64,
}

fn default_anchor_beta() -> f64 {
    ObjectiveParams::default().anchor_beta
}

fn default_opd_min_shift() -> f64 {
    ObjectiveParams::default().opd_min_shift
}

fn default_anchor_top_k() -> usize {
    ObjectiveParams::default().anchor_top_k
}

impl Default for ObjectiveParams {
    fn default() -> Self {
        Self {
            ratio_clip_low: 0.5,
            ratio_clip_high: 2.0,
            kl_beta: 0.001,
            drift_band: 0.1,
            drift_hard: 0.5,
            opd_clip: 1.0,
            opd_weight: 1.0,
            opd_min_shift: 0.5,
            opd_dist_weight: 1.0,
            ema_decay: Baseline::DECAY,
            anchor_beta: 0.1,
            anchor_top_k: 32,
            anchor_free_share: 0.2,
        }
    }
}

/// One sample's loss and its diagnostics.
pub struct SampleLoss {
    pub loss: Tensor,
    pub actor: f64,
    pub kl: f64,
    pub scale: f64,
    pub log_rho_base: f64,
    /// Fraction of tokens whose ratio against the behaviour policy is outside the clip band.
    pub clipped_fraction: f64,
}

/// `L = s · actor + β · kl` for one sample.
pub fn sample_loss(
    p: &ObjectiveParams,
    lp_new: &Tensor,
    lp_beh: &[f32],
    lp_ref: &[f32],
    token_adv: &[f64],
) -> Result<SampleLoss> {
    let n = lp_beh.len();
    if lp_ref.len() != n || token_adv.len() != n || lp_new.dims() != [n] {
        return Err(TrainerError::Request("log-prob lengths differ".into()));
    }
    let dev = lp_new.device();
    let dt = lp_new.dtype();
    let mk = |v: Vec<f64>| Tensor::from_vec(v, n, dev).and_then(|t| t.to_dtype(dt));
    let beh = mk(lp_beh.iter().map(|&x| x as f64).collect()).ctx("behaviour log-probs")?;
    let rf = mk(lp_ref.iter().map(|&x| x as f64).collect()).ctx("reference log-probs")?;
    let adv = mk(token_adv.to_vec()).ctx("advantages")?;
    let new_vals: Vec<f32> = lp_new
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.to_vec1())
        .ctx("reading log-probs")?;
    let mean_adv = token_adv.iter().sum::<f64>() / n.max(1) as f64;
    let (scale, log_rho_base) =
        drift_scale(&new_vals, lp_ref, mean_adv, p.drift_band, p.drift_hard);
    let clipped_fraction = new_vals
        .iter()
        .zip(lp_beh)
        .filter(|&(&a, &b)| {
            let r = ((a - b) as f64).exp();
            r < p.ratio_clip_low || r > p.ratio_clip_high
        })
        .count() as f64
        / n.max(1) as f64;
    let actor = clipped_surrogate(lp_new, &beh, &adv, p.ratio_clip_low, p.ratio_clip_high)
        .ctx("surrogate")?;
    let kl = k3_kl(lp_new, &rf).ctx("kl")?;
    let loss = ((&actor * scale).and_then(|a| a + (&kl * p.kl_beta)?)).ctx("sample loss")?;
    let val = |t: &Tensor| -> Result<f64> {
        t.to_dtype(candle_core::DType::F64)
            .and_then(|t| t.to_scalar::<f64>())
            .ctx("reading loss")
    };
    Ok(SampleLoss {
        actor: val(&actor)?,
        kl: val(&kl)?,
        loss,
        scale,
        log_rho_base,
        clipped_fraction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
    }
    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn ema_baseline_advantages_are_reward_minus_previous_bias_corrected_baseline() {
        // A long-running baseline (the correction has worn off): plain EMA.
        let long = Baseline {
            value: 0.5,
            count: 10_000,
        };
        let (a, b) = advantages(&[1.0, 1.0, -1.0], long, 0.99).unwrap();
        // b0 = 0.5; b1 = 0.99*0.5 + 0.01 = 0.505; b2 = 0.99*0.505 + 0.01 = 0.50995
        close(a[0], 0.5);
        close(a[1], 1.0 - 0.505);
        close(a[2], -1.0 - 0.50995);
        close(b.value, 0.99 * 0.50995 - 0.01);
        assert_eq!(b.count, 10_003);
        // A fresh one: the first rewards' mean, not a value stuck near zero.
        let (a, b) = advantages(&[-1.0, -1.0, 1.0], Baseline::default(), 0.99).unwrap();
        close(a[0], -1.0);
        close(a[1], 0.0);
        close(a[2], 2.0);
        close(b.estimate(0.99), b.value / (1.0 - 0.99f64.powi(3)));
        assert!((b.estimate(0.99) + 1.0 / 3.0).abs() < 0.01);
    }

    #[test]
    fn advantages_of_a_single_sign_batch_are_not_normalised_away() {
        // After many good replies, a batch of bad ones stays negative throughout.
        let mut seen = Baseline::default();
        for _ in 0..50 {
            seen.update(1.0, 0.99);
        }
        let (a, _) = advantages(&[-1.0, -1.0], seen, 0.99).unwrap();
        assert!(a.iter().all(|&x| x < -1.5), "{a:?}");
    }

    #[test]
    fn mostly_disliked_early_replies_do_not_all_get_negative_advantages() {
        // One liked reply in seven, as the prefix rater starts: with the raw average near zero
        // every disliked reply would get about −1 and the liked one about +1.
        let rewards: Vec<f64> = (0..28)
            .map(|i| if i % 7 == 3 { 1.0 } else { -1.0 })
            .collect();
        let (a, _) = advantages(&rewards, Baseline::default(), 0.99).unwrap();
        let late = &a[14..];
        let liked: Vec<f64> = late.iter().copied().filter(|&x| x > 0.0).collect();
        let disliked: Vec<f64> = late.iter().copied().filter(|&x| x < 0.0).collect();
        assert!(liked.iter().all(|&x| x > 1.5), "{liked:?}");
        assert!(disliked.iter().all(|&x| x > -0.5), "{disliked:?}");
    }

    #[test]
    fn rewards_outside_range_are_rejected() {
        assert!(advantages(&[1.5], Baseline::default(), 0.99).is_err());
        assert!(advantages(&[f64::NAN], Baseline::default(), 0.99).is_err());
    }

    #[test]
    fn hint_teacher_difference_is_clipped_and_added() {
        let p = ObjectiveParams {
            opd_min_shift: 0.0,
            ..ObjectiveParams::default()
        };
        let a = token_advantages(-0.5, Some(&[-1.0, -5.0, -2.0]), &[-2.0, -1.0, -2.5], &p);
        // diffs 1.0, -4.0 -> -1.0 (clipped), 0.5
        assert_eq!(a, vec![0.5, -1.5, 0.0]);
        assert_eq!(token_advantages(0.3, None, &[0.0, 0.0], &p), vec![0.3, 0.3]);
    }

    #[test]
    fn the_hint_positions_are_where_the_hint_term_acts() {
        let p = ObjectiveParams::default();
        let (t, s) = ([-0.1f32, -3.0, -1.0, -0.2], [-2.0f32, -0.5, -1.2, -0.2]);
        let at = hint_positions(&t, &s, &p);
        assert_eq!(at, [true, true, false, false]);
        let terms = hint_terms(&t, &s, &p);
        assert!(at.iter().zip(&terms).all(|(&m, &x)| m == (x != 0.0)));
    }

    #[test]
    fn the_hint_term_ignores_small_teacher_shifts() {
        let p = ObjectiveParams::default();
        // diffs 3.0 (clipped to 1), 0.2 and -0.4 (below 0.5: nothing), -0.6
        let t = [-1.0f32, -2.0, -3.0, -4.0];
        let s = [-4.0f32, -2.2, -2.6, -3.4];
        let h = hint_terms(&t, &s, &p);
        assert_eq!(h.len(), 4);
        assert!(
            (h[0] - 1.0).abs() < 1e-6 && h[1] == 0.0 && h[2] == 0.0,
            "{h:?}"
        );
        assert!((h[3] + 0.6).abs() < 1e-5, "{h:?}");
    }

    #[test]
    fn clipped_surrogate_matches_hand_computation() {
        // ratios e^0 = 1, e^1 = 2.718 (clipped to 2), e^-1 = 0.3679 (clipped to 0.5)
        let new = t(&[0.0, 1.0, -1.0]);
        let beh = t(&[0.0, 0.0, 0.0]);
        // positive advantage: min(rA, clip(r)A) = 1, 2, 0.3679
        let l = clipped_surrogate(&new, &beh, &t(&[1.0, 1.0, 1.0]), 0.5, 2.0).unwrap();
        close(
            l.to_scalar::<f64>().unwrap(),
            -(1.0 + 2.0 + (-1.0f64).exp()) / 3.0,
        );
        // negative advantage: min(-r, -clip(r)) = -1, -2.718, -0.5
        let l = clipped_surrogate(&new, &beh, &t(&[-1.0, -1.0, -1.0]), 0.5, 2.0).unwrap();
        close(
            l.to_scalar::<f64>().unwrap(),
            (1.0 + 1f64.exp() + 0.5) / 3.0,
        );
    }

    #[test]
    fn clipped_surrogate_gradient_vanishes_where_clipped() {
        let new = Var::from_vec(vec![0.0f64, 1.0, -1.0], 3, &Device::Cpu).unwrap();
        let l =
            clipped_surrogate(&new, &t(&[0.0, 0.0, 0.0]), &t(&[1.0, 1.0, 1.0]), 0.5, 2.0).unwrap();
        let g = l.backward().unwrap();
        let g = g.get(&new).unwrap().to_vec1::<f64>().unwrap();
        // d/dlp of -(1/3) r A = -(1/3) r: token 0: -1/3; token 1 clipped: 0; token 2 unclipped branch is the min: -(1/3)e^-1
        close(g[0], -1.0 / 3.0);
        close(g[1], 0.0);
        close(g[2], -(-1.0f64).exp() / 3.0);
    }

    #[test]
    fn k3_kl_matches_hand_computation() {
        let kl = k3_kl(&t(&[-1.0, -2.0]), &t(&[-1.5, -1.0])).unwrap();
        // d = ref - new = -0.5, 1.0 ; k = e^d - d - 1
        let want = (((-0.5f64).exp() + 0.5 - 1.0) + (1f64.exp() - 1.0 - 1.0)) / 2.0;
        close(kl.to_scalar::<f64>().unwrap(), want);
        let zero = k3_kl(&t(&[-1.0, -2.0]), &t(&[-1.0, -2.0])).unwrap();
        close(zero.to_scalar::<f64>().unwrap(), 0.0);
    }

    #[test]
    fn drift_scale_damps_then_filters_only_in_the_pushed_direction() {
        let r = [-1.0f32, -1.0];
        // log ρ̄ = 0.05: inside band 0.1
        assert_eq!(drift_scale(&[-0.95, -0.95], &r, 1.0, 0.1, 0.5).0, 1.0);
        // log ρ̄ = 0.25: damped to 0.1/0.25
        let (s, lr) = drift_scale(&[-0.75, -0.75], &r, 1.0, 0.1, 0.5);
        close(lr, 0.25);
        close(s, 0.4);
        // log ρ̄ = 1: filtered
        assert_eq!(drift_scale(&[0.0, 0.0], &r, 1.0, 0.1, 0.5).0, 0.0);
        // the same drift with a negative advantage pulls back toward the base: not damped
        assert_eq!(drift_scale(&[0.0, 0.0], &r, -1.0, 0.1, 0.5).0, 1.0);
        // negative drift with negative advantage: damped
        let (s, _) = drift_scale(&[-1.25, -1.25], &r, -1.0, 0.1, 0.5);
        close(s, 0.4);
    }

    #[test]
    fn sample_loss_combines_scaled_actor_and_kl() {
        let p = ObjectiveParams {
            kl_beta: 0.5,
            drift_band: 0.1,
            drift_hard: 0.5,
            ..Default::default()
        };
        let new = t(&[-0.75, -0.75]);
        let s = sample_loss(&p, &new, &[-1.0, -1.0], &[-1.0, -1.0], &[1.0, 1.0]).unwrap();
        let ratio = 0.25f64.exp();
        let actor = -ratio;
        let d = -0.25f64;
        let kl = d.exp() - d - 1.0;
        close(s.actor, actor);
        close(s.kl, kl);
        close(s.scale, 0.4);
        close(s.loss.to_scalar::<f64>().unwrap(), 0.4 * actor + 0.5 * kl);
        assert_eq!(s.clipped_fraction, 0.0);
    }
}
