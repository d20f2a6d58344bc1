//! The seam between the rollout loop and the model: [`ModelEngine`] implements [`RolloutEngine`]
//! with `asrl_common::model` + `asrl_common::sample`; tests use a fake.

use asrl_common::config::SamplingParams;
use asrl_common::rollout::{AdapterVersion, PromptWork};
use asrl_common::sample::{sample_groups, Completion, GroupRequest};

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

    /// Every prompt's group of a lease (`params[i]` holds prompt i's own seed), in order. An
    /// engine that batches overrides it; this default samples one group after another.
    fn sample_groups(&mut self, prompts: &[PromptWork], params: &[SamplingParams]) -> Result<Vec<Vec<Completion>>, EngineError> {
        prompts.iter().zip(params).map(|(p, s)| self.sample_group(p, s)).collect()
    }
}

/// The real engine: the base model, with the learner's current adapter merged into its weights
/// so sampling runs at base-model speed.
pub struct ModelEngine {
    base: asrl_common::model::Model,
    merged: Option<asrl_common::model::Model>,
    tokenizer: asrl_common::tokenizer::Tokenizer,
    version: AdapterVersion,
    max_sequences: usize,
}

impl ModelEngine {
    /// Decodes up to [`asrl_common::config::DEFAULT_MAX_SEQUENCES`] sequences together.
    pub fn new(loaded: asrl_common::model::LoadedModel) -> Self {
        Self {
            base: loaded.model,
            merged: None,
            tokenizer: loaded.tokenizer,
            version: AdapterVersion::NONE,
            max_sequences: asrl_common::config::DEFAULT_MAX_SEQUENCES,
        }
    }

    /// Sequences decoded together (at least 1; a group larger than this still decodes whole).
    pub fn with_max_sequences(mut self, max_sequences: usize) -> Self {
        self.max_sequences = max_sequences.max(1);
        self
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

    fn sample_groups(&mut self, prompts: &[PromptWork], params: &[SamplingParams]) -> Result<Vec<Vec<Completion>>, EngineError> {
        if prompts.len() != params.len() {
            return Err(format!("{} prompts with {} sampling settings", prompts.len(), params.len()).into());
        }
        let model = self.merged.as_ref().unwrap_or(&self.base);
        let requests: Vec<GroupRequest<'_>> = prompts
            .iter()
            .zip(params)
            .map(|(p, s)| GroupRequest { prompt_ids: &p.prompt_tokens, params: s.clone() })
            .collect();
        Ok(sample_groups(model, None, &self.tokenizer, &requests, self.max_sequences)?)
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

    /// A lease's groups sampled together equal each group sampled alone, also when the
    /// batch holds fewer sequences than the lease.
    #[test]
    fn lease_groups_batched_equal_groups_alone() {
        let work = |i: usize, tokens: Vec<u32>| PromptWork {
            prompt_id: format!("p{i}"),
            prompt_tokens: Arc::from(tokens),
            prompt_text: String::new(),
            ground_truth: String::new(),
            kind: ExampleKind::Open,
            example_type: String::new(),
        };
        let prompts = vec![work(0, vec![9707, 11, 1879]), work(1, vec![40, 1079, 264, 8256, 13, 3555, 374]), work(2, vec![17])];
        let params: Vec<SamplingParams> = (0..3)
            .map(|i| SamplingParams { n: 3, temperature: 0.8, top_p: 0.95, max_new_tokens: 7, seed: 11 + i })
            .collect();
        let mut engine = ModelEngine::new(tiny_qwen3()).with_max_sequences(4);
        let alone: Vec<Vec<Completion>> = prompts.iter().zip(&params).map(|(p, s)| engine.sample_group(p, s).unwrap()).collect();
        assert_eq!(engine.sample_groups(&prompts, &params).unwrap(), alone);
        assert!(engine.sample_groups(&prompts, &params[..2]).is_err());
    }
}
