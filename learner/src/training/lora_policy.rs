//! The real policy: a frozen base [`Model`] plus the trainable [`LoraAdapter`], scored by the
//! fused training engine (`Model::train_forward` / `Model::score_logprobs`). `logits` keeps
//! the autograd reference path (`Model::forward`) for tests and comparisons.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{Device, Tensor, Var};

use asrl_common::model::{Checkpointing, LoraAdapter, Model, ScoringBatch, Tape, TrainOptions, WeightPacking};

use super::policy::{assign_by_name, Backward, Policy};
use super::TrainError;

pub struct LoraPolicy {
    model: Model,
    adapter: LoraAdapter,
    /// Written into `adapter_config.json` as `base_model_name_or_path`.
    base_name: String,
    checkpointing: Checkpointing,
    share_prompts: bool,
    weight_packing: WeightPacking,
}

impl LoraPolicy {
    /// Puts the adapter in training mode (LoRA dropout active when configured). Activation
    /// checkpointing is off until [`LoraPolicy::with_checkpointing`].
    pub fn new(model: Model, mut adapter: LoraAdapter, base_name: impl Into<String>) -> Self {
        adapter.set_training(true);
        Self {
            model,
            adapter,
            base_name: base_name.into(),
            checkpointing: Checkpointing::Off,
            share_prompts: true,
            weight_packing: WeightPacking::default(),
        }
    }

    /// Which layers of a training forward keep their activations (`[engine]` in the config).
    pub fn with_checkpointing(mut self, checkpointing: Checkpointing) -> Self {
        self.checkpointing = checkpointing;
        self
    }

    /// Whether completions sharing a prompt run it once (`engine.share_prompts`; default on).
    pub fn with_prompt_sharing(mut self, share: bool) -> Self {
        self.share_prompts = share;
        self
    }

    /// Whether training runs the frozen projections from packed copies (`engine.weight_packing`;
    /// default `auto`).
    pub fn with_weight_packing(mut self, packing: WeightPacking) -> Self {
        self.weight_packing = packing;
        self
    }

    /// `batch` as the engine should run it.
    fn layout<'b>(&self, batch: &'b ScoringBatch) -> Cow<'b, ScoringBatch> {
        if self.share_prompts || !batch.shares_prompts() {
            Cow::Borrowed(batch)
        } else {
            Cow::Owned(batch.clone().unshared())
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn adapter(&self) -> &LoraAdapter {
        &self.adapter
    }
}

impl Policy for LoraPolicy {
    fn logits(&self, input_ids: &Tensor, adapter: bool) -> Result<Tensor, TrainError> {
        Ok(self.model.forward(input_ids, adapter.then_some(&self.adapter))?)
    }

    fn seed_dropout(&self, seed: u64) {
        self.adapter.seed_dropout(seed);
    }

    fn score(&self, batch: &ScoringBatch, temperature: f64, adapter: bool) -> Result<Tensor, TrainError> {
        Ok(self.model.score_logprobs(&self.layout(batch), adapter.then_some(&self.adapter), temperature)?)
    }

    fn score_for_training(
        &self,
        batch: &ScoringBatch,
        temperature: f64,
    ) -> Result<(Tensor, Box<dyn Backward + '_>), TrainError> {
        let opts = TrainOptions { temperature, checkpointing: self.checkpointing, weight_packing: self.weight_packing };
        let (logprobs, tape) = self.model.train_forward(&self.layout(batch), &self.adapter, &opts)?;
        Ok((logprobs, Box::new(EngineBackward(tape))))
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        self.adapter.vars()
    }

    fn save_adapter(&self, dir: &Path) -> Result<(), TrainError> {
        Ok(self.adapter.save_peft(dir, &self.base_name)?)
    }

    fn load_adapter(&self, dir: &Path) -> Result<(), TrainError> {
        let loaded = LoraAdapter::load_peft(dir, self.model.config(), self.model.device())?;
        let key = |c: &asrl_common::config::LoraConfig| {
            let mut t = c.target_modules.clone();
            t.sort();
            t.dedup();
            (c.r, c.alpha, c.dropout, t)
        };
        if key(loaded.config()) != key(self.adapter.config()) {
            return Err(TrainError::checkpoint(
                dir,
                format!("adapter config {:?} differs from the running one {:?}", loaded.config(), self.adapter.config()),
            ));
        }
        let tensors = loaded.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        assign_by_name(&self.adapter.vars(), tensors, dir)
    }
}

/// The engine's tape: gradients come out in `LoraAdapter::vars()` order, which is `trainable()`.
struct EngineBackward(Tape);

impl Backward for EngineBackward {
    fn backward(self: Box<Self>, dlogprobs: &Tensor) -> Result<Vec<Option<Tensor>>, TrainError> {
        Ok(self.0.backward(dlogprobs)?.into_tensors().into_iter().map(Some).collect())
    }
}
