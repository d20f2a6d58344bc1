use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Floating-point type the frozen base weights are held in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    F32,
    Bf16,
    F16,
}

impl WeightDtype {
    pub fn to_candle(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::Bf16 => candle_core::DType::BF16,
            Self::F16 => candle_core::DType::F16,
        }
    }
}

/// `[model]`: the base model the adapter is trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// An HF model directory (config.json, *.safetensors, tokenizer.json, ...) or a `.gguf` file.
    /// Relative paths are resolved against the directory the process runs in.
    pub path: PathBuf,
    /// dtype of the frozen base weights: `f32`, `bf16` or `f16`. The LoRA matrices are always f32.
    pub dtype: WeightDtype,
    /// Learner device: `cpu`, `cuda` or `cuda:N`.
    pub device: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { path: PathBuf::from("models/Qwen3-0.6B"), dtype: WeightDtype::Bf16, device: "cpu".into() }
    }
}
