//! The learner's training sections: SFT, GRPO, the optimiser and checkpoints.

use serde::{Deserialize, Serialize};

/// Supervised phase. Defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Examples per forward/backward pass (right-padded to the longest one). Default 1.
    pub micro_batch_size: usize,
    /// Micro-batches per optimiser step. Default 16 (paper).
    pub grad_accum_steps: usize,
    /// Examples with more tokens (prompt + response) are skipped and counted, never truncated.
    /// Default 2000 (paper). Not a TOML field: [`AsrlConfig::train_config`](super::AsrlConfig::train_config)
    /// sets it from `data.max_seq_len`, the one length limit, which already drops such examples
    /// when the dataset is read.
    #[serde(skip)]
    pub max_seq_len: usize,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self { micro_batch_size: 1, grad_accum_steps: 16, max_seq_len: 2000 }
    }
}

/// How the per-token GRPO losses of a step are reduced to one scalar (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// Mean over each sequence's tokens, then mean over sequences.
    Grpo,
    /// Sum over all tokens / number of tokens (token-level mean).
    Dapo,
    /// Sum over all tokens / (sequences × max_new_tokens).
    DrGrpo,
}

/// How rewards are scaled into advantages (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageScaling {
    /// (r − group mean) / (group std + eps). The paper's GRPO.
    Group,
    /// (r − group mean) / (std over the whole step + eps).
    Batch,
    /// r − group mean (Dr. GRPO).
    None,
}

/// Reinforcement phase. Defaults are the paper's GRPO with TRL's conventions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpoConfig {
    /// Completions per forward/backward pass; gradients of a step are accumulated over them.
    /// Default 8.
    pub micro_batch_size: usize,
    /// Loss reduction. Default `grpo`.
    pub loss_aggregation: LossAggregation,
    /// Advantage normalisation. Default `group`.
    pub advantage_scaling: AdvantageScaling,
    /// Added to the std before dividing. Default 1e-4 (TRL).
    pub advantage_eps: f64,
    /// Lower PPO clip: ratios below 1 − epsilon_low stop pushing down. Default 0.2.
    pub epsilon_low: f64,
    /// Upper PPO clip: ratios above 1 + epsilon_high stop pushing up. Default 0.2.
    pub epsilon_high: f64,
    /// Truncated importance sampling: the unclipped ratio is capped at this value (TRL's `delta`,
    /// two-sided clipping), so a stale or mismatched sample with a negative advantage cannot
    /// produce an unbounded loss. Must exceed 1 + epsilon_high. Default 4.
    pub ratio_cap: f64,
    /// Completions sampled with an adapter more than this many versions older than the current
    /// one are dropped (and counted). Default 4.
    pub max_staleness: u64,
    /// Weight of the k3 KL estimate to the base model (adapter disabled). Default 0 (no
    /// reference forward pass at all).
    pub beta: f64,
    /// Optimiser passes over the same experiences (PPO epochs). Default 1.
    pub mu: usize,
    /// Groups (prompts) per optimiser step: the learner steps as soon as this many groups have
    /// arrived, and publishes the new adapter to the workers still sampling. The phase's last
    /// step takes what is left. Default 2 (8 questions: 4 steps, over which the LR decays).
    pub groups_per_step: usize,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            micro_batch_size: 8,
            loss_aggregation: LossAggregation::Grpo,
            advantage_scaling: AdvantageScaling::Group,
            advantage_eps: 1e-4,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            ratio_cap: 4.0,
            max_staleness: 4,
            beta: 0.0,
            mu: 1,
            groups_per_step: 2,
        }
    }
}

/// AdamW (torch.optim.AdamW semantics) and the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimiserConfig {
    /// SFT's learning rate, and GRPO's peak unless `grpo_lr` is set. Default 1e-4: a
    /// LoRA-appropriate value for the demo. The paper's
    /// full-model value 1e-6 barely moves a LoRA adapter; use [`OptimiserConfig::paper`] for it.
    pub lr: f64,
    /// Peak learning rate of the GRPO phase; `None` (the default) uses `lr`. GRPO's updates are
    /// noisier than SFT's, and a peak that suits SFT can undo the format SFT just taught.
    pub grpo_lr: Option<f64>,
    /// During GRPO the LR decays linearly from its peak to `peak * grpo_lr_floor` over the
    /// phase's planned steps, and resets at the next epoch. SFT is constant. Default 0.1.
    pub grpo_lr_floor: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (multiplies lr). Default 0 (transformers' Trainer default).
    pub weight_decay: f64,
    /// Global L2 norm over all LoRA gradients is clipped to this (≤ 0 disables). Default 1.0.
    pub max_grad_norm: f64,
    /// This many non-finite steps in a row abort the run with an error. Default 5.
    pub max_consecutive_nonfinite: usize,
}

impl Default for OptimiserConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            grpo_lr: None,
            grpo_lr_floor: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            max_consecutive_nonfinite: 5,
        }
    }
}

impl OptimiserConfig {
    /// The paper's learning rate (1e-6), everything else as the default.
    pub fn paper() -> Self {
        Self { lr: 1e-6, ..Self::default() }
    }

    /// The GRPO phase's peak learning rate: `grpo_lr`, or `lr` when it is not set.
    pub fn grpo_peak_lr(&self) -> f64 {
        self.grpo_lr.unwrap_or(self.lr)
    }
}

/// Where and how often the learner checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoints live in `<dir>/step-<global step>/`; `asrl-learner train` resolves a relative
    /// `dir` against `run.dir`. Default `checkpoints`.
    pub dir: std::path::PathBuf,
    /// Only the newest this many checkpoints are kept. Default 3.
    pub keep_last: usize,
    /// Optimiser steps between checkpoints (0: only when the caller asks; `train` always
    /// checkpoints at the end of each epoch). Default 50.
    pub every_steps: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self { dir: "checkpoints".into(), keep_last: 3, every_steps: 50 }
    }
}

/// All learner training sections together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub sft: SftConfig,
    pub grpo: GrpoConfig,
    pub optimiser: OptimiserConfig,
    pub checkpoint: CheckpointConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_toml_keeps_defaults_and_rejects_unknown_fields() {
        let cfg: TrainConfig = toml::from_str(
            "[grpo]\nloss_aggregation = \"dr_grpo\"\nbeta = 0.04\n[optimiser]\nlr = 2e-4\n",
        )
        .expect("valid config");
        assert_eq!(cfg.grpo.loss_aggregation, LossAggregation::DrGrpo);
        assert_eq!(cfg.grpo.beta, 0.04);
        assert_eq!(cfg.grpo.epsilon_high, 0.2);
        assert_eq!(cfg.optimiser.lr, 2e-4);
        assert_eq!(cfg.sft.grad_accum_steps, 16);
        let err = toml::from_str::<TrainConfig>("[sft]\nmax_seqlen = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_seqlen"), "{err}");
    }
}
