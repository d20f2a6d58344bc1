//! The training engine: a hand-driven forward and backward over the fused ops of `asrl_ops`,
//! with activation checkpointing. [`Model::forward`] (candle autograd over primitive ops)
//! stays the reference implementation it is tested against.
//!
//! Why: candle's autograd keeps every intermediate of ~100 ops per layer alive until the graph
//! is dropped, forms gradients for frozen weights and projects every position onto the
//! vocabulary. Here each op saves only what its backward reads, gradients are formed for the
//! LoRA matrices only, and only scored positions reach the final norm and the vocabulary
//! projection (`linear_logprob`, which never holds full logits).
//!
//! The trainer's seam (losses stay in candle autograd on the small (b, t) log-prob tensor):
//!
//! ```no_run
//! # use asrl_common::model::{Model, LoraAdapter, ScoringBatch, TrainOptions};
//! # fn step(model: &Model, adapter: &LoraAdapter, batch: &ScoringBatch) -> Result<(), Box<dyn std::error::Error>> {
//! let (lp, tape) = model.train_forward(batch, adapter, &TrainOptions::default())?;
//! let lp_var = candle_core::Var::from_tensor(&lp)?;
//! // Any differentiable loss of the (b, t) log-probs, e.g. the SFT NLL over the batch's mask:
//! let loss = (lp_var.as_tensor() * batch.mask())?.sum_all()?.neg()?;
//! let dl = loss.backward()?.get(lp_var.as_tensor()).expect("the loss reads lp").clone();
//! let grads = tape.backward(&dl)?; // one gradient per adapter.vars() entry, same order
//! # Ok(()) }
//! ```
//!
//! Dropout: when the adapter is in training mode with `dropout > 0`, `train_forward` draws one
//! seed from the adapter's dropout stream ([`LoraAdapter::seed_dropout`]) and every projection
//! gets its own mask derived from it, exactly as [`Model::forward`] draws them; checkpointed
//! layers redraw the same masks in the backward. [`Model::score_logprobs`] never drops.

mod batch;
mod checkpoint;
mod layer;
mod packing;
mod plan;
mod tape;

use candle_core::Tensor;

pub use batch::ScoringBatch;
pub use checkpoint::{Checkpointing, LayerBytes};
pub(crate) use packing::PackedCache;
pub use packing::{packed_weight_bytes, WeightPacking};
pub use tape::{LoraGrads, Tape};

use super::{LoraAdapter, Model, ModelError};
use plan::Plan;
use tape::LayerTape;

/// Options of [`Model::train_forward`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Log-probs under softmax(logits / temperature); 0 means greedy and is scored at 1.
    pub temperature: f64,
    pub checkpointing: Checkpointing,
    /// Whether the frozen projections run from packed copies (CPU; see [`WeightPacking`]).
    pub weight_packing: WeightPacking,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions { temperature: 1.0, checkpointing: Checkpointing::Off, weight_packing: WeightPacking::Auto }
    }
}

impl Model {
    /// Log-probs of the batch's scored targets as a dense (b, t) f32 tensor (0 at unscored
    /// positions, see [`ScoringBatch`]), and the tape [`Tape::backward`] turns into LoRA
    /// gradients. The log-probs carry no candle graph: wrap them in a `Var` for the loss.
    pub fn train_forward(
        &self,
        batch: &ScoringBatch,
        adapter: &LoraAdapter,
        opts: &TrainOptions,
    ) -> Result<(Tensor, Tape), ModelError> {
        asrl_ops::on_pool(|| self.train_forward_here(batch, adapter, opts))
    }

    fn train_forward_here(
        &self,
        batch: &ScoringBatch,
        adapter: &LoraAdapter,
        opts: &TrainOptions,
    ) -> Result<(Tensor, Tape), ModelError> {
        let dropout = adapter.next_dropout();
        let mut plan = Plan::new(self, batch, Some(adapter), dropout, opts.temperature)?;
        let layers = self.cfg.num_hidden_layers;
        let (tokens, attention_slots) = plan.tokens();
        let lora = Some((adapter.config(), plan.dropout.is_some()));
        let bytes = LayerBytes::estimate_with_rows(&self.cfg, self.dtype, lora, tokens, attention_slots);
        let saved_layers = opts.checkpointing.saved_layers(layers, bytes);
        let keep_from = layers - saved_layers;
        plan.packed = self.packed_for_training(opts.weight_packing, opts.checkpointing, saved_layers, bytes.saved)?;
        let mut tape = Vec::with_capacity(layers);
        let mut head = None;
        let lp = if batch.num_scored() == 0 {
            Tensor::zeros(batch.num_scored(), candle_core::DType::F32, &self.device)?
        } else {
            let mut x = plan.embed()?;
            for i in 0..layers {
                if i >= keep_from {
                    let (y, saved) = layer::forward(&plan, i, &x, true)?;
                    tape.push(LayerTape::Saved(Box::new(saved.expect("saving forward returns saved"))));
                    x = y;
                } else {
                    let y = layer::forward(&plan, i, &x, false)?.0;
                    tape.push(LayerTape::Input(x));
                    x = y;
                }
            }
            let (lp, saved) = layer::head_forward(&plan, &x, true)?;
            head = saved;
            lp
        };
        let dense = batch.scatter(&lp)?;
        let tape = Tape { plan, layers: tape, head, dense_dims: batch.dims(), dense_index: batch.dense_index().clone() };
        Ok((dense, tape))
    }

    /// The same log-probs without saving anything (one layer's activations alive at a time)
    /// and without dropout: validation loss, and the GRPO reference with `adapter: None`.
    pub fn score_logprobs(
        &self,
        batch: &ScoringBatch,
        adapter: Option<&LoraAdapter>,
        temperature: f64,
    ) -> Result<Tensor, ModelError> {
        asrl_ops::on_pool(|| self.score_logprobs_here(batch, adapter, temperature))
    }

    fn score_logprobs_here(
        &self,
        batch: &ScoringBatch,
        adapter: Option<&LoraAdapter>,
        temperature: f64,
    ) -> Result<Tensor, ModelError> {
        let mut plan = Plan::new(self, batch, adapter, None, temperature)?;
        // Scoring keeps nothing: it uses the copies training made, and makes none.
        plan.packed = self.packed.get();
        if batch.num_scored() == 0 {
            return batch.scatter(&Tensor::zeros(0, candle_core::DType::F32, &self.device)?);
        }
        let mut x = plan.embed()?;
        for i in 0..self.cfg.num_hidden_layers {
            x = layer::forward(&plan, i, &x, false)?.0;
        }
        batch.scatter(&layer::head_forward(&plan, &x, false)?.0)
    }

    /// [`LayerBytes::estimate`] for this model, `batch` and `adapter` (dropout counted when the
    /// adapter is training with `dropout > 0`): what [`Checkpointing::Auto`] plans with.
    pub fn train_layer_bytes(&self, batch: &ScoringBatch, adapter: Option<&LoraAdapter>) -> LayerBytes {
        let dropout = adapter.is_some_and(|a| a.is_training() && a.config().dropout > 0.0);
        let (tokens, attention) = match batch.shared_layout(dropout) {
            Some(s) => (s.tokens(), s.rows.slots()),
            None => {
                let n = batch.dims().0 * batch.forward_t();
                (n, n)
            }
        };
        LayerBytes::estimate_with_rows(&self.cfg, self.dtype, adapter.map(|a| (a.config(), dropout)), tokens, attention)
    }
}

#[cfg(test)]
mod tests;
