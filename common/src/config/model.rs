use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;

/// Floating-point type the frozen base weights are held in: the one dtype type of the config
/// (`model.dtype`) and of every `--dtype` flag (with the `cli` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    #[cfg_attr(feature = "cli", value(alias = "float32"))]
    F32,
    #[cfg_attr(feature = "cli", value(alias = "bfloat16"))]
    Bf16,
    #[cfg_attr(feature = "cli", value(alias = "float16"))]
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

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    pub device: DeviceSpec,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { path: PathBuf::from("models/Qwen3-0.6B"), dtype: WeightDtype::Bf16, device: DeviceSpec::Cpu }
    }
}
