//! `config.toml` in the data folder: who may run admin commands, who may rate other people's
//! turns, the request limits, and how rewards are made (`[rewards]`).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Senders who may run `train`, `rollback`, `reset`, `pause` and `resume`.
    pub admins: Vec<String>,
    /// Senders who may rate any turn, not only their own.
    pub raters: Vec<String>,
    pub max_body_bytes: u64,
    pub max_text_bytes: usize,
    pub admin_per_minute: u32,
    pub training: Training,
    pub serving: Serving,
    pub rewards: crate::rewards::Settings,
}

/// The OpenAI-compatible model endpoint the daemon can run beside the bridge.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Serving {
    /// Where to serve the model with the active adapter, e.g. "127.0.0.1:8421" (off when unset).
    pub endpoint: Option<std::net::SocketAddr>,
    /// The model name clients ask for (default "rlclaw").
    pub model_id: Option<String>,
}

/// When the daemon trains by itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Training {
    /// Start a run once this many untrained ratings are waiting (0 turns auto-training off).
    pub auto_after: u32,
    /// careful | balanced | aggressive
    pub preset: String,
    /// The base model: a GGUF file or a Hugging Face safetensors folder.
    pub model: Option<String>,
    /// rlclaw | peer-mispo (the peer's objective, for `rlclaw bench learn`).
    pub objective: String,
    /// Auto-training waits until the machine is idle (a benchmark that keeps it busy turns
    /// this off).
    pub wait_for_idle: bool,
    /// The optimiser's learning rate instead of the preset's (which picks one by model size).
    pub learning_rate: Option<f64>,
}

impl Default for Training {
    fn default() -> Self {
        Training {
            auto_after: 16,
            preset: "balanced".into(),
            model: None,
            objective: "rlclaw".into(),
            wait_for_idle: true,
            learning_rate: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            admins: Vec::new(),
            raters: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_text_bytes: 262_144,
            admin_per_minute: 5,
            training: Training::default(),
            serving: Serving::default(),
            rewards: crate::rewards::Settings::default(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file gives the defaults, a malformed one an error naming the line.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Config::parse(&text).with_context(|| format!("{} is malformed", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            match line {
                Some(line) => anyhow::anyhow!("line {line}: {}", e.message()),
                None => anyhow::anyhow!("{}", e.message()),
            }
        })?;
        config.rewards.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_the_documented_defaults() {
        let c = Config::parse("admins = [\"42\"]").unwrap();
        assert_eq!(c.admins, vec!["42"]);
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.max_text_bytes, 262_144);
        assert_eq!(c.admin_per_minute, 5);
    }

    #[test]
    fn a_learning_rate_outside_its_range_is_a_clear_error() {
        let c = Config::parse("[training]\nlearning_rate = 3e-4\n").unwrap();
        let o = crate::training::run::RunOptions::from_config(&c).unwrap();
        assert_eq!(o.learning_rate, Some(3e-4));
        for bad in ["0", "-1e-4", "2.0"] {
            let c = Config::parse(&format!("[training]\nlearning_rate = {bad}\n")).unwrap();
            let err = crate::training::run::RunOptions::from_config(&c).unwrap_err();
            assert!(err.to_string().contains("learning_rate"), "{err}");
        }
    }

    #[test]
    fn a_malformed_file_names_the_line() {
        let err = Config::parse("admins = [\"42\"]\nraters = 7\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
