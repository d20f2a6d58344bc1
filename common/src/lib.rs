//! Shared core of asrl-rs, used by both the learner and the rollout workers.
//!
//! - [`cli`] (feature `cli`): the clap flags and error convention the binaries share.
//! - [`config`]: every configuration struct, with the paper's defaults documented in one place.
//! - [`model`]: the Qwen3/Llama decoder, LoRA adapters, HF + GGUF loading, PEFT adapter files.
//! - [`tokenizer`]: tokenizer and chat template.
//! - [`generate`]: KV-cached group sampling.
//! - [`data`]: the live JSONL dataset and its stable split.
//! - [`reward`]: the paper's format and correctness rewards.
//! - [`telemetry`]: tracing set-up shared by the binaries.
//! - [`rollout`]: lease work, completions, rewards and training experiences (plain Rust).
//! - [`transport`]: gRPC plumbing shared by learner and workers.

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod generate;
pub mod model;
pub mod reward;
pub mod telemetry;
pub mod rollout;
pub mod shutdown;
pub mod tokenizer;
pub mod transport;
