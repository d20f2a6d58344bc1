//! The learner's training core: the math of ASRL's two phases, independent of gRPC.
//!
//! - [`losses`]: SFT cross-entropy and the GRPO clipped objective on tensors.
//! - [`advantage`]: group-relative advantages.
//! - [`grpo_stages`]: the stages of a GRPO step as plain functions (validate, advantages,
//!   statistics, staleness filter, micro-batch layout).
//! - [`optim`]: AdamW with checkpointable state, gradient-norm clipping.
//! - [`lr`]: the phase-aware learning-rate schedule.
//! - [`metrics`]: the trainer's step/phase records and `trainer.jsonl` ([`TrainerLog`]).
//! - [`checkpoint`]: checkpoint directories, written atomically.
//! - [`policy`]: what the trainer needs from a model; [`lora_policy`]: base model + LoRA.
//! - [`trainer`]: the [`Trainer`] tying them together for the epoch loop.

pub mod advantage;
pub mod checkpoint;
mod error;
pub mod grpo_stages;
pub mod lora_policy;
pub mod losses;
pub mod lr;
pub mod metrics;
pub mod optim;
pub mod policy;
pub mod trainer;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use error::TrainError;
pub use lora_policy::LoraPolicy;
pub use metrics::{GrpoStepMetrics, PhaseMetrics, SftStepMetrics, StepMetrics, TrainerLog};
pub use policy::Policy;
pub use trainer::{SftExample, Trainer, TrainerState};
