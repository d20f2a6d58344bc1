//! Activation checkpointing: which layers keep their saved activations until the backward and
//! which keep only their input and replay their forward there.

use candle_core::DType;

use crate::config::LoraConfig;
use crate::model::{Arch, ModelConfig};

/// How much of the forward the tape keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpointing {
    /// Every layer keeps what its backward reads: fastest, most memory.
    #[default]
    Off,
    /// Every layer keeps only its input (b·t × hidden) and replays its forward, saving, when
    /// the backward reaches it: one layer's activations alive at a time, one extra forward.
    On,
    /// The top layers stay fully saved while the tape fits `budget_bytes` (see
    /// [`LayerBytes`]); the rest are checkpointed. The top ones, because the backward frees
    /// them first, so they are gone before any checkpointed layer is replayed.
    Auto { budget_bytes: usize },
}

impl Checkpointing {
    /// How many of the top layers stay fully saved, out of `num_layers`.
    pub fn saved_layers(&self, num_layers: usize, bytes: LayerBytes) -> usize {
        match *self {
            Checkpointing::Off => num_layers,
            Checkpointing::On => 0,
            Checkpointing::Auto { budget_bytes } => {
                // k·saved + (L − k)·checkpointed ≤ budget.
                let base = num_layers * bytes.checkpointed;
                let extra = bytes.saved.saturating_sub(bytes.checkpointed).max(1);
                (budget_bytes.saturating_sub(base) / extra).min(num_layers)
            }
        }
    }
}

/// Estimated bytes the tape holds per layer for one batch, between forward and backward.
///
/// With n forward tokens (b × the batch's forward width), s bytes per element of the model
/// dtype, Q = heads·head_dim, K = kv_heads·head_dim, I = intermediate, H = hidden:
///
/// ```text
/// saved        = s·n·(4H + 2Q + 2K + 3I  [+ Q + K for Qwen3's q/k norm inputs])
///              + 4·n·(2  [+ heads + kv_heads for Qwen3]  + Σ r over adapted projections
///                     [+ Σ in over adapted projections, with dropout])
///              + 4·heads·slots   (slots = n, or rows × width when attention rows are gathered)
/// checkpointed = s·n·H
/// ```
///
/// Saved: the layer input and the post-attention residual (norm inputs, 2H), both norms'
/// outputs (the projections' inputs, 2H), q, k, v after RoPE and the attention output
/// (2Q + 2K), gate|up and the SwiGLU output (3I); in f32 the per-row rstd of each norm,
/// attention's log-sum-exp per head, each LoRA call's x·Aᵀ (r per adapted projection) and, with
/// dropout, each mask (one input row per adapted projection). Not counted: the transient
/// tensors of one layer's forward or backward (at most a few n × max(Q + 2K, 2I) buffers,
/// alive one layer at a time) and the vocabulary head (m scored rows × H, plus logits chunks of
/// `asrl_ops::linear_logprob::LOGITS_BUDGET_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerBytes {
    /// A fully saved layer.
    pub saved: usize,
    /// A checkpointed layer (its input only).
    pub checkpointed: usize,
}

impl LayerBytes {
    /// `lora`: the adapter's config and whether dropout is active in this forward.
    pub fn estimate(cfg: &ModelConfig, dtype: DType, lora: Option<(&LoraConfig, bool)>, tokens: usize) -> Self {
        Self::estimate_with_rows(cfg, dtype, lora, tokens, tokens)
    }

    /// [`Self::estimate`] for a forward whose attention runs on `attention_slots` (rows ×
    /// width) gathered from its `tokens` (completions sharing a prompt): attention's
    /// log-sum-exp is kept per slot, everything else per token.
    pub fn estimate_with_rows(
        cfg: &ModelConfig,
        dtype: DType,
        lora: Option<(&LoraConfig, bool)>,
        tokens: usize,
        attention_slots: usize,
    ) -> Self {
        let s = dtype.size_in_bytes();
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (q, k) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
        let qwen = cfg.arch == Arch::Qwen3;
        let mut model_dtype = 4 * h + 2 * q + 2 * k + 3 * i;
        let mut f32s = 2;
        if qwen {
            model_dtype += q + k;
            f32s += cfg.num_attention_heads + cfg.num_key_value_heads;
        }
        if let Some((l, dropout)) = lora {
            let mut targets = l.target_modules.clone();
            targets.sort();
            targets.dedup();
            for t in targets {
                f32s += l.r;
                if dropout {
                    f32s += cfg.projection_shape(t).1;
                }
            }
        }
        let lse = 4 * cfg.num_attention_heads * attention_slots;
        LayerBytes { saved: tokens * (s * model_dtype + 4 * f32s) + lse, checkpointed: tokens * s * h }
    }
}
