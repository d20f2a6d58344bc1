//! Decoder-only transformer (Qwen3 and Llama families) with trainable LoRA adapters.

mod config;

pub use config::{Arch, ModelConfig};
