//! What is read after each round besides the rate: the log-probability margin between the
//! base's held-out replies that have the preferred style and those that do not (under the
//! adapter that serves), and perplexity and KL divergence from the base on the trainer's
//! neutral set.

use std::path::Path;

use anyhow::{Context, Result};
use rlclaw_trainer::eval::{
    drift_from_base, lora_for, neutral_perplexity, neutral_samples, score_samples,
};
use rlclaw_trainer::{AdapterStore, LoadedModel, LoraWeights, ModelSource, Sample};

pub struct Scorer {
    model: LoadedModel,
    /// Replies the base gave on held-out prompts, each with whether it had the style.
    reference: Vec<(Sample, bool)>,
}

impl Scorer {
    pub fn load(model: &Path) -> Result<Scorer> {
        let source = ModelSource::from_path(model)?;
        let model = LoadedModel::load(&source)
            .with_context(|| format!("cannot load {}", model.display()))?;
        Ok(Scorer {
            model,
            reference: Vec::new(),
        })
    }

    /// Fixes the replies the margin is measured on (the base's, read before any training).
    pub fn set_reference(&mut self, replies: &[(String, String, bool)]) {
        self.reference = replies
            .iter()
            .enumerate()
            .map(|(i, (prompt, reply, good))| {
                let s = Sample {
                    turn_id: format!("reference-{i}"),
                    context: Vec::new(),
                    prompt: prompt.clone(),
                    response: reply.clone(),
                    reward: 0.0,
                    hint: None,
                };
                (s, *good)
            })
            .collect();
    }

    /// The adapter serving in a data folder (None: the base).
    pub fn serving_weights(dir: &Path, version: Option<&str>) -> Result<Option<LoraWeights>> {
        match version {
            None => Ok(None),
            Some(v) => Ok(Some(AdapterStore::open(dir.join("adapters"))?.load(v)?)),
        }
    }

    /// Mean per-token log-prob of the styled reference replies minus the others' (None when
    /// the base gave only one kind).
    pub fn margin(&self, adapter: Option<&LoraWeights>) -> Result<Option<f64>> {
        let lora = adapter.map(|w| lora_for(&self.model, w)).transpose()?;
        let samples: Vec<Sample> = self.reference.iter().map(|(s, _)| s.clone()).collect();
        let scores = score_samples(&self.model, lora.as_ref(), &samples, 512)?;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for ((_, is_good), score) in self.reference.iter().zip(scores) {
            if let Some(s) = score {
                if *is_good {
                    good.push(s.mean());
                } else {
                    bad.push(s.mean());
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        Ok((!good.is_empty() && !bad.is_empty()).then(|| mean(&good) - mean(&bad)))
    }

    pub fn perplexity(&self, adapter: Option<&LoraWeights>) -> Result<f64> {
        Ok(neutral_perplexity(&self.model, adapter)?)
    }

    /// Mean KL(base ‖ adapter) of next-token distributions on the neutral set (0 for the base).
    pub fn kl(&self, adapter: Option<&LoraWeights>) -> Result<f64> {
        match adapter {
            None => Ok(0.0),
            Some(w) => {
                let lora = lora_for(&self.model, w)?;
                let drift = drift_from_base(&self.model, &lora, &neutral_samples(), 512)?;
                Ok(drift.kl.unwrap_or(0.0))
            }
        }
    }
}
