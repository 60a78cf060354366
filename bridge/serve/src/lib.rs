//! rlclaw-serve: the person's base model with the active rlclaw adapter merged in, served
//! over an OpenAI-compatible endpoint on loopback through mistral.rs, and generation for the
//! evaluation gate.
//!
//! mistral.rs 0.8.1 merges PEFT LoRA adapters into the weights at load time and cannot swap
//! adapters at run time, so a new adapter means a new model: [`serve`] loads it in the
//! background and swaps it in while the endpoint keeps answering.
//!
//! [`ollama_modelfile`] (module [`ollama`]) needs no model and no mistral.rs types.

mod adapter;
mod convert;
mod engine;
mod error;
pub mod ollama;
mod server;

pub use adapter::{AdapterConfig, CheckedAdapter, check as check_adapter};
pub use convert::{GgufHeader, ModelShape, gguf_to_hf, is_gguf};
pub use engine::{
    ChatMessage, DEFAULT_LISTEN, DEFAULT_MODEL_ID, Engine, Role, Sampling, ServeConfig, cache_root,
    default_isq, isq_from_env, load,
};
pub use error::{Result, ServeError};
pub use ollama::ollama_modelfile;
pub use server::{ReloadStatus, Server, bind, serve};
