//! rlclaw-trainer: LoRA reinforcement learning from chat ratings.
//!
//! The bridge calls [`train`] (or [`train_with_model`] with a cached [`LoadedModel`]) with rated
//! [`Sample`]s, gets a [`TrainReport`] with the new adapter and the updated reward baseline, and
//! keeps versions in an [`AdapterStore`]. Training runs on candle's autograd through our own
//! decoder ([`decoder`]); the objective is in [`objective`].

pub mod adapter;
pub mod anchor;
pub mod attention;
mod cpu_gemm;
pub mod decoder;
pub mod device;
pub mod device_ops;
pub mod error;
pub mod eval;
pub mod fused;
pub mod hint;
pub mod import;
pub mod lora;
pub mod model;
pub mod objective;
pub mod ops;
pub mod optim;
pub mod peer;
pub mod preset;
pub mod tiny;
pub mod train;
pub mod versions;

pub use adapter::{AdapterConfig, LoraWeights};
pub use decoder::{Decoder, Divergence, Kernels};
pub use device::{DEVICE_ENV, DeviceChoice};
pub use error::{Result, TrainerError};
pub use eval::{GatePolicy, GateReport, HoldReason, Verdict, is_held_out};
pub use hint::usable_hint;
pub use import::{FitError, ForeignAdapter, ForeignInfo, read_foreign_adapter};
pub use lora::LoraSet;
pub use model::{Arch, ChatMessage, ChatTemplate, LoadedModel, ModelConfig, ModelSource};
pub use objective::{Baseline, ObjectiveParams};
pub use peer::ObjectiveVariant;
pub use preset::{HyperParams, ModelKind, ModelProfile, Preset, SizeBucket};
pub use train::{
    EncodedSample, Progress, Sample, TrainMetrics, TrainReport, TrainRequest, encode_sample, train,
    train_with_model,
};
pub use versions::{
    AdapterStore, ForcedPromotion, NewVersion, VersionInfo, VersionMetadata, VersionNotes,
};
