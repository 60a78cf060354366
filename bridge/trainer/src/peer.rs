//! The peer's objective as an arm of our trainer, for the simulated-user benchmark: ReinforceClaw
//! 0.1.0's "MIS-PO" as reference/reinforceclaw.md section 4 describes it.
//!
//! * advantage `A_raw = (r − μ)·w` for a good rating (w = 1.2 balanced/aggressive, 1.0
//!   careful) and `r − μ` for a bad one, with μ the EMA read once for the whole batch; then,
//!   if the batch has more than one item and both signs, z-scored with the sample standard
//!   deviation (which erases μ and w), and clipped to ±2.
//! * the same PPO-style token ratio against the behaviour policy, clipped to [0.5, 2].
//! * a soft trajectory scale `s = min(1, ρ̄/low, high/ρ̄)`, `ρ̄ = exp(mean_t(ℓ_θ − ℓ_ref))`, with
//!   the gradient flowing through it (not a filter).
//! * the k3 KL term against the base: `L = s · actor + β · kl`.
//! * each round trains only the oldest [`BATCH_SIZE`] untrained ratings; the newer ones wait
//!   (the bridge's run selects them, `rlclaw_trainer::peer::BATCH_SIZE`).
//!
//! It takes no hints.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TensorContext, TrainerError};
use crate::objective::{Baseline, SampleLoss, clipped_surrogate, k3_kl};
use crate::preset::Preset;

/// Ratings one round trains on: the peer's batch size for models up to 2 B parameters.
pub const BATCH_SIZE: usize = 8;
/// Advantages are clipped to ±this after the z-score.
pub const ADV_CLIP: f64 = 2.0;

/// Which objective a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveVariant {
    /// DESIGN.md's: EMA-baseline advantages, hints, drift filter.
    #[default]
    Rlclaw,
    /// The peer's MIS-PO (this module), for comparison.
    PeerMisPo,
}

impl std::str::FromStr for ObjectiveVariant {
    type Err = TrainerError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rlclaw" => Ok(Self::Rlclaw),
            "peer-mispo" => Ok(Self::PeerMisPo),
            other => Err(TrainerError::Request(format!(
                "unknown objective {other:?} (rlclaw, peer-mispo)"
            ))),
        }
    }
}

/// The preset-dependent settings of the peer's objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerParams {
    pub pos_weight: f64,
    pub traj_low: f64,
    pub traj_high: f64,
}

impl PeerParams {
    pub fn for_preset(preset: Preset) -> Self {
        let (pos_weight, traj_low, traj_high) = match preset {
            Preset::Careful => (1.0, 0.996, 1.001),
            Preset::Balanced => (1.2, 0.994, 1.002),
            Preset::Aggressive => (1.2, 0.992, 1.004),
        };
        Self {
            pos_weight,
            traj_low,
            traj_high,
        }
    }
}

/// Per-batch z-scored advantages for rewards in time order, and the baseline after them.
pub fn advantages(
    rewards: &[f64],
    baseline: Baseline,
    decay: f64,
    pos_weight: f64,
) -> Result<(Vec<f64>, Baseline)> {
    let mu = baseline.value;
    let mut raw = Vec::with_capacity(rewards.len());
    let mut b = baseline;
    for &r in rewards {
        if !r.is_finite() || !(-1.0..=1.0).contains(&r) {
            return Err(TrainerError::Request(format!(
                "reward {r} is outside [-1, 1]"
            )));
        }
        raw.push(if r > 0.0 {
            (r - mu) * pos_weight
        } else {
            r - mu
        });
        b.update(r, decay);
    }
    let n = raw.len();
    let mixed = rewards.iter().any(|&r| r > 0.0) && rewards.iter().any(|&r| r <= 0.0);
    if n > 1 && mixed {
        let mean = raw.iter().sum::<f64>() / n as f64;
        let var = raw.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        for a in &mut raw {
            *a = (*a - mean) / (sd + 1e-6);
        }
    }
    for a in &mut raw {
        *a = a.clamp(-ADV_CLIP, ADV_CLIP);
    }
    Ok((raw, b))
}

/// `L = s · actor + β · kl` with the soft trajectory scale `s` kept in the graph.
pub fn sample_loss(
    p: &PeerParams,
    ratio_clip: (f64, f64),
    kl_beta: f64,
    lp_new: &Tensor,
    lp_beh: &[f32],
    lp_ref: &[f32],
    advantage: f64,
) -> Result<SampleLoss> {
    let n = lp_beh.len();
    if lp_ref.len() != n || lp_new.dims() != [n] {
        return Err(TrainerError::Request("log-prob lengths differ".into()));
    }
    let dev = lp_new.device();
    let dt = lp_new.dtype();
    let mk = |v: &[f32]| Tensor::from_vec(v.to_vec(), n, dev).and_then(|t| t.to_dtype(dt));
    let beh = mk(lp_beh).ctx("behaviour log-probs")?;
    let rf = mk(lp_ref).ctx("reference log-probs")?;
    let adv = Tensor::full(advantage, n, dev)
        .and_then(|t| t.to_dtype(dt))
        .ctx("advantages")?;
    let actor =
        clipped_surrogate(lp_new, &beh, &adv, ratio_clip.0, ratio_clip.1).ctx("surrogate")?;
    let kl = k3_kl(lp_new, &rf).ctx("kl")?;
    let log_rho = (lp_new - &rf)
        .and_then(|d| d.mean_all())
        .ctx("trajectory ratio")?;
    let rho = log_rho
        .exp()
        .and_then(|r| r.maximum(1e-6))
        .ctx("trajectory ratio")?;
    let scale = (|| {
        let below = (&rho / p.traj_low)?;
        let above = (rho.recip()? * p.traj_high)?;
        below.minimum(&above)?.minimum(1.0)
    })()
    .ctx("trajectory scale")?;
    let loss = ((&actor * &scale).and_then(|a| a + (&kl * kl_beta)?)).ctx("sample loss")?;
    let val = |t: &Tensor| -> Result<f64> {
        t.to_dtype(candle_core::DType::F64)
            .and_then(|t| t.to_scalar::<f64>())
            .ctx("reading loss")
    };
    let (lo, hi) = ratio_clip;
    let new_vals: Vec<f32> = lp_new
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.to_vec1())
        .ctx("reading log-probs")?;
    let clipped_fraction = new_vals
        .iter()
        .zip(lp_beh)
        .filter(|&(&a, &b)| {
            let r = ((a - b) as f64).exp();
            r < lo || r > hi
        })
        .count() as f64
        / n.max(1) as f64;
    Ok(SampleLoss {
        actor: val(&actor)?,
        kl: val(&kl)?,
        scale: val(&scale)?,
        log_rho_base: val(&log_rho)?,
        clipped_fraction,
        loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn mixed_batches_are_z_scored_so_the_baseline_and_weight_vanish() {
        // 3 good + 1 bad: +0.5 / −1.5 whatever μ and w are (reinforceclaw.md §4.2).
        for (mu, w) in [(0.0, 1.0), (0.7, 1.2), (-0.9, 1.2)] {
            let b = Baseline {
                value: mu,
                count: 5,
            };
            let (a, _) = advantages(&[1.0, 1.0, -1.0, 1.0], b, 0.99, w).unwrap();
            close(a[0], 0.5);
            close(a[1], 0.5);
            close(a[2], -1.5);
            close(a[3], 0.5);
        }
        let (a, _) = advantages(&[1.0, -1.0], Baseline::default(), 0.99, 1.2).unwrap();
        close(a[0], 0.5f64.sqrt());
        close(a[1], -(0.5f64.sqrt()));
    }

    #[test]
    fn single_sign_batches_keep_the_baseline_and_are_clipped() {
        let b = Baseline {
            value: 0.5,
            count: 3,
        };
        // All good: 1.2·(1 − μ), μ read once for the batch.
        let (a, after) = advantages(&[1.0, 1.0], b, 0.99, 1.2).unwrap();
        close(a[0], 0.6);
        close(a[1], 0.6);
        assert_eq!(after.count, 5);
        // After a run of bad ratings μ → −1 and a further bad batch gets 0.
        let (a, _) = advantages(
            &[-1.0],
            Baseline {
                value: -1.0,
                count: 9,
            },
            0.99,
            1.2,
        )
        .unwrap();
        close(a[0], 0.0);
        // Clipped to ±2.
        let (a, _) = advantages(
            &[1.0],
            Baseline {
                value: -1.0,
                count: 9,
            },
            0.99,
            1.2,
        )
        .unwrap();
        close(a[0], 2.0);
        assert!(advantages(&[2.0], b, 0.99, 1.2).is_err());
    }

    #[test]
    fn trajectory_scale_is_soft_and_carries_gradient() {
        let p = PeerParams::for_preset(Preset::Balanced);
        let new = Var::from_vec(vec![-0.9f32, -0.9], 2, &Device::Cpu).unwrap();
        // log ρ̄ = 0.1 against the base: ρ̄ = e^0.1 > high, s = high/ρ̄.
        let s = sample_loss(&p, (0.5, 2.0), 0.0, &new, &[-0.9, -0.9], &[-1.0, -1.0], 1.0).unwrap();
        close(s.scale, 1.002 / 0.1f64.exp());
        close(s.log_rho_base, 0.1);
        close(s.actor, -1.0);
        let g = s.loss.backward().unwrap();
        let g = g.get(&new).unwrap().to_vec1::<f32>().unwrap();
        // d/dℓ of −s·mean(ρ)·A with s = high·e^{−mean(ℓ−ref)}: s·ρ terms cancel to
        // −(s/2)(1) + (s/2)(1) = 0 per token when ρ = 1: the scale's gradient is in the graph.
        close(g[0] as f64, 0.0);
        // Inside the band the scale is 1 and the gradient is the plain surrogate's.
        let new = Var::from_vec(vec![-1.0f32, -1.0], 2, &Device::Cpu).unwrap();
        let s = sample_loss(&p, (0.5, 2.0), 0.0, &new, &[-1.0, -1.0], &[-1.0, -1.0], 1.0).unwrap();
        close(s.scale, 1.0);
        let g = s.loss.backward().unwrap();
        close(
            g.get(&new).unwrap().to_vec1::<f32>().unwrap()[0] as f64,
            -0.5,
        );
    }

    #[test]
    fn variants_parse_by_name() {
        assert_eq!(
            "peer-mispo".parse::<ObjectiveVariant>().unwrap(),
            ObjectiveVariant::PeerMisPo
        );
        assert_eq!(
            "rlclaw".parse::<ObjectiveVariant>().unwrap(),
            ObjectiveVariant::Rlclaw
        );
        assert!("grpo".parse::<ObjectiveVariant>().is_err());
    }
}
