//! Shared core of asrl-rs, used by both the learner and the rollout workers.
//!
//! - [`cli`] (feature `cli`): the clap flags and error convention the binaries share.
//! - [`config`]: every configuration struct, with the paper's defaults documented in one place.
//! - [`model`]: the Qwen3/Llama decoder, LoRA adapters, HF + GGUF loading, PEFT adapter files.
//! - [`tokenizer`]: tokenizer and chat template.
//! - [`sample`]: KV-cached group sampling and the [`sample::Completion`] it returns.
//! - [`data`]: the live JSONL dataset and its stable split.
//! - [`reward`]: the paper's format and correctness rewards.
//! - [`rollout`]: lease work, scored completions and groups, adapter versions (plain Rust).
//! - [`transport`]: gRPC plumbing shared by learner and workers.
//! - [`phase`]: the SFT / GRPO phase enum.
//! - [`fs`]: atomic directory replacement.
//! - [`device`], [`telemetry`], [`shutdown`]: device specs, tracing set-up, Ctrl-C handling.
//! - [`allocator`]: the binaries' global allocator (mimalloc, freed pages kept).

pub mod allocator;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod fs;
pub mod model;
pub mod phase;
pub mod reward;
pub mod rollout;
pub mod sample;
pub mod shutdown;
pub mod telemetry;
pub mod tokenizer;
pub mod transport;
