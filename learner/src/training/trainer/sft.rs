//! SFT: micro-steps with gradient accumulation, and the validation loss.

use candle_core::Device;

use asrl_common::model::ScoringBatch;
use asrl_common::phase::Phase;

use super::{check_token_ids, Accumulator, Trainer};
use crate::training::losses::sft_nll;
use crate::training::metrics::SftStepMetrics;
use crate::training::policy::Policy;
use crate::training::TrainError;

/// One SFT example: the full token sequence and which tokens are labels (the response).
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    pub tokens: Vec<u32>,
    /// `true` where the token is trained on (transformers: label != -100).
    pub label_mask: Vec<bool>,
}

impl SftExample {
    /// Prompt tokens are context only; response tokens are labels.
    pub fn from_prompt_response(prompt: &[u32], response: &[u32]) -> Self {
        let mut tokens = prompt.to_vec();
        tokens.extend_from_slice(response);
        let mut label_mask = vec![false; prompt.len()];
        label_mask.extend(std::iter::repeat_n(true, response.len()));
        Self { tokens, label_mask }
    }

    /// The first token is never a label (nothing predicts it); a lone token has no labels.
    fn has_labels(&self) -> bool {
        self.tokens.len() >= 2 && self.label_mask[1..].iter().any(|&m| m)
    }
}

impl<P: Policy> Trainer<P> {
    /// One SFT micro-batch (right-padded into one forward pass). Every `grad_accum_steps`
    /// micro-batches the optimiser steps and the step's metrics are returned.
    ///
    /// Normalisation (transformers ≥ 4.46 `num_items_in_batch`): the step's gradient is that of
    /// Σ NLL over all label tokens of the accumulated micro-batches / their total token count, i.e.
    /// the token-level mean over the whole accumulation window, not a mean of per-batch means.
    pub fn sft_micro_step(&mut self, examples: &[SftExample]) -> Result<Option<SftStepMetrics>, TrainError> {
        let max_len = self.cfg.sft.max_seq_len;
        let mut kept = Vec::with_capacity(examples.len());
        for (i, ex) in examples.iter().enumerate() {
            if ex.tokens.len() != ex.label_mask.len() {
                return Err(TrainError::Input(format!(
                    "SFT example {i}: {} tokens but {} label-mask entries",
                    ex.tokens.len(),
                    ex.label_mask.len()
                )));
            }
            check_token_ids(&ex.tokens, self.policy.vocab_size(), || format!("SFT example {i}"))?;
            if ex.tokens.len() > max_len {
                self.state.total_skipped_too_long += 1;
                self.phase.metrics.skipped_too_long += 1;
                tracing::debug!(len = ex.tokens.len(), max_len, "SFT example longer than max_seq_len: skipped");
                continue;
            }
            if ex.has_labels() {
                kept.push(ex);
            }
        }
        if kept.is_empty() {
            return Ok(None);
        }
        let batch = scoring_batch(&kept, self.policy.device())?;
        let scored = self.backprop_logprobs(&batch, 1.0, |lp| {
            let loss = sft_nll(lp, batch.mask())?;
            Ok((loss.nll_sum, loss.tokens))
        })?;
        let Some((nll, tokens)) = scored else {
            // Dropped before backward: nothing reaches the accumulated gradients.
            self.note_nonfinite("SFT loss")?;
            return Ok(None);
        };
        self.accum.loss_sum += nll;
        self.accum.tokens += tokens;
        self.accum.examples += kept.len();
        self.accum.micro_batches += 1;
        if self.accum.micro_batches >= self.cfg.sft.grad_accum_steps.max(1) {
            return self.sft_apply().map(Some);
        }
        Ok(None)
    }

    /// Validation loss: the token-weighted mean NLL of the labels of `examples` with the adapter,
    /// in micro-batches of `micro_batch` (no gradients kept, nothing changes). Examples longer
    /// than `sft.max_seq_len` or without labels are left out. Returns (loss, label tokens);
    /// NaN with 0 tokens when nothing was left.
    pub fn eval_loss(&self, examples: &[SftExample], micro_batch: usize) -> Result<(f64, usize), TrainError> {
        let max_len = self.cfg.sft.max_seq_len;
        let vocab = self.policy.vocab_size();
        let kept: Vec<&SftExample> = examples
            .iter()
            .filter(|e| e.tokens.len() <= max_len && e.tokens.len() == e.label_mask.len() && e.has_labels())
            .collect();
        let (mut nll, mut tokens) = (0f64, 0usize);
        for (bi, batch) in kept.chunks(micro_batch.max(1)).enumerate() {
            for ex in batch {
                check_token_ids(&ex.tokens, vocab, || format!("validation batch {bi}"))?;
            }
            let batch = scoring_batch(batch, self.policy.device())?;
            let loss = sft_nll(&self.policy.score(&batch, 1.0, true)?, batch.mask())?;
            nll += f64::from(loss.nll_sum.to_scalar::<f32>()?);
            tokens += loss.tokens;
        }
        Ok((if tokens > 0 { nll / tokens as f64 } else { f64::NAN }, tokens))
    }

    /// Steps on a partial accumulation (end of phase). None when nothing is pending.
    pub fn sft_flush(&mut self) -> Result<Option<SftStepMetrics>, TrainError> {
        if self.accum.is_empty() {
            return Ok(None);
        }
        self.sft_apply().map(Some)
    }

    fn sft_apply(&mut self) -> Result<SftStepMetrics, TrainError> {
        let acc = std::mem::take(&mut self.accum);
        self.accum.grads = acc.grads;
        let tokens = acc.tokens;
        let step = self.apply_step(tokens as f64)?;
        self.accum = Accumulator::default();
        let loss = acc.loss_sum / tokens.max(1) as f64;
        if step.applied {
            self.phase.metrics.tokens += tokens as u64;
            self.phase.loss_weighted += acc.loss_sum;
        }
        let m = SftStepMetrics {
            core: step.metrics(self, loss, tokens),
            examples: acc.examples,
            micro_batches: acc.micro_batches,
        };
        self.log.emit("sft_step", Phase::Sft, &m)?;
        Ok(m)
    }
}

/// The examples as one right-padded scoring batch: every label token after the first position
/// is scored (nothing predicts token 0, so its label is ignored, as transformers does).
fn scoring_batch(examples: &[&SftExample], device: &Device) -> Result<ScoringBatch, TrainError> {
    let labels: Vec<Vec<bool>> = examples
        .iter()
        .map(|e| e.label_mask.iter().enumerate().map(|(i, &m)| m && i > 0).collect())
        .collect();
    let rows: Vec<(&[u32], &[bool])> = examples.iter().zip(&labels).map(|(e, l)| (e.tokens.as_slice(), l.as_slice())).collect();
    Ok(ScoringBatch::new(&rows, device)?)
}
