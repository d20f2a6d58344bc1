//! Plain-Rust rollout types shared by the learner and the workers, independent of gRPC:
//! the work a lease hands out, what a worker's engine and reward functions produce, and the
//! [`ExperienceGroup`] the learner's training thread consumes.

use std::sync::Arc;

/// Whether an example has a checkable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExampleKind {
    /// Correctness is checked against `ground_truth`.
    Verifiable,
    /// No checkable answer; only format rewards apply.
    Open,
}

/// One prompt of a GRPO phase, as queued by the learner and leased to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptWork {
    /// Unique within a phase; a group is counted at most once per prompt id.
    pub prompt_id: String,
    /// Chat-templated prompt tokens.
    pub prompt_tokens: Arc<[u32]>,
    /// The templated prompt text (for rewards and logs).
    pub prompt_text: String,
    pub ground_truth: String,
    pub kind: ExampleKind,
    /// The dataset's `type` field ("" when unknown): per-type reward components filter on it.
    pub example_type: String,
}

/// Why generation of one completion stopped (the sampler's own type).
pub use crate::generate::FinishReason;

/// One sampled completion as a worker's engine returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedCompletion {
    pub tokens: Vec<u32>,
    /// Behaviour log-prob of each sampled token (same length as `tokens`).
    pub logprobs: Vec<f32>,
    /// Decoded completion, for reward functions.
    pub text: String,
    pub finish: FinishReason,
}

/// Rewards of one completion: the total the advantage uses, and its named components for logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RewardScores {
    pub total: f64,
    pub components: Vec<(String, f64)>,
}

/// Scores completions of one prompt. Implementations: the paper's format + correctness rewards
/// (`crate::reward`), or a client of an external `asrl.v1.RewardService`.
pub trait RewardFn: Send + Sync {
    /// One [`RewardScores`] per completion, in order.
    fn score(&self, prompt: &PromptWork, completions: &[GeneratedCompletion]) -> Result<Vec<RewardScores>, RewardError>;
}

#[derive(Debug, thiserror::Error)]
#[error("reward for prompt {prompt_id}: {message}")]
pub struct RewardError {
    pub prompt_id: String,
    pub message: String,
}

/// One completion of a finished group, ready for the GRPO loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Experience {
    /// The prompt tokens the learner leased (shared by the group, not echoed by the worker).
    pub prompt_tokens: Arc<[u32]>,
    pub completion_tokens: Vec<u32>,
    /// Log-probs under the behaviour policy (the adapter `adapter_version`), one per completion token.
    pub behaviour_logprobs: Vec<f32>,
    pub finish: FinishReason,
    pub reward: f64,
    pub reward_components: Vec<(String, f64)>,
}

/// A validated group of completions of one prompt, sent to the training thread.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperienceGroup {
    pub prompt_id: String,
    pub prompt_tokens: Arc<[u32]>,
    /// Adapter version that generated every completion of the group.
    pub adapter_version: u64,
    pub worker_id: u64,
    pub completions: Vec<Experience>,
}
