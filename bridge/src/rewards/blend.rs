//! The blended reward that training uses: each source's score weighted, renormalised over the
//! sources a turn has, on [-1, 1]. The human is the ground truth: when a person rated the turn,
//! their rating decides the sign, and a machine source that disagrees with it counts as neutral
//! instead of pulling the other way (a 👎 is never trained as a good turn because the judge
//! liked it). Machines may strengthen a person's verdict, never overturn it.

use serde::{Deserialize, Serialize};

use super::SettingsError;

/// `[rewards.weights]`: how much each source counts (default 0.3 / 0.3 / 0.4). A source with
/// weight 0 is shown but never trained on.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub automatic: f64,
    pub judge: f64,
    pub human: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            automatic: 0.3,
            judge: 0.3,
            human: 0.4,
        }
    }
}

impl Weights {
    pub fn check(&self) -> Result<(), SettingsError> {
        for (name, w) in [
            ("automatic", self.automatic),
            ("judge", self.judge),
            ("human", self.human),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(SettingsError(format!(
                    "[rewards.weights] {name} must be a non-negative number"
                )));
            }
        }
        if self.automatic + self.judge + self.human <= 0.0 {
            return Err(SettingsError(
                "[rewards.weights] at least one weight must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// One turn's scores, each kept on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sources {
    /// The mean of the turn's live ratings, in [-1, 1].
    pub human: Option<f64>,
    /// From the rollout's measurements, in [0, 1].
    pub automatic: Option<f64>,
    /// The judge's mean of conciseness, correctness and helpfulness, in [0, 1].
    pub judge: Option<f64>,
}

impl Sources {
    pub fn any(&self) -> bool {
        self.human.is_some() || self.automatic.is_some() || self.judge.is_some()
    }
}

/// The reward in [-1, 1] that training uses, or `None` when the turn has no source with a
/// weight above 0.
pub fn blended(s: &Sources, w: &Weights) -> Option<f64> {
    // Every source on [-1, 1]: the machines' [0, 1] scores are centred on 0.5.
    let on_scale = [
        (w.human, s.human.map(|h| h.clamp(-1.0, 1.0))),
        (
            w.automatic,
            s.automatic.map(|a| 2.0 * a.clamp(0.0, 1.0) - 1.0),
        ),
        (w.judge, s.judge.map(|j| 2.0 * j.clamp(0.0, 1.0) - 1.0)),
    ];
    let sign = match s.human {
        Some(h) if h > 0.0 && w.human > 0.0 => 1.0,
        Some(h) if h < 0.0 && w.human > 0.0 => -1.0,
        _ => 0.0,
    };
    let (mut sum, mut weight) = (0.0, 0.0);
    for (wi, value) in on_scale {
        let Some(v) = value else { continue };
        if wi <= 0.0 {
            continue;
        }
        // Against the person's sign a machine's score counts as neutral.
        let v = if sign * v < 0.0 { 0.0 } else { v };
        sum += wi * v;
        weight += wi;
    }
    (weight > 0.0).then(|| (sum / weight).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    fn src(human: Option<f64>, automatic: Option<f64>, judge: Option<f64>) -> Sources {
        Sources {
            human,
            automatic,
            judge,
        }
    }

    #[test]
    fn all_three_sources_blend_with_the_default_weights() {
        let w = Weights::default();
        // 0.4 * 1 + 0.3 * (2 * 0.8 - 1) + 0.3 * (2 * 0.9 - 1) = 0.4 + 0.18 + 0.24
        assert!(close(
            blended(&src(Some(1.0), Some(0.8), Some(0.9)), &w),
            0.82
        ));
    }

    #[test]
    fn weights_are_renormalised_over_the_sources_a_turn_has() {
        let w = Weights::default();
        // Automatic alone: 2 * 0.8 - 1.
        assert!(close(blended(&src(None, Some(0.8), None), &w), 0.6));
        // Automatic and judge: (0.3 * 0.6 + 0.3 * -0.2) / 0.6.
        assert!(close(blended(&src(None, Some(0.8), Some(0.4)), &w), 0.2));
        // The human alone is the rating itself, as before there were other sources.
        assert!(close(blended(&src(Some(-0.3), None, None), &w), -0.3));
        assert_eq!(blended(&Sources::default(), &w), None);
    }

    #[test]
    fn a_thumbs_down_stays_negative_however_much_the_machines_liked_it() {
        let w = Weights::default();
        let r = blended(&src(Some(-1.0), Some(1.0), Some(1.0)), &w);
        // Both machines disagree, so they count as neutral: -0.4 / 1.0.
        assert!(close(r, -0.4), "{r:?}");
        // Machines that agree make it more negative.
        assert!(close(
            blended(&src(Some(-1.0), Some(0.0), Some(0.0)), &w),
            -1.0
        ));
        // A thumbs up stays positive when the machines disliked it.
        assert!(close(
            blended(&src(Some(1.0), Some(0.0), Some(0.1)), &w),
            0.4
        ));
    }

    #[test]
    fn a_source_with_weight_zero_is_never_trained_on() {
        let w = Weights {
            automatic: 0.0,
            ..Weights::default()
        };
        assert_eq!(blended(&src(None, Some(0.9), None), &w), None);
        assert!(close(blended(&src(None, Some(0.9), Some(0.75)), &w), 0.5));
        assert!(w.check().is_ok());
        let none = Weights {
            automatic: 0.0,
            judge: 0.0,
            human: 0.0,
        };
        assert!(none.check().is_err());
        let negative = Weights {
            judge: -0.1,
            ..Weights::default()
        };
        assert!(negative.check().is_err());
    }
}
