//! The evaluation gate: a new adapter serves only if it is not worse than the active one on
//! the person's own held-out rated turns, and it has not drifted from the base on neutral
//! prompts beyond the preset's bound.
//!
//! * Held-out turns: one turn in [`HELD_OUT_ONE_IN`], chosen by a stable hash of its turn id
//!   ([`is_held_out`]), is never trained on; its ratings only measure versions.
//! * The figure on them: for each turn, the mean log-probability per token of the rated reply
//!   given its prompt. An adapter's margin is the mean over the turns rated good minus the mean
//!   over the turns rated bad; comparing two adapters, the difference of their margins is set
//!   against its standard error over the turns, so a candidate is held back only when it is
//!   clearly worse: by more than twice what the figures vary by. An adapter "leans the way you
//!   rated" on a turn when it gives a liked reply a higher, or a disliked reply a lower,
//!   log-probability than the base.
//! * Drift: the change in per-token log-probability from the base on a small neutral set of
//!   everyday questions and plain answers shipped with the crate (`data/neutral.jsonl`),
//!   reported as the change in perplexity; each preset bounds its rise. A fall is reported but
//!   holds nothing back: plain answers became more likely, which harms no one, and the trainer's
//!   KL term already keeps the model near the base. (A two-sided bound held back every version
//!   after the second in `rlclaw bench learn`, at falls of 11 to 15%: learning stalled.)
//! * With fewer than [`GatePolicy::min_held_out`] held-out turns the gate says so and checks the
//!   drift alone.

use std::time::Instant;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::adapter::LoraWeights;
use crate::decoder::Decoder;
use crate::error::{Result, TensorContext, TrainerError};
use crate::lora::LoraSet;
use crate::model::LoadedModel;
use crate::preset::Preset;
use crate::train::{Sample, encode_sample};

/// One turn in this many is held out of training to check new versions.
pub const HELD_OUT_ONE_IN: u64 = 8;

/// The neutral prompts and replies the drift is measured on (JSON lines of
/// `{"prompt", "reply"}`), written for the project.
pub const NEUTRAL_JSONL: &str = include_str!("../data/neutral.jsonl");

/// Whether a turn is held out of training and used only to check new versions. Stable across
/// runs, versions and platforms: a domain-tagged FNV-1a hash of the turn id, finished with a
/// SplitMix64 mix, taken modulo [`HELD_OUT_ONE_IN`].
pub fn is_held_out(turn_id: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"rlclaw held-out\0".iter().chain(turn_id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    h.is_multiple_of(HELD_OUT_ONE_IN)
}

/// The neutral set as samples (reward 0; only the replies' log-probabilities are used).
pub fn neutral_samples() -> Vec<Sample> {
    #[derive(Deserialize)]
    struct Pair {
        prompt: String,
        reply: String,
    }
    NEUTRAL_JSONL
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<Pair>(l).ok())
        .enumerate()
        .map(|(i, p)| Sample {
            turn_id: format!("neutral-{i}"),
            context: Vec::new(),
            prompt: p.prompt,
            response: p.reply,
            reward: 0.0,
            hint: None,
        })
        .collect()
}

/// What the gate asks of a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatePolicy {
    /// Fewer held-out turns than this: the drift check alone decides.
    pub min_held_out: usize,
    /// The most held-out turns scored (the caller passes the newest first).
    pub max_held_out: usize,
    /// How far below the active adapter's margin a candidate may fall before it is held
    /// back, in standard errors as a normal quantile: on few held-out turns it is carried over
    /// to Student's t at the same tail ([`allowance`]).
    pub noise_allowance: f64,
    /// The largest rise of perplexity on the neutral set against the base (0.1 = 10%): a
    /// version that finds everyday text this much less likely than the base has drifted.
    pub max_perplexity_change: f64,
    /// The largest mean KL divergence (nats per token) of the candidate's next-token
    /// distributions from the base's on the neutral set: training that pushes the model off its
    /// own replies can leave everyday text as likely as before while the rest of the
    /// distribution spreads, and sampled replies turn to gibberish (BENCHMARKS.md, "Learning").
    #[serde(default = "default_max_kl")]
    pub max_kl: f64,
    /// Longest sequence scored, in tokens (prompts are cut from the left).
    pub max_seq_len: usize,
}

impl GatePolicy {
    /// The gate for a preset: the neutral perplexity may rise by 5% (careful), 10% (balanced)
    /// or 20% (aggressive).
    pub fn for_preset(preset: Preset) -> Self {
        // The KL bound (nats per token): healthy SmolLM2 adapters measured 0.01–0.04; the ones
        // whose replies had turned to gibberish 0.17–0.54 (BENCHMARKS.md, "Learning").
        let (max_perplexity_change, max_kl) = match preset {
            Preset::Careful => (0.05, 0.05),
            Preset::Balanced => (0.10, 0.10),
            Preset::Aggressive => (0.20, 0.20),
        };
        Self {
            min_held_out: 4,
            max_held_out: 64,
            // Two standard errors: at one, about one version in six that was no worse got held
            // back by chance, and the ratings its run used were lost to what serves (7 of 16
            // versions held in one `bench learn` arm, BENCHMARKS.md "Learning").
            noise_allowance: 2.0,
            max_perplexity_change,
            max_kl,
            max_seq_len: 512,
        }
    }
}

fn default_max_kl() -> f64 {
    GatePolicy::default().max_kl
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self::for_preset(Preset::Balanced)
    }
}

/// How an adapter (or the base) does on the held-out turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutFigures {
    /// Held-out turns scored (rated good or bad).
    pub turns: usize,
    pub good: usize,
    pub bad: usize,
    /// Mean per-token log-probability of the liked replies.
    pub mean_logprob_good: Option<f64>,
    /// Mean per-token log-probability of the disliked replies.
    pub mean_logprob_bad: Option<f64>,
    /// Good minus bad (only when both kinds are there).
    pub margin: Option<f64>,
    /// The margin's change from the base's: the mean change over liked replies minus the mean
    /// change over disliked ones (a kind with no turns counts 0). 0 for the base itself.
    pub margin_vs_base: f64,
    /// Turns on which it moved from the base the way the turn was rated.
    pub leans: usize,
}

/// How far an adapter moved from the base on the neutral set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftFigures {
    pub texts: usize,
    pub tokens: usize,
    /// Mean per-token log-probability change against the base (negative: less likely).
    pub mean_logprob_change: f64,
    /// Mean absolute per-token log-probability change.
    pub mean_abs_change: f64,
    /// exp(−mean change) − 1: the relative change of perplexity (0.05 = 5% higher).
    pub perplexity_change: f64,
    /// Mean KL(base ‖ adapter) of the next-token distributions, nats per token (absent from
    /// records written before it was measured).
    #[serde(default)]
    pub kl: Option<f64>,
}

/// One adapter's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterFigures {
    /// None when there were no held-out turns to score.
    pub held_out: Option<HeldOutFigures>,
    pub drift: DriftFigures,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Serve it.
    Promote,
    /// Keep it as a candidate; do not serve it.
    Hold,
}

/// Why a candidate was held back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HoldReason {
    /// Its margin on the held-out turns is below the active adapter's by more than the noise.
    WorseOnHeldOut {
        turns: usize,
        /// Candidate minus active margin (per token; negative here).
        difference: f64,
        /// The standard error of that difference.
        noise: f64,
        candidate_leans: usize,
        active_leans: usize,
    },
    /// Its neutral-set perplexity moved further from the base's than the preset allows.
    Drift { perplexity_change: f64, bound: f64 },
    /// Its next-token distributions on the neutral set moved further from the base's than the
    /// preset allows (mean KL, nats per token).
    Spread { kl: f64, bound: f64 },
}

/// What the gate measured and decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub verdict: Verdict,
    /// Empty when promoted.
    pub reasons: Vec<HoldReason>,
    /// Held-out turns scored.
    pub held_out_turns: usize,
    pub min_held_out: usize,
    /// Too few held-out turns: only the drift was checked.
    pub drift_only: bool,
    pub candidate: AdapterFigures,
    /// The active adapter's figures; None when the base model serves.
    pub active: Option<AdapterFigures>,
    /// The base model's own margin on the held-out turns, when both kinds are there.
    pub base_margin: Option<f64>,
    /// Candidate minus active margin, and its standard error (None with no held-out turns).
    pub difference: Option<f64>,
    pub noise: Option<f64>,
    pub max_perplexity_change: f64,
    /// Held-out turns that could not be scored (an empty reply, for example).
    pub skipped: usize,
    pub seconds: f64,
}

impl GateReport {
    pub fn promoted(&self) -> bool {
        self.verdict == Verdict::Promote
    }
}

/// Mean per-token log-probability of each sample's response, under an adapter or the base.
/// A sample that cannot be scored (no response tokens) gives None.
pub fn score_samples(
    model: &LoadedModel,
    adapter: Option<&LoraSet>,
    samples: &[Sample],
    max_seq_len: usize,
) -> Result<Vec<Option<TokenScore>>> {
    let dec = Decoder::new(&model.config, &model.weights);
    samples
        .iter()
        .map(|s| {
            let plain = Sample {
                hint: None,
                ..s.clone()
            };
            let enc = match encode_sample(model, &plain, max_seq_len) {
                Ok(e) => e,
                Err(TrainerError::Request(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let lp = dec.response_logprobs(&enc.ids, enc.start, adapter, false)?;
            let v: Vec<f32> = lp
                .to_dtype(DType::F32)
                .and_then(|t| t.to_vec1())
                .ctx("reading log-probs")?;
            if v.is_empty() {
                return Ok(None);
            }
            let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
            Ok(Some(TokenScore {
                sum,
                tokens: v.len(),
                per_token: v,
            }))
        })
        .collect()
}

/// The log-probabilities of one scored reply.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenScore {
    pub sum: f64,
    pub tokens: usize,
    pub per_token: Vec<f32>,
}

impl TokenScore {
    pub fn mean(&self) -> f64 {
        self.sum / self.tokens.max(1) as f64
    }
}

/// An adapter ready for scoring on the model's device.
pub fn lora_for(model: &LoadedModel, weights: &LoraWeights) -> Result<LoraSet> {
    LoraSet::from_weights(
        weights,
        &model.config,
        model.weights.dtype(),
        model.weights.device(),
    )
}

/// Perplexity of the base (or an adapter) on the neutral set: exp(−mean per-token log-prob).
pub fn neutral_perplexity(model: &LoadedModel, adapter: Option<&LoraWeights>) -> Result<f64> {
    let lora = adapter.map(|w| lora_for(model, w)).transpose()?;
    let scores = score_samples(model, lora.as_ref(), &neutral_samples(), 512)?;
    let (sum, n) = scores
        .iter()
        .flatten()
        .fold((0.0, 0usize), |(s, n), t| (s + t.sum, n + t.tokens));
    Ok((-sum / n.max(1) as f64).exp())
}

/// Whether a change of neutral perplexity (0.1 = +10%) is beyond the bound on its rise.
fn drifted(change: f64, max_rise: f64) -> bool {
    !change.is_finite() || change > max_rise
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Sample variance (None with fewer than two values).
fn sample_var(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    Some(v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64)
}

/// Standard error of `mean(good) − mean(bad)`. A kind with a single turn has no spread of its
/// own, so it borrows the other kind's: with one liked turn among ten disliked (a person who
/// dislikes most replies), that one turn is most of the uncertainty, and leaving it out made
/// the gate hold versions back on noise.
fn margin_noise(good: &[f64], bad: &[f64]) -> f64 {
    let (vg, vb) = (sample_var(good), sample_var(bad));
    let share = |n: usize, own: Option<f64>, other: Option<f64>| {
        if n == 0 {
            0.0
        } else {
            own.or(other).unwrap_or(0.0) / n as f64
        }
    };
    (share(good.len(), vg, vb) + share(bad.len(), vb, vg)).sqrt()
}

/// The allowance in standard errors for a difference measured on `turns` turns of `kinds`
/// kinds: the normal quantile `z` carried over to Student's t with `turns − kinds` degrees of
/// freedom (one mean per kind). A spread estimated from five turns is itself uncertain: at
/// z = 2 on five turns of two kinds a version no worse is held back by chance 7% of the time,
/// three times the 2.3% meant.
fn allowance(z: f64, turns: usize, kinds: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
    let freedom = turns.saturating_sub(kinds).max(1) as f64;
    let tail = Normal::standard().cdf(z);
    match StudentsT::new(0.0, 1.0, freedom) {
        Ok(t) if (0.5..1.0).contains(&tail) => t.inverse_cdf(tail),
        _ => z,
    }
}

/// Held-out turns with their reward sign and base score.
struct Scored<'a> {
    sign: f64,
    base: &'a TokenScore,
}

fn held_out_figures(turns: &[Scored], scores: &[f64]) -> HeldOutFigures {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut d_good = Vec::new();
    let mut d_bad = Vec::new();
    let mut leans = 0;
    for (t, &x) in turns.iter().zip(scores) {
        let d = x - t.base.mean();
        if t.sign > 0.0 {
            good.push(x);
            d_good.push(d);
        } else {
            bad.push(x);
            d_bad.push(d);
        }
        leans += usize::from(t.sign * d > 0.0);
    }
    let (mg, mb) = (mean(&good), mean(&bad));
    HeldOutFigures {
        turns: turns.len(),
        good: good.len(),
        bad: bad.len(),
        mean_logprob_good: mg,
        mean_logprob_bad: mb,
        margin: mg.zip(mb).map(|(g, b)| g - b),
        margin_vs_base: mean(&d_good).unwrap_or(0.0) - mean(&d_bad).unwrap_or(0.0),
        leans,
    }
}

/// How far `adapter` moved from the base on `samples` (the neutral set): the change of the
/// text's own log-probabilities (perplexity) and the KL of the whole next-token distributions,
/// both from one pass of each model over each text.
pub fn drift_from_base(
    model: &LoadedModel,
    adapter: &LoraSet,
    samples: &[Sample],
    max_seq_len: usize,
) -> Result<DriftFigures> {
    let dec = Decoder::new(&model.config, &model.weights);
    let (mut texts, mut tokens) = (0usize, 0usize);
    let (mut sum, mut abs, mut kl) = (0.0f64, 0.0f64, 0.0f64);
    for s in samples {
        let enc = match encode_sample(model, s, max_seq_len) {
            Ok(e) => e,
            Err(TrainerError::Request(_)) => continue,
            Err(e) => return Err(e),
        };
        let d = dec.response_kl(&enc.ids, enc.start, None, Some(adapter))?;
        texts += 1;
        for ((k, a), b) in d.kl.iter().zip(&d.logprobs).zip(&d.reference_logprobs) {
            let change = f64::from(*a) - f64::from(*b);
            sum += change;
            abs += change.abs();
            kl += k;
            tokens += 1;
        }
    }
    let n = tokens.max(1) as f64;
    Ok(DriftFigures {
        texts,
        tokens,
        mean_logprob_change: sum / n,
        mean_abs_change: abs / n,
        perplexity_change: (-sum / n).exp() - 1.0,
        kl: Some(kl / n),
    })
}

/// Runs the gate: `candidate` against `active` (None: the base serves) on `held_out` (rated
/// turns never trained on, newest first; rewards of 0 are left out) and on the neutral set.
pub fn evaluate(
    model: &LoadedModel,
    candidate: &LoraWeights,
    active: Option<&LoraWeights>,
    held_out: &[Sample],
    policy: &GatePolicy,
) -> Result<GateReport> {
    let t0 = Instant::now();
    let cand = lora_for(model, candidate)?;
    let act = active.map(|w| lora_for(model, w)).transpose()?;
    let rated: Vec<Sample> = held_out
        .iter()
        .filter(|s| s.reward.is_finite() && s.reward != 0.0)
        .take(policy.max_held_out)
        .cloned()
        .collect();
    let len = policy.max_seq_len;

    // Held-out turns: base, active, candidate.
    let base_scores = score_samples(model, None, &rated, len)?;
    let kept: Vec<usize> = (0..rated.len())
        .filter(|&i| base_scores[i].is_some())
        .collect();
    let kept_samples: Vec<Sample> = kept.iter().map(|&i| rated[i].clone()).collect();
    let turns: Vec<Scored> = kept
        .iter()
        .filter_map(|&i| {
            base_scores[i].as_ref().map(|b| Scored {
                sign: f64::from(rated[i].reward.signum()),
                base: b,
            })
        })
        .collect();
    let skipped = rated.len() - turns.len();
    let means = |scores: Vec<Option<TokenScore>>| -> Vec<f64> {
        scores
            .into_iter()
            .zip(&turns)
            .map(|(s, t)| s.map(|s| s.mean()).unwrap_or_else(|| t.base.mean()))
            .collect()
    };
    let cand_means = means(score_samples(model, Some(&cand), &kept_samples, len)?);
    let act_means = match &act {
        Some(l) => means(score_samples(model, Some(l), &kept_samples, len)?),
        None => turns.iter().map(|t| t.base.mean()).collect(),
    };

    // Neutral set: candidate and active, each against the base.
    let neutral = neutral_samples();
    let drift_cand = drift_from_base(model, &cand, &neutral, len)?;
    let drift_act = act
        .as_ref()
        .map(|l| drift_from_base(model, l, &neutral, len))
        .transpose()?;

    let has_turns = !turns.is_empty();
    let base_fig = held_out_figures(
        &turns,
        &turns.iter().map(|t| t.base.mean()).collect::<Vec<_>>(),
    );
    let cand_fig = AdapterFigures {
        held_out: has_turns.then(|| held_out_figures(&turns, &cand_means)),
        drift: drift_cand,
    };
    let act_fig = drift_act.map(|drift| AdapterFigures {
        held_out: has_turns.then(|| held_out_figures(&turns, &act_means)),
        drift,
    });

    // The paired difference of margins, and its standard error.
    let (mut e_good, mut e_bad) = (Vec::new(), Vec::new());
    for ((t, c), a) in turns.iter().zip(&cand_means).zip(&act_means) {
        if t.sign > 0.0 {
            e_good.push(c - a);
        } else {
            e_bad.push(c - a);
        }
    }
    let difference = has_turns.then(|| mean(&e_good).unwrap_or(0.0) - mean(&e_bad).unwrap_or(0.0));
    let noise = has_turns.then(|| margin_noise(&e_good, &e_bad));

    let drift_only = turns.len() < policy.min_held_out;
    let kinds = usize::from(!e_good.is_empty()) + usize::from(!e_bad.is_empty());
    let mut reasons = Vec::new();
    if !drift_only
        && let (Some(diff), Some(noise)) = (difference, noise)
        && diff < 0.0
        && diff < -allowance(policy.noise_allowance, turns.len(), kinds) * noise
    {
        reasons.push(HoldReason::WorseOnHeldOut {
            turns: turns.len(),
            difference: diff,
            noise,
            candidate_leans: cand_fig.held_out.as_ref().map_or(0, |h| h.leans),
            active_leans: act_fig
                .as_ref()
                .and_then(|a| a.held_out.as_ref())
                .map_or(0, |h| h.leans),
        });
    }
    let change = cand_fig.drift.perplexity_change;
    if drifted(change, policy.max_perplexity_change) {
        reasons.push(HoldReason::Drift {
            perplexity_change: change,
            bound: policy.max_perplexity_change,
        });
    }
    let kl_cand = cand_fig.drift.kl.unwrap_or(f64::NAN);
    if !kl_cand.is_finite() || kl_cand > policy.max_kl {
        reasons.push(HoldReason::Spread {
            kl: kl_cand,
            bound: policy.max_kl,
        });
    }
    Ok(GateReport {
        verdict: if reasons.is_empty() {
            Verdict::Promote
        } else {
            Verdict::Hold
        },
        reasons,
        held_out_turns: turns.len(),
        min_held_out: policy.min_held_out,
        drift_only,
        candidate: cand_fig,
        active: act_fig,
        base_margin: base_fig.margin,
        difference,
        noise,
        max_perplexity_change: policy.max_perplexity_change,
        skipped,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_turn_in_eight_is_held_out_and_the_choice_is_stable() {
        let n = 8000;
        let held = (0..n).filter(|i| is_held_out(&format!("turn-{i}"))).count();
        assert!((800..1200).contains(&held), "{held} of {n}");
        for i in 0..50 {
            let id = format!("t{i}");
            assert_eq!(is_held_out(&id), is_held_out(&id));
        }
        // Pinned: the choice must never change between releases, or trained turns would
        // become held-out ones.
        let pinned: Vec<bool> = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]
            .iter()
            .map(|t| is_held_out(t))
            .collect();
        assert_eq!(
            pinned,
            [false, false, false, false, false, true, false, false]
        );
    }

    #[test]
    fn the_neutral_set_parses_whole() {
        let n = neutral_samples();
        assert_eq!(
            n.len(),
            NEUTRAL_JSONL
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        );
        assert!(n.len() >= 16);
        assert!(
            n.iter()
                .all(|s| !s.prompt.is_empty() && !s.response.is_empty())
        );
    }

    #[test]
    fn policies_bound_perplexity_by_preset() {
        let c = GatePolicy::for_preset(Preset::Careful);
        let b = GatePolicy::for_preset(Preset::Balanced);
        let a = GatePolicy::for_preset(Preset::Aggressive);
        assert!(c.max_perplexity_change < b.max_perplexity_change);
        assert!(b.max_perplexity_change < a.max_perplexity_change);
        assert_eq!(b.min_held_out, 4);
    }

    #[test]
    fn only_a_rise_of_neutral_perplexity_beyond_the_bound_is_drift() {
        assert!(drifted(0.11, 0.10));
        assert!(!drifted(0.09, 0.10));
        assert!(!drifted(-0.15, 0.10), "everyday text became more likely");
        assert!(drifted(f64::NAN, 0.10));
        assert!(drifted(f64::INFINITY, 0.10));
    }

    #[test]
    fn margin_noise_adds_both_kinds_and_a_lone_turn_borrows_the_other_kinds_spread() {
        assert_eq!(sample_var(&[1.0]), None);
        close(sample_var(&[1.0, 3.0]).unwrap(), 2.0);
        // Both kinds with a spread: var/n of each, added.
        close(
            margin_noise(&[1.0, 3.0], &[0.0, 2.0, 4.0]),
            (2.0 / 2.0 + 4.0 / 3.0f64).sqrt(),
        );
        // One liked turn: it counts with the disliked turns' variance, not as certain.
        close(
            margin_noise(&[5.0], &[0.0, 2.0, 4.0]),
            (4.0 + 4.0 / 3.0f64).sqrt(),
        );
        // Only one kind: the other adds nothing.
        close(margin_noise(&[], &[0.0, 2.0]), 1.0);
        // Nothing to estimate a spread from.
        assert_eq!(margin_noise(&[1.0], &[2.0]), 0.0);
    }

    #[test]
    fn the_allowance_widens_on_few_turns_and_tends_to_the_normal_quantile() {
        // Student's t at the tail of z = 2 (0.97725): 4.53 with 2 degrees of freedom, 3.31
        // with 3, 2.09 with 30; the normal quantile beyond.
        assert!((allowance(2.0, 4, 2) - 4.53).abs() < 0.01);
        assert!((allowance(2.0, 4, 1) - 3.31).abs() < 0.01);
        assert!((allowance(2.0, 32, 2) - 2.09).abs() < 0.01);
        assert!((allowance(2.0, 100_000, 2) - 2.0).abs() < 1e-3);
        // No turns to spare: one degree of freedom, the widest allowance.
        assert!((allowance(2.0, 2, 2) - 13.97).abs() < 0.01);
        assert_eq!(allowance(2.0, 0, 0), allowance(2.0, 2, 2));
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}
