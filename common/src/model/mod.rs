//! Decoder-only transformer (Qwen3 and Llama families) with trainable LoRA adapters.
//!
//! - `transformer`: the decoder (differentiable `forward`, fused cached `forward_cached`).
//! - `cache`: the preallocated KV cache.
//! - `decode`, `batch_cache`: one decode step over sequences of many prompts (rollout leases).
//! - `lora`: LoRA `Var`s; `peft`: PEFT adapter files / transport bytes.
//! - `hf`: loading HF dirs (and dispatching `.gguf`); `gguf`: reading GGUF files as HF-named tensors.
//! - `logprobs`: per-token log-probabilities.
//! - `export`: writing a merged model as an HF dir (+ GGUF) that others can serve.
//! - `train`: the training engine (fused ops, hand-driven backward, activation checkpointing).
//! - `dropout`: seeded LoRA dropout masks shared by both training paths.

mod batch_cache;
mod cache;
mod config;
mod decode;
mod dropout;
mod error;
pub mod export;
pub mod gguf;
mod hf;
mod kernels;
mod logprobs;
mod lora;
mod peft;
mod random;
mod train;
mod transformer;
mod weights;

pub use batch_cache::BatchKvCache;
pub use cache::KvCache;
pub use config::{Arch, ModelConfig};
pub use error::ModelError;
pub use hf::{load, load_hf_model, LoadedModel};
pub use logprobs::token_logprobs;
pub use lora::{peft_key, LoraAdapter};
pub use peft::{lora_config_from_peft, peft_config_json, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
pub use random::random_tensors;
pub use train::{packed_weight_bytes, Checkpointing, LayerBytes, LoraGrads, ScoringBatch, Tape, TrainOptions, WeightPacking};
pub use transformer::{expected_tensor_shapes, Model};

#[cfg(test)]
mod tests;
