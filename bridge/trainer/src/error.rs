//! Errors of the trainer. Every error says what was being done and with which file.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

/// What can go wrong while loading, training or storing adapters.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tensor operation failed while {context}: {source}")]
    Tensor {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("invalid model at {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("chat template error: {0}")]
    Template(String),
    #[error("invalid adapter at {path}: {reason}")]
    Adapter { path: PathBuf, reason: String },
    #[error("adapter store error at {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error("invalid training request: {0}")]
    Request(String),
    #[error("training diverged: {0}")]
    NonFinite(String),
    #[error("device error: {0}")]
    Device(String),
    #[error("training cancelled")]
    Cancelled,
    #[error("JSON error in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl TrainerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Model {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn adapter(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Adapter {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn store(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Store {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Adds a context string to candle errors.
pub(crate) trait TensorContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> TensorContext<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| TrainerError::Tensor {
            context: context.to_string(),
            source,
        })
    }
}
