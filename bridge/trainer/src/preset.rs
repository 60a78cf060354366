//! Presets (`careful`, `balanced`, `aggressive`) and a model profile (dense or MoE, size
//! bucket) choose rank, alpha, learning rate, steps, KL beta, gradient clip and accumulation.

use serde::{Deserialize, Serialize};

use crate::error::TrainerError;
use crate::model::ModelConfig;
use crate::objective::ObjectiveParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Careful,
    #[default]
    Balanced,
    Aggressive,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Self::Careful, Self::Balanced, Self::Aggressive];

    /// The name in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Careful => "careful",
            Self::Balanced => "balanced",
            Self::Aggressive => "aggressive",
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = TrainerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
                TrainerError::Request(format!("unknown preset {wanted:?} ({})", names.join(", ")))
            })
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Dense,
    Moe,
}

/// Size bucket by active parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeBucket {
    /// ≤ 2 B
    Tiny,
    /// ≤ 8 B
    Small,
    /// ≤ 20 B
    Mid,
    /// ≤ 45 B
    Large,
    Xl,
}

impl SizeBucket {
    pub fn from_active_params(active: u64) -> Self {
        const B: u64 = 1_000_000_000;
        match active {
            a if a <= 2 * B => Self::Tiny,
            a if a <= 8 * B => Self::Small,
            a if a <= 20 * B => Self::Mid,
            a if a <= 45 * B => Self::Large,
            _ => Self::Xl,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelProfile {
    pub kind: ModelKind,
    pub bucket: SizeBucket,
    pub total_params: u64,
    pub active_params: u64,
}

impl ModelProfile {
    pub fn new(kind: ModelKind, total_params: u64, active_params: u64) -> Self {
        Self {
            kind,
            bucket: SizeBucket::from_active_params(active_params),
            total_params,
            active_params,
        }
    }

    pub fn from_config(cfg: &ModelConfig) -> Self {
        let p = cfg.param_count();
        let kind = if cfg.num_experts > 0 {
            ModelKind::Moe
        } else {
            ModelKind::Dense
        };
        Self::new(kind, p, p)
    }
}

/// Everything a training run needs to know besides the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HyperParams {
    pub rank: usize,
    pub alpha: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Samples per optimiser step.
    pub grad_accum: usize,
    /// Passes over the samples; steps = ceil(epochs · samples / grad_accum), within bounds.
    pub epochs: f64,
    pub min_steps: usize,
    pub max_steps: usize,
    /// Longest sequence (prompt + response) in tokens; prompts are cut from the left.
    pub max_seq_len: usize,
    pub objective: ObjectiveParams,
}

impl HyperParams {
    /// Optimiser steps for `n` samples.
    pub fn steps_for(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let accum = self.grad_accum.max(1) as f64;
        let s = (self.epochs * n as f64 / accum).ceil() as usize;
        s.clamp(self.min_steps.max(1), self.max_steps.max(1))
    }
}

impl Preset {
    /// Hyper-parameters for a model profile.
    pub fn hyper_params(self, profile: &ModelProfile) -> HyperParams {
        let moe = profile.kind == ModelKind::Moe;
        let rank = match (profile.bucket, moe) {
            (SizeBucket::Xl, false) => 8,
            (SizeBucket::Xl, true) => 16,
            (_, false) => 16,
            (_, true) => 24,
        };
        let size_mult = match profile.bucket {
            SizeBucket::Tiny => 1.0,
            SizeBucket::Small => 0.7,
            SizeBucket::Mid => 0.5,
            SizeBucket::Large => 0.35,
            SizeBucket::Xl => 0.25,
        };
        let (lr_mult, kl, epochs, max_steps, band, hard) = match self {
            Preset::Careful => (0.5, 0.002, 2.0, 24, 0.05, 0.25),
            Preset::Balanced => (1.0, 0.001, 3.0, 32, 0.1, 0.5),
            Preset::Aggressive => (2.0, 0.0005, 4.0, 48, 0.2, 1.0),
        };
        // The whole-distribution anchor, in step with the gate's KL bound per preset. It sets
        // how far a run can move, not the learning rate: at 1 (balanced) a rate three times
        // higher moved SmolLM2 no further (KL 0.002 after three runs). It leaves the fifth of
        // each reply's positions where the base's entropy is highest free (where the reply is
        // decided: the first word of a style) and holds the rest at 0.3; against 0.1 at every
        // position, the prefix rater's full run rose faster and stayed further inside the KL
        // bound (BENCHMARKS.md, "Learning").
        let anchor_beta = match self {
            Preset::Careful => 0.6,
            Preset::Balanced => 0.3,
            Preset::Aggressive => 0.15,
        };
        let grad_accum = match profile.bucket {
            SizeBucket::Tiny | SizeBucket::Small => 4,
            SizeBucket::Mid | SizeBucket::Large => 2,
            SizeBucket::Xl => 1,
        };
        HyperParams {
            rank,
            alpha: 2.0 * rank as f64,
            // 3e-4 at the tiny bucket: with the anchor holding the whole distribution near
            // the base, SmolLM2-135M learnt the prefix style about twice as fast as at 1e-4 with
            // its KL still far inside the gate's bound (BENCHMARKS.md, "Learning").
            lr: 3e-4 * size_mult * lr_mult * if moe { 0.7 } else { 1.0 },
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            grad_clip: 1.0,
            grad_accum,
            epochs,
            min_steps: 2,
            max_steps,
            max_seq_len: 1024,
            objective: ObjectiveParams {
                kl_beta: if moe { kl / 2.0 } else { kl },
                drift_band: band,
                drift_hard: hard,
                anchor_beta,
                ..ObjectiveParams::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_order_learning_rate_and_kl() {
        let p = ModelProfile::new(ModelKind::Dense, 135_000_000, 135_000_000);
        assert_eq!(p.bucket, SizeBucket::Tiny);
        let c = Preset::Careful.hyper_params(&p);
        let b = Preset::Balanced.hyper_params(&p);
        let a = Preset::Aggressive.hyper_params(&p);
        assert!(c.lr < b.lr && b.lr < a.lr);
        assert!(
            c.objective.kl_beta > b.objective.kl_beta && b.objective.kl_beta > a.objective.kl_beta
        );
        assert_eq!(b.objective.kl_beta, 0.001);
        assert_eq!(
            (b.objective.ratio_clip_low, b.objective.ratio_clip_high),
            (0.5, 2.0)
        );
        assert_eq!(b.rank, 16);
    }

    #[test]
    fn moe_and_size_change_rank_lr_and_kl() {
        let dense = Preset::Balanced.hyper_params(&ModelProfile::new(
            ModelKind::Dense,
            70_000_000_000,
            70_000_000_000,
        ));
        let moe = Preset::Balanced.hyper_params(&ModelProfile::new(
            ModelKind::Moe,
            30_000_000_000,
            3_000_000_000,
        ));
        assert_eq!(dense.rank, 8);
        assert_eq!(moe.rank, 24);
        assert_eq!(moe.objective.kl_beta, 0.0005);
        assert!(dense.lr < 1e-4);
    }

    #[test]
    fn steps_scale_with_samples_within_bounds() {
        let h = Preset::Balanced.hyper_params(&ModelProfile::new(ModelKind::Dense, 1, 1));
        assert_eq!(h.steps_for(0), 0);
        assert_eq!(h.steps_for(1), 2);
        assert_eq!(h.steps_for(8), 6);
        assert_eq!(h.steps_for(1000), 32);
        assert!("Careful".parse::<Preset>().is_ok() && "x".parse::<Preset>().is_err());
        for p in Preset::ALL {
            assert_eq!(p.to_string().parse::<Preset>().unwrap(), p);
        }
    }
}
