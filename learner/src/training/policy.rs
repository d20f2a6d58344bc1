//! What the trainer needs from a model: per-token log-probs of scored positions (with and
//! without the adapter), a way back from their gradient to the trainable parameters, and the
//! adapter's `Var`s. Keeps the training math testable on tiny hand-made policies.
//!
//! A policy only has to produce logits: [`Policy::score`] and [`Policy::score_for_training`]
//! default to candle autograd over [`Policy::logits`] (the reference path). [`LoraPolicy`]
//! overrides both with the fused training engine (`asrl_common::model::train`).
//!
//! [`LoraPolicy`]: super::LoraPolicy

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use asrl_common::model::{token_logprobs, ScoringBatch};

use super::TrainError;

/// Turns d loss / d log-probs into one gradient per [`Policy::trainable`] entry (same order;
/// `None` for a parameter the loss did not reach).
pub trait Backward {
    fn backward(self: Box<Self>, dlogprobs: &Tensor) -> Result<Vec<Option<Tensor>>, TrainError>;
}

pub trait Policy {
    /// Logits (batch, seq, vocab) f32 for right-padded `input_ids` (batch, seq) u32, differentiable
    /// w.r.t. [`Policy::trainable`]. `adapter = false` is the frozen reference policy.
    fn logits(&self, input_ids: &Tensor, adapter: bool) -> Result<Tensor, TrainError>;
    fn device(&self) -> &Device;
    fn vocab_size(&self) -> usize;
    /// The trainable parameters, sorted by name (optimiser slots follow this order).
    fn trainable(&self) -> Vec<(String, Var)>;
    /// Writes the adapter to `dir` (PEFT layout for LoRA).
    fn save_adapter(&self, dir: &Path) -> Result<(), TrainError>;
    /// Overwrites the trainable `Var`s in place with an adapter written by `save_adapter`, so the
    /// optimiser's references stay valid.
    fn load_adapter(&self, dir: &Path) -> Result<(), TrainError>;

    /// Seeds the dropout masks of the next training forwards (no-op without dropout): the
    /// trainer derives the seed from its checkpointed state so a resumed run draws the same masks.
    fn seed_dropout(&self, _seed: u64) {}

    /// Log-probs (b, t) f32 of the batch's scored targets under softmax(logits / temperature),
    /// 0 elsewhere, without gradients. `adapter = false` is the reference policy (GRPO's KL).
    fn score(&self, batch: &ScoringBatch, temperature: f64, adapter: bool) -> Result<Tensor, TrainError> {
        let logits = self.logits(batch.ids(), adapter)?.detach();
        dense_logprobs(&logits, batch, temperature)
    }

    /// The adapter's log-probs as [`Policy::score`] gives them (no candle graph attached), and
    /// the way back to the trainable parameters.
    fn score_for_training(
        &self,
        batch: &ScoringBatch,
        temperature: f64,
    ) -> Result<(Tensor, Box<dyn Backward + '_>), TrainError> {
        let logprobs = dense_logprobs(&self.logits(batch.ids(), true)?, batch, temperature)?;
        Ok((logprobs.detach(), Box::new(AutogradBackward { logprobs, vars: self.trainable() })))
    }
}

/// (b, t) log-probs from (b, t, vocab) logits: position p scores `ids[p + 1]`; 0 at unscored
/// positions and in the last column (the [`ScoringBatch`] layout).
pub fn dense_logprobs(logits: &Tensor, batch: &ScoringBatch, temperature: f64) -> Result<Tensor, TrainError> {
    let (b, t) = batch.dims();
    if t < 2 {
        return Ok(Tensor::zeros((b, t), DType::F32, logits.device())?);
    }
    let lp = token_logprobs(&logits.narrow(1, 0, t - 1)?, &batch.ids().narrow(1, 1, t - 1)?, temperature)?;
    let lp = Tensor::cat(&[&lp, &Tensor::zeros((b, 1), DType::F32, logits.device())?], 1)?;
    Ok((lp * batch.mask())?)
}

/// The reference way back: candle autograd through the graph that produced the log-probs.
struct AutogradBackward {
    logprobs: Tensor,
    vars: Vec<(String, Var)>,
}

impl Backward for AutogradBackward {
    fn backward(self: Box<Self>, dlogprobs: &Tensor) -> Result<Vec<Option<Tensor>>, TrainError> {
        let store = (&self.logprobs * dlogprobs.detach())?.sum_all()?.backward()?;
        Ok(self.vars.iter().map(|(_, v)| store.get(v.as_tensor()).map(Tensor::detach)).collect())
    }
}

/// Copies `loaded` tensors into `vars` by name; every var must be present with its shape.
pub fn assign_by_name(
    vars: &[(String, Var)],
    mut loaded: std::collections::HashMap<String, Tensor>,
    source: &Path,
) -> Result<(), TrainError> {
    for (name, var) in vars {
        let t = loaded.remove(name).ok_or_else(|| TrainError::checkpoint(source, format!("missing tensor {name}")))?;
        if t.dims() != var.dims() {
            return Err(TrainError::checkpoint(
                source,
                format!("tensor {name} has shape {:?}, expected {:?}", t.dims(), var.dims()),
            ));
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
