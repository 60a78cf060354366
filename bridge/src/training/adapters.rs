//! Admin actions over the adapter versions folder.

use std::path::PathBuf;

use rlclaw_trainer::AdapterStore;

use super::TrainingControl;
use crate::protocol::ApiError;

pub struct AdapterControl {
    root: PathBuf,
}

impl AdapterControl {
    pub fn new(root: PathBuf) -> AdapterControl {
        AdapterControl { root }
    }

    fn store(&self) -> Result<AdapterStore, ApiError> {
        AdapterStore::open(&self.root)
            .map_err(|e| ApiError::internal(format!("The adapter folder cannot be opened: {e}.")))
    }
}

impl TrainingControl for AdapterControl {
    fn active_adapter(&self) -> Option<String> {
        if !self.root.exists() {
            return None;
        }
        match self.store().ok()?.active() {
            Ok(active) => active.map(|v| v.name),
            Err(e) => {
                tracing::warn!("the active adapter cannot be read: {e}");
                None
            }
        }
    }

    fn rollback(&self, to: Option<&str>, by: &str) -> Result<String, ApiError> {
        let store = self.store()?;
        if let Some(version) = to {
            return super::gate::force_promote(&store, version, by)
                .map(|text| format!("Rolled back: {text}"))
                .map_err(|e| ApiError::new(409, "cannot_rollback", format!("{e}.")));
        }
        match store.rollback(None) {
            Ok(Some(v)) => Ok(format!("Rolled back: {} now serves.", v.name)),
            Ok(None) => Ok("Rolled back: the base model now serves.".into()),
            Err(e) => Err(ApiError::new(409, "cannot_rollback", format!("{e}."))),
        }
    }

    fn reset(&self) -> Result<String, ApiError> {
        self.store()?
            .reset()
            .map_err(|e| ApiError::internal(format!("The reset failed: {e}.")))?;
        Ok("Reset: the base model serves again. Trained versions are kept; /rl rollback vN brings one back.".into())
    }

    fn gate_status(&self) -> serde_json::Value {
        if !self.root.exists() {
            return serde_json::json!({"active": null, "candidate": null});
        }
        match self.store() {
            Ok(store) => super::gate::status_json(&store),
            Err(e) => {
                tracing::warn!("{}", e.message);
                serde_json::Value::Null
            }
        }
    }
}
