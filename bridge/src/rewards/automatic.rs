//! The automatic reward: a score in [0, 1] from what a rollout measured about itself (how long
//! it took, how many tokens it used, whether it hit errors). Pure arithmetic, cheap enough to
//! run inside the writer's transaction when a rollout arrives.

use serde::Deserialize;

use super::SettingsError;

/// `[rewards.automatic]`: a preset, and any of its figures overridden.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutomaticSettings {
    /// `agent-lightning` (the default) or `off`.
    pub preset: String,
    /// A task this slow or slower scores 0 on speed.
    pub duration_s: Option<f64>,
    /// A task using this many tokens or more scores 0 on tokens.
    pub tokens: Option<f64>,
    /// How much each term counts (any non-negative numbers; they are normalised).
    pub weight_duration: Option<f64>,
    pub weight_tokens: Option<f64>,
    pub weight_errors: Option<f64>,
}

impl Default for AutomaticSettings {
    fn default() -> Self {
        AutomaticSettings {
            preset: "agent-lightning".into(),
            duration_s: None,
            tokens: None,
            weight_duration: None,
            weight_tokens: None,
            weight_errors: None,
        }
    }
}

/// The formula: a weighted mean of three terms, each in [0, 1]:
/// speed `1 - min(duration_s / duration_scale, 1)`, thrift `1 - min(tokens / token_scale, 1)`
/// and `1` without errors, `0` with any. Terms whose measurement is missing are left out and the
/// weights renormalised over the rest; with no measurement at all there is no score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Formula {
    pub duration_scale: f64,
    pub token_scale: f64,
    pub weight_duration: f64,
    pub weight_tokens: f64,
    pub weight_errors: f64,
}

impl Formula {
    /// Agent Lightning's automated reward, `(speed + thrift - 0.5 if errors) / 3` with 300 s and
    /// 10,000 tokens as the scales, rescaled from its range [-1/6, 2/3] onto [0, 1]: that is
    /// exactly the weighted mean with weights 1, 1 and 0.5.
    pub const AGENT_LIGHTNING: Formula = Formula {
        duration_scale: 300.0,
        token_scale: 10_000.0,
        weight_duration: 1.0,
        weight_tokens: 1.0,
        weight_errors: 0.5,
    };

    /// The score in [0, 1], or `None` when nothing was measured.
    pub fn score(&self, m: &Measures) -> Option<f64> {
        let terms = [
            (
                self.weight_duration,
                m.duration_s
                    .map(|d| 1.0 - (d / self.duration_scale).min(1.0)),
            ),
            (
                self.weight_tokens,
                m.tokens.map(|t| 1.0 - (t / self.token_scale).min(1.0)),
            ),
            (
                self.weight_errors,
                m.errors.map(|e| if e > 0.0 { 0.0 } else { 1.0 }),
            ),
        ];
        let (mut sum, mut weight) = (0.0, 0.0);
        for (w, term) in terms {
            if let Some(t) = term
                && w > 0.0
            {
                sum += w * t.clamp(0.0, 1.0);
                weight += w;
            }
        }
        (weight > 0.0).then(|| sum / weight)
    }
}

/// What a rollout measured (each non-negative when present; the endpoint checks that).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measures {
    pub duration_s: Option<f64>,
    pub tokens: Option<f64>,
    pub errors: Option<f64>,
}

impl AutomaticSettings {
    /// The formula these settings describe, `None` when the automatic reward is off.
    pub fn formula(&self) -> Option<Formula> {
        let base = match self.preset.as_str() {
            "agent-lightning" => Formula::AGENT_LIGHTNING,
            _ => return None,
        };
        Some(Formula {
            duration_scale: self.duration_s.unwrap_or(base.duration_scale),
            token_scale: self.tokens.unwrap_or(base.token_scale),
            weight_duration: self.weight_duration.unwrap_or(base.weight_duration),
            weight_tokens: self.weight_tokens.unwrap_or(base.weight_tokens),
            weight_errors: self.weight_errors.unwrap_or(base.weight_errors),
        })
    }

    pub fn check(&self) -> Result<(), SettingsError> {
        if !["agent-lightning", "off"].contains(&self.preset.as_str()) {
            return Err(SettingsError(format!(
                "[rewards.automatic] preset must be \"agent-lightning\" or \"off\", not {:?}",
                self.preset
            )));
        }
        for (name, v) in [("duration_s", self.duration_s), ("tokens", self.tokens)] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(SettingsError(format!(
                    "[rewards.automatic] {name} must be a positive number"
                )));
            }
        }
        for (name, v) in [
            ("weight_duration", self.weight_duration),
            ("weight_tokens", self.weight_tokens),
            ("weight_errors", self.weight_errors),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(SettingsError(format!(
                    "[rewards.automatic] {name} must be a non-negative number"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(duration_s: f64, tokens: f64, errors: f64) -> Measures {
        Measures {
            duration_s: Some(duration_s),
            tokens: Some(tokens),
            errors: Some(errors),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn agent_lightning_scores_the_blog_posts_rollout_by_hand() {
        // speed 1 - 45.2/300 = 0.849333…, thrift 1 - 3421/10000 = 0.6579, no errors = 1:
        // (0.849333 + 0.6579 + 0.5 * 1) / 2.5 = 0.802893…
        let s = Formula::AGENT_LIGHTNING
            .score(&measured(45.2, 3421.0, 0.0))
            .unwrap();
        assert!(
            close(s, (0.849_333_333_333_333_3 + 0.6579 + 0.5) / 2.5),
            "{s}"
        );
        // The same as the blog's own formula rescaled from [-1/6, 2/3] onto [0, 1].
        let raw = (0.849_333_333_333_333_3 + 0.6579 + 0.0) / 3.0;
        assert!(close(s, (raw + 1.0 / 6.0) / (5.0 / 6.0)), "{s}");
    }

    #[test]
    fn faster_cheaper_error_free_rollouts_score_higher() {
        let f = Formula::AGENT_LIGHTNING;
        assert!(close(f.score(&measured(0.0, 0.0, 0.0)).unwrap(), 1.0));
        assert!(close(
            f.score(&measured(600.0, 20_000.0, 3.0)).unwrap(),
            0.0
        ));
        // One error costs the whole error term: 0.5 of 2.5.
        assert!(close(f.score(&measured(0.0, 0.0, 1.0)).unwrap(), 0.8));
        // 150 s and 5,000 tokens without errors: (0.5 + 0.5 + 0.5) / 2.5.
        assert!(close(f.score(&measured(150.0, 5000.0, 0.0)).unwrap(), 0.6));
        assert!(
            f.score(&measured(10.0, 100.0, 0.0)).unwrap()
                > f.score(&measured(100.0, 100.0, 0.0)).unwrap()
        );
    }

    #[test]
    fn missing_measurements_are_left_out_and_none_at_all_gives_no_score() {
        let f = Formula::AGENT_LIGHTNING;
        let only_tokens = Measures {
            tokens: Some(2500.0),
            ..Measures::default()
        };
        assert!(close(f.score(&only_tokens).unwrap(), 0.75));
        let only_errors = Measures {
            errors: Some(2.0),
            ..Measures::default()
        };
        assert!(close(f.score(&only_errors).unwrap(), 0.0));
        assert_eq!(f.score(&Measures::default()), None);
    }

    #[test]
    fn settings_override_the_preset_and_off_turns_it_off() {
        let s = AutomaticSettings {
            duration_s: Some(60.0),
            weight_errors: Some(0.0),
            ..AutomaticSettings::default()
        };
        let f = s.formula().unwrap();
        // Errors no longer count: (1 - 30/60 + 1 - 0) / 2.
        assert!(close(f.score(&measured(30.0, 0.0, 5.0)).unwrap(), 0.75));
        let off = AutomaticSettings {
            preset: "off".into(),
            ..AutomaticSettings::default()
        };
        assert_eq!(off.formula(), None);
        let bad = AutomaticSettings {
            preset: "fast".into(),
            ..AutomaticSettings::default()
        };
        assert!(bad.check().is_err());
        let negative = AutomaticSettings {
            tokens: Some(-1.0),
            ..AutomaticSettings::default()
        };
        assert!(negative.check().is_err());
    }
}
