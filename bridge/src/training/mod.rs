//! What the request path needs from training: the active adapter's name, and the admin actions
//! that change it. The daemon supplies the real implementation over the adapter store.

use crate::protocol::ApiError;

pub trait TrainingControl: Send + Sync {
    /// The active adapter version ("v3"), or `None` when the base model serves.
    fn active_adapter(&self) -> Option<String>;
    /// Makes an earlier version active (`None`: the active version's parent). Returns a reply.
    fn rollback(&self, to: Option<&str>) -> Result<String, ApiError>;
    /// Serves the base model again; adapters are kept. Returns a reply.
    fn reset(&self) -> Result<String, ApiError>;
}

/// The training control for a data folder.
pub fn control_for(dir: &crate::datadir::DataDir) -> std::sync::Arc<dyn TrainingControl> {
    std::sync::Arc::new(adapters::AdapterControl::new(dir.path("adapters")))
}

mod adapters;
