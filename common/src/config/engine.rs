//! How the learner runs a training forward and backward.

use serde::{Deserialize, Serialize};

use crate::model::{Checkpointing, WeightPacking};

/// Whether a layer keeps its activations for the backward or recomputes them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationCheckpointing {
    /// Every layer keeps what its backward needs: fastest, most memory.
    Off,
    /// Every layer keeps only its input and recomputes its forward in the backward (about one
    /// more forward pass of compute).
    On,
    /// Layers keep their activations while the estimate for the batch fits
    /// `engine.activation_budget_mib`; the rest are recomputed.
    Auto,
}

/// `[engine]`: the training engine's memory/compute trade-off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `off`, `on` or `auto`. Default `auto`.
    pub activation_checkpointing: ActivationCheckpointing,
    /// Memory for kept activations under `auto`, in MiB, per micro-batch. The estimate counts
    /// what each layer's ops save for its batch (tokens × model shape × dtype). Default 4096:
    /// short sequences keep everything, the paper's 2000-token GRPO micro-batches of Qwen3-0.6B
    /// recompute most layers.
    pub activation_budget_mib: usize,
    /// GRPO: completions of one prompt in a micro-batch run that prompt once (projections, norms
    /// and MLP see each prompt token once; attention reads it per completion). Same log-probs
    /// and gradients as running every completion with its own copy; at the paper's shape (6 ×
    /// 300 tokens after a 1,700-token prompt) about 3.4× fewer tokens. Not applied while LoRA
    /// dropout is active (each completion then draws its own masks). Default true.
    pub share_prompts: bool,
    /// CPU, f32: the frozen projection weights are packed once into the product kernel's layout
    /// (two more copies, +810 MiB at SmolLM2-135M, +3.3 GiB at Qwen3-0.6B) instead of at every
    /// product (~5 % of a short-sequence step). `auto`: while memory is not short (checkpointing
    /// `off`, or `auto` with every layer's activations and the copies within
    /// `activation_budget_mib`, until the first batch that does not fit drops them for good); `on`;
    /// `off`.
    /// Default `auto`.
    pub weight_packing: WeightPacking,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            activation_checkpointing: ActivationCheckpointing::Auto,
            activation_budget_mib: 4096,
            share_prompts: true,
            weight_packing: WeightPacking::Auto,
        }
    }
}

impl EngineConfig {
    pub fn checkpointing(&self) -> Checkpointing {
        match self.activation_checkpointing {
            ActivationCheckpointing::Off => Checkpointing::Off,
            ActivationCheckpointing::On => Checkpointing::On,
            ActivationCheckpointing::Auto => {
                Checkpointing::Auto { budget_bytes: self.activation_budget_mib.saturating_mul(1 << 20) }
            }
        }
    }
}
