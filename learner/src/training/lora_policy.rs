//! The real policy: a frozen base [`Model`] plus the trainable [`LoraAdapter`].

use std::path::Path;

use candle_core::{Device, Tensor, Var};

use asrl_common::model::{LoraAdapter, Model};

use super::policy::{assign_by_name, Policy};
use super::TrainError;

pub struct LoraPolicy {
    model: Model,
    adapter: LoraAdapter,
    /// Written into `adapter_config.json` as `base_model_name_or_path`.
    base_name: String,
}

impl LoraPolicy {
    /// Puts the adapter in training mode (LoRA dropout active when configured).
    pub fn new(model: Model, mut adapter: LoraAdapter, base_name: impl Into<String>) -> Self {
        adapter.set_training(true);
        Self { model, adapter, base_name: base_name.into() }
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
