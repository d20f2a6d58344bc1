use serde::{Deserialize, Serialize};

/// `[eval]`: what is measured on the validation split after each phase and epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Validation examples the loss is computed on, the same ones every epoch (a fixed-seed
    /// sample); 0 = the whole validation split. Default 0.
    pub loss_examples: usize,
    /// Validation prompts the workers answer for format accuracy and mean reward, the same ones
    /// every epoch while the split is unchanged; 0 = the whole validation split. Default 64.
    pub generate_examples: usize,
    /// Completions per validation prompt. Default 1.
    pub samples_per_prompt: usize,
    /// Sampling temperature of validation completions; 0 = greedy. Default 0.
    pub temperature: f64,
    /// Micro-batch size of the validation-loss forward passes. Default 4.
    pub micro_batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { loss_examples: 0, generate_examples: 64, samples_per_prompt: 1, temperature: 0.0, micro_batch_size: 4 }
    }
}
