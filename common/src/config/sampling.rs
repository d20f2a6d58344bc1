use serde::{Deserialize, Serialize};

/// How a rollout group is sampled. Defaults are the paper's GRPO settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Completions per prompt (the GRPO group size).
    pub n: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus sampling mass; 1 disables it.
    pub top_p: f64,
    /// Generation stops after this many new tokens (or at an eos token).
    pub max_new_tokens: usize,
    /// Seed of the sampler's RNG; the same seed, model and prompt give the same group.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { n: 6, temperature: 0.7, top_p: 0.95, max_new_tokens: 300, seed: 0 }
    }
}
