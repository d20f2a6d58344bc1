//! The seam between the rollout loop and the model: [`ModelEngine`] implements [`RolloutEngine`]
//! with `asrl_common::model` + `asrl_common::sample`; tests use a fake.

use asrl_common::config::SamplingParams;
use asrl_common::rollout::{AdapterVersion, PromptWork};
use asrl_common::sample::Completion;

pub type EngineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Generates completion groups with a given adapter version. Runs on a blocking thread, never
/// on the async runtime; calls are sequential.
pub trait RolloutEngine: Send + 'static {
    /// Replaces the active adapter with `safetensors` (the bytes of
    /// `LoraAdapter::to_safetensors_bytes`, checksum already verified) as version `version`.
    fn load_adapter(&mut self, version: AdapterVersion, safetensors: &[u8]) -> Result<(), EngineError>;

    /// `params.n` completions of `prompt.prompt_tokens`, each with one behaviour log-prob per
    /// token. `params.seed` is already specific to this prompt.
    fn sample_group(&mut self, prompt: &PromptWork, params: &SamplingParams) -> Result<Vec<Completion>, EngineError>;
}

/// The real engine: the base model, with the learner's current adapter merged into its weights
/// so sampling runs at base-model speed.
pub struct ModelEngine {
    base: asrl_common::model::Model,
    merged: Option<asrl_common::model::Model>,
    tokenizer: asrl_common::tokenizer::Tokenizer,
    version: AdapterVersion,
}

impl ModelEngine {
    pub fn new(loaded: asrl_common::model::LoadedModel) -> Self {
        Self { base: loaded.model, merged: None, tokenizer: loaded.tokenizer, version: AdapterVersion::NONE }
    }

    /// Adapter version currently merged ([`AdapterVersion::NONE`]: the base model).
    pub fn version(&self) -> AdapterVersion {
        self.version
    }
}

impl RolloutEngine for ModelEngine {
    fn load_adapter(&mut self, version: AdapterVersion, safetensors: &[u8]) -> Result<(), EngineError> {
        let adapter = asrl_common::model::LoraAdapter::from_self_describing_bytes(
            safetensors,
            self.base.config(),
            self.base.device(),
        )?;
        self.merged = Some(self.base.merge(&adapter)?);
        self.version = version;
        Ok(())
    }

    fn sample_group(&mut self, prompt: &PromptWork, params: &SamplingParams) -> Result<Vec<Completion>, EngineError> {
        let model = self.merged.as_ref().unwrap_or(&self.base);
        Ok(asrl_common::sample::sample_group(model, None, &self.tokenizer, &prompt.prompt_tokens, params)?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use asrl_common::config::LoraConfig;
    use asrl_common::model::{LoadedModel, LoraAdapter};
    use asrl_common::rollout::ExampleKind;

    use super::*;

    fn tiny_qwen3() -> LoadedModel {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-qwen3");
        asrl_common::model::load(&dir, &candle_core::Device::Cpu, candle_core::DType::F32).expect("fixture loads")
    }

    #[test]
    fn engine_samples_with_the_pushed_adapter() {
        let loaded = tiny_qwen3();
        let cfg = loaded.model.config().clone();
        let mut engine = ModelEngine::new(loaded);
        let prompt = PromptWork {
            prompt_id: "p".into(),
            prompt_tokens: Arc::from(vec![9707u32, 11, 1879]),
            prompt_text: "Hello, world".into(),
            ground_truth: String::new(),
            kind: ExampleKind::Open,
            example_type: String::new(),
        };
        let params = SamplingParams { n: 3, temperature: 0.0, top_p: 1.0, max_new_tokens: 6, seed: 1 };
        let base = engine.sample_group(&prompt, &params).unwrap();
        assert_eq!(base.len(), 3);
        assert!(base.iter().all(|c| c.tokens.len() == c.logprobs.len() && !c.tokens.is_empty()));

        // A large random adapter (B non-zero) must change greedy log-probs once pushed.
        let lora = LoraConfig { r: 4, alpha: 64.0, ..LoraConfig::default() };
        let adapter = LoraAdapter::new(&lora, &cfg, &candle_core::Device::Cpu, 7).unwrap();
        for (name, var) in adapter.vars() {
            if name.contains("lora_B") {
                let noise = candle_core::Tensor::randn(0f32, 0.5, var.shape(), &candle_core::Device::Cpu).unwrap();
                var.set(&noise).unwrap();
            }
        }
        let bytes = adapter.to_safetensors_bytes().unwrap();
        let (v5, v6) = (AdapterVersion::new(5), AdapterVersion::new(6));
        engine.load_adapter(v5, &bytes).unwrap();
        assert_eq!(engine.version(), v5);
        let tuned = engine.sample_group(&prompt, &params).unwrap();
        assert_ne!(base[0].logprobs, tuned[0].logprobs);

        assert!(engine.load_adapter(v6, b"not safetensors").is_err());
        assert_eq!(engine.version(), v5, "a bad payload leaves the loaded adapter in place");
    }
}
