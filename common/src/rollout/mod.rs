//! Plain-Rust rollout types shared by the learner and the workers, independent of gRPC.
//!
//! One completion type travels from the sampler to the trainer, and each layer adds only what it
//! owns: the sampler's [`Completion`] (tokens, behaviour log-probs, text, finish reason); a
//! worker's [`GroupScorer`] adds a [`Reward`] ([`ScoredCompletion`]); the learner's service adds
//! the group's identity ([`RolloutGroup`]: prompt, adapter version, worker) and sends it through
//! the channel to `Trainer::grpo_step`.

mod version;

use std::sync::Arc;

pub use version::AdapterVersion;

use crate::reward::{Reward, RewardError};
use crate::sample::Completion;

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

/// A completion and its reward.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredCompletion {
    pub completion: Completion,
    pub reward: Reward,
}

/// The scored completions of one prompt, sampled by one worker with one adapter version: what
/// the learner's service validates, sends to the training thread, and `Trainer::grpo_step` trains on.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutGroup {
    pub prompt_id: String,
    /// The prompt tokens the learner leased (not echoed by the worker).
    pub prompt_tokens: Arc<[u32]>,
    /// The adapter every completion of the group was sampled with (the behaviour policy).
    pub adapter_version: AdapterVersion,
    pub worker_id: u64,
    pub completions: Vec<ScoredCompletion>,
}

/// Scores the completions of one prompt. Implementations: the configured reward components
/// ([`crate::reward::RewardScorer`]), or a client of an external `asrl.v1.RewardService`.
pub trait GroupScorer: Send + Sync {
    /// One [`Reward`] per completion, in order.
    fn score_group(&self, prompt: &PromptWork, completions: &[Completion]) -> Result<Vec<Reward>, GroupScoreError>;
}

/// A reward that failed for one prompt of a lease.
#[derive(Debug, thiserror::Error)]
#[error("reward for prompt {prompt_id}: {source}")]
pub struct GroupScoreError {
    pub prompt_id: String,
    #[source]
    pub source: RewardError,
}
