//! The seam between the rollout loop and the model: the lead implements [`RolloutEngine`] with
//! `asrl_common::model` + `asrl_common::generate`; tests use a fake.

use asrl_common::config::SamplingParams;
use asrl_common::rollout::{GeneratedCompletion, PromptWork};

pub type EngineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Generates completion groups with a given adapter version. Runs on a blocking thread, never
/// on the async runtime; calls are sequential.
pub trait RolloutEngine: Send + 'static {
    /// Replaces the active adapter with `safetensors` (the bytes of
    /// `LoraAdapter::to_safetensors_bytes`, checksum already verified) as version `version`.
    fn load_adapter(&mut self, version: u64, safetensors: &[u8]) -> Result<(), EngineError>;

    /// `params.n` completions of `prompt.prompt_tokens`, each with one behaviour log-prob per
    /// token. `params.seed` is already specific to this prompt.
    fn generate_group(&mut self, prompt: &PromptWork, params: &SamplingParams) -> Result<Vec<GeneratedCompletion>, EngineError>;
}
