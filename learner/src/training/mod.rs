//! The learner's training core: the math of ASRL's two phases, independent of gRPC.
//!
//! - [`losses`]: SFT cross-entropy and the GRPO clipped objective on tensors.
//! - [`advantage`]: group-relative advantages.
//! - [`optim`]: AdamW with checkpointable state, gradient-norm clipping.
//! - [`schedule`]: the phase-aware learning-rate schedule.
//! - [`metrics`]: step/phase metrics and the `metrics.jsonl` sink.
//! - [`checkpoint`]: atomic checkpoint directories.
//! - [`policy`]: what the trainer needs from a model; [`lora_policy`]: base model + LoRA.
//! - [`trainer`]: the [`Trainer`] tying them together for the epoch loop.

pub mod advantage;
pub mod checkpoint;
pub mod lora_policy;
pub mod losses;
pub mod metrics;
pub mod optim;
pub mod policy;
pub mod schedule;
pub mod trainer;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use metrics::{GrpoStepMetrics, MetricsSink, PhaseMetrics, SftStepMetrics};
pub use lora_policy::LoraPolicy;
pub use policy::Policy;
pub use schedule::Phase;
pub use trainer::{Group, GroupCompletion, SftExample, Trainer, TrainerState};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] asrl_common::model::ModelError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("bad training input: {0}")]
    Input(String),
    #[error("i/o: {0}")]
    Io(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("{count} consecutive optimiser steps had a non-finite loss or gradient")]
    NonFiniteRun { count: u64 },
    #[error("{0} SFT micro-batches are accumulated but not applied: flush before this")]
    PendingAccumulation(usize),
}
