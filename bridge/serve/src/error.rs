//! Errors of the serving crate.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong while loading or serving a model.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("model not found at {0}: give a .gguf file or a Hugging Face safetensors folder")]
    ModelMissing(PathBuf),
    #[error("model {path} is not usable: {reason}")]
    ModelInvalid { path: PathBuf, reason: String },
    #[error("GGUF file {path} could not be read: {reason}")]
    Gguf { path: PathBuf, reason: String },
    #[error("tokenizer {path} is not usable: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("adapter folder not found at {0}")]
    AdapterMissing(PathBuf),
    #[error("adapter {path} is malformed: {reason}")]
    AdapterMalformed { path: PathBuf, reason: String },
    #[error("adapter {path} does not fit the model: {reason}")]
    AdapterMismatch { path: PathBuf, reason: String },
    #[error("mistral.rs failed to load the model: {0}")]
    Load(String),
    #[error("generation failed: {0}")]
    Generate(String),
    #[error("refusing to listen on {0}: rlclaw serves on loopback addresses only")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server stopped: {0}")]
    Server(String),
}

/// Result alias for this crate.
pub type Result<T, E = ServeError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ServeError {
    let path = path.into();
    move |source| ServeError::Io { path, source }
}
