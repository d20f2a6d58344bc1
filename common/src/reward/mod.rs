//! Rewards for GRPO rollouts, run by the workers: the paper's format and correctness rewards
//! plus a small registry of named reward functions combined by weight.
//!
//! - [`format_ok_strict`] is the **format accuracy** metric.
//! - [`RewardFn`] is the plug-in interface of one named component: per completion, or per group
//!   ([`RewardFn::score_group`], which an external service overrides to be called once a group).
//! - [`RewardScorer`] sums the configured components ([`crate::config::RewardConfig`]) into a
//!   [`Reward`], and scores whole groups for the rollout loop as a [`crate::rollout::GroupScorer`].
//! - [`ServiceReward`] (`name = "service"`): scores from an external `asrl.v1.RewardService`.

mod answer;
mod correctness;
mod format;
mod group;
mod length;
mod numeric;
mod pattern;
mod scorer;
mod service;

pub use answer::{final_answer, normalize_answer, THINK_CLOSE, THINK_OPEN};
pub use correctness::{CorrectnessMode, CorrectnessReward};
pub use format::{
    format_ok_lenient, format_ok_strict, FormatMode, FormatReward, INTUITION_CLOSE, INTUITION_OPEN,
    LOGIC_CLOSE, LOGIC_OPEN,
};
pub use length::LengthPenalty;
pub use numeric::{last_number, NumericReward};
pub use pattern::{MatchTarget, RegexReward};
pub use scorer::{Reward, RewardConstructor, RewardRegistry, RewardScorer};
pub use service::{ServiceParams, ServiceReward};

use serde::de::DeserializeOwned;

/// What a reward function sees of one completion.
#[derive(Debug, Clone, Copy)]
pub struct RewardInput<'a> {
    /// The prompt as given to the model (chat-templated text).
    pub prompt: &'a str,
    /// The sampled completion.
    pub completion: &'a str,
    /// The example's ground-truth answer.
    pub answer: &'a str,
    /// The example's `type`.
    pub example_type: &'a str,
    /// Completion length in tokens when the caller knows it (used by `length_penalty`).
    pub completion_tokens: Option<usize>,
    /// The prompt's id in its GRPO phase when the caller knows it ("" otherwise); sent to an
    /// external reward service.
    pub prompt_id: &'a str,
}

impl<'a> RewardInput<'a> {
    pub fn new(
        prompt: &'a str,
        completion: &'a str,
        answer: &'a str,
        example_type: &'a str,
    ) -> Self {
        Self {
            prompt,
            completion,
            answer,
            example_type,
            completion_tokens: None,
            prompt_id: "",
        }
    }

    pub fn with_completion_tokens(mut self, tokens: usize) -> Self {
        self.completion_tokens = Some(tokens);
        self
    }

    pub fn with_prompt_id(mut self, prompt_id: &'a str) -> Self {
        self.prompt_id = prompt_id;
        self
    }
}

/// A reward function. Implementations must be cheap to call from many threads.
pub trait RewardFn: Send + Sync {
    fn name(&self) -> &str;
    fn score(&self, input: &RewardInput<'_>) -> Result<f64, RewardError>;

    /// Scores the completions of one prompt together, one [`Reward`] per input in order: `total`
    /// is this function's score, `components` optional named parts of it (reported, not summed,
    /// as `<label>.<name>`). The default calls [`RewardFn::score`] once per input; a function
    /// with a per-call cost (an external service) overrides it to pay that cost once a group.
    fn score_group(&self, inputs: &[RewardInput<'_>]) -> Result<Vec<Reward>, RewardError> {
        inputs.iter().map(|i| Ok(Reward { total: self.score(i)?, components: Default::default() })).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error("unknown reward function {name:?} (known: {known})")]
    UnknownReward { name: String, known: String },
    #[error("reward {reward}: invalid params: {message}")]
    InvalidParams { reward: String, message: String },
    #[error("reward component {label:?}: {message}")]
    InvalidComponent { label: String, message: String },
    #[error("reward {reward}: the example has no ground-truth answer")]
    MissingAnswer { reward: String },
    #[error("reward {reward}: the ground-truth answer {answer:?} holds no number")]
    NonNumericAnswer { reward: String, answer: String },
    #[error("reward {reward} returned a non-finite score {score}")]
    NonFinite { reward: String, score: f64 },
    /// For rewards computed elsewhere (e.g. an external reward service).
    #[error("reward {reward}: {message}")]
    External { reward: String, message: String },
}

/// Reads a function's params with its own `deny_unknown_fields` struct.
pub(crate) fn parse_params<T: DeserializeOwned>(
    reward: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, RewardError> {
    serde_json::from_value(serde_json::Value::Object(params.clone())).map_err(|e| {
        RewardError::InvalidParams {
            reward: reward.to_string(),
            message: e.to_string(),
        }
    })
}
