//! Admin actions over the adapter versions folder.

use std::path::PathBuf;

use super::TrainingControl;
use crate::protocol::ApiError;

pub struct AdapterControl {
    root: PathBuf,
}

impl AdapterControl {
    pub fn new(root: PathBuf) -> AdapterControl {
        AdapterControl { root }
    }
}

impl TrainingControl for AdapterControl {
    fn active_adapter(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join("active"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    fn rollback(&self, _to: Option<&str>) -> Result<String, ApiError> {
        Err(ApiError::new(
            503,
            "training_unavailable",
            "Adapters are not available in this build.",
        ))
    }

    fn reset(&self) -> Result<String, ApiError> {
        Err(ApiError::new(
            503,
            "training_unavailable",
            "Adapters are not available in this build.",
        ))
    }
}
