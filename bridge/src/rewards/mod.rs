//! Rewards from more than a thumb. Every turn keeps each source's score on its own: the human's
//! ratings (the `ratings` table), an automatic score from a rollout's measurements
//! (`automatic`, computed when the rollout arrives) and an LLM judge's score (`judge`, made in
//! the background under a budget). Training uses their blend (`blend`). `scores` keeps the
//! machine scores, `summary` reports them per source and per worker.

pub mod automatic;
pub mod blend;
pub mod judge;
pub mod judging;
pub mod scores;
pub mod summary;

use serde::Deserialize;

pub use automatic::{AutomaticSettings, Formula, Measures};
pub use blend::{Sources, Weights, blended};
pub use judge::JudgeSettings;

/// `[rewards]` in config.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub weights: Weights,
    pub automatic: AutomaticSettings,
    pub judge: JudgeSettings,
}

/// A reward setting that cannot work, in words that name it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl Settings {
    pub fn check(&self) -> Result<(), SettingsError> {
        self.weights.check()?;
        self.automatic.check()?;
        self.judge.check()
    }
}

/// The machine sources, as stored in `turn_scores.source`.
pub const AUTOMATIC: &str = "automatic";
pub const JUDGE: &str = "judge";
