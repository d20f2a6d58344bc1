//! SFT and GRPO losses on plain tensors, differentiable through candle's autograd.
//!
//! Only primitive ops with a backward pass are used (no fused softmax). Every loss is returned
//! as a *sum* plus the normaliser it should be divided by, so gradients of several micro-batches
//! can be accumulated and normalised once for the whole optimiser step.

use candle_core::{DType, Tensor};

use asrl_common::config::LossAggregation;
use asrl_common::model::token_logprobs;

use super::TrainError;

/// Summed SFT cross-entropy of one right-padded micro-batch.
pub struct SftLoss {
    /// Σ −log p over label tokens (scalar, differentiable).
    pub nll_sum: Tensor,
    /// Number of label tokens (the divisor for the mean).
    pub tokens: usize,
}

/// Cross-entropy on the tokens whose `label_mask` is 1, exactly like transformers with
/// `labels = -100` elsewhere: logits at position i predict token i + 1, so the first token is
/// never a label. logits (b, t, v), input_ids (b, t) u32, label_mask (b, t) f32 in {0, 1}.
pub fn sft_loss(logits: &Tensor, input_ids: &Tensor, label_mask: &Tensor) -> Result<SftLoss, TrainError> {
    let (_b, t, _v) = logits.dims3()?;
    if t < 2 {
        return Err(TrainError::Shape(format!("sft_loss: sequence length {t} < 2 has no labels")));
    }
    let lp = token_logprobs(&logits.narrow(1, 0, t - 1)?, &input_ids.narrow(1, 1, t - 1)?, 1.0)?;
    sft_nll(&lp, &label_mask.narrow(1, 1, t - 1)?)
}

/// The SFT loss on per-position log-probs: `mask` (same shape, f32 in {0, 1}) marks the scored
/// positions (the `ScoringBatch` layout: position p scores token p + 1).
pub fn sft_nll(logprobs: &Tensor, mask: &Tensor) -> Result<SftLoss, TrainError> {
    let mask = mask.to_dtype(DType::F32)?;
    let nll_sum = (logprobs * &mask)?.sum_all()?.neg()?;
    let tokens = mask.sum_all()?.to_scalar::<f32>()?.round() as usize;
    Ok(SftLoss { nll_sum, tokens })
}

/// PPO-clip hyper-parameters of the GRPO objective.
#[derive(Debug, Clone, Copy)]
pub struct GrpoLossParams {
    pub epsilon_low: f64,
    pub epsilon_high: f64,
    /// Cap of the unclipped importance ratio (TRL's `delta`); `None` disables it.
    pub ratio_cap: Option<f64>,
    /// Weight of the k3 KL to the reference policy.
    pub beta: f64,
}

/// Counts over the whole optimiser step that fix each aggregation's divisor, so micro-batch
/// losses add up to the loss of the full batch.
#[derive(Debug, Clone, Copy)]
pub struct AggregationTotals {
    pub sequences: usize,
    pub tokens: usize,
    pub max_new_tokens: usize,
}

/// Token statistics of a GRPO micro-batch (sums, so micro-batches add up).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpoTokenStats {
    pub tokens: f64,
    pub clipped_low: f64,
    pub clipped_high: f64,
    /// Σ k3 estimate of KL(behaviour ‖ current): (ρ − 1) − log ρ.
    pub behaviour_kl: f64,
    /// Σ k3 estimate of KL(current ‖ reference), when a reference was given.
    pub ref_kl: f64,
    pub ratio_capped: f64,
}

impl GrpoTokenStats {
    pub fn add(&mut self, o: &Self) {
        self.tokens += o.tokens;
        self.clipped_low += o.clipped_low;
        self.clipped_high += o.clipped_high;
        self.behaviour_kl += o.behaviour_kl;
        self.ref_kl += o.ref_kl;
        self.ratio_capped += o.ratio_capped;
    }
}

/// Inputs of the GRPO loss for one micro-batch; all (b, t) f32 except `advantages` (b,).
pub struct GrpoBatch<'a> {
    /// Current policy log-probs of the completion tokens (differentiable).
    pub logprobs: &'a Tensor,
    /// Log-probs the worker sampled them with.
    pub behaviour_logprobs: &'a Tensor,
    /// Reference (base model) log-probs, needed when beta != 0.
    pub ref_logprobs: Option<&'a Tensor>,
    pub advantages: &'a Tensor,
    /// 1 on completion tokens, 0 on padding.
    pub mask: &'a Tensor,
}

/// TRL `GRPOTrainer._compute_loss` (token-level importance sampling): per token
/// `−min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A) + β·k3`, aggregated with the step-wide divisor.
/// Returns this micro-batch's share of the step loss (scalar) and its token statistics.
pub fn grpo_loss(
    batch: &GrpoBatch,
    params: &GrpoLossParams,
    aggregation: LossAggregation,
    totals: &AggregationTotals,
) -> Result<(Tensor, GrpoTokenStats), TrainError> {
    let logp = batch.logprobs;
    let mask = batch.mask;
    let adv = batch.advantages.unsqueeze(1)?;
    let ratio = (logp - batch.behaviour_logprobs)?.exp()?;
    let clipped = ratio.clamp(1.0 - params.epsilon_low, 1.0 + params.epsilon_high)?;
    let unclipped = match params.ratio_cap {
        Some(cap) => ratio.minimum(cap)?,
        None => ratio.clone(),
    };
    let mut per_token = unclipped
        .broadcast_mul(&adv)?
        .minimum(&clipped.broadcast_mul(&adv)?)?
        .neg()?;
    let mut ref_kl_sum = 0.0;
    if params.beta != 0.0 {
        let reference = batch.ref_logprobs.ok_or_else(|| {
            TrainError::Shape("grpo_loss: beta != 0 needs reference log-probs".into())
        })?;
        let d = (reference - logp)?;
        let kl = ((d.exp()? - &d)? - 1.0)?;
        ref_kl_sum = f64::from((kl.detach() * mask)?.sum_all()?.to_scalar::<f32>()?);
        per_token = (per_token + (kl * params.beta)?)?;
    }
    let masked = (per_token * mask)?;
    let loss = match aggregation {
        LossAggregation::Grpo => {
            let per_seq = masked.sum(1)?;
            let len = mask.sum(1)?.clamp(1.0, f64::INFINITY)?;
            (per_seq / len)?.sum_all()? / totals.sequences.max(1) as f64
        }
        LossAggregation::Dapo => masked.sum_all()? / totals.tokens.max(1) as f64,
        LossAggregation::DrGrpo => {
            masked.sum_all()? / (totals.sequences.max(1) * totals.max_new_tokens.max(1)) as f64
        }
    }?;

    // Statistics on the host: detached values, masked.
    let r: Vec<Vec<f32>> = ratio.detach().to_vec2()?;
    let a: Vec<f32> = batch.advantages.to_vec1()?;
    let m: Vec<Vec<f32>> = mask.to_vec2()?;
    let mut stats = GrpoTokenStats { ref_kl: ref_kl_sum, ..Default::default() };
    for (i, row) in r.iter().enumerate() {
        for (j, &rho) in row.iter().enumerate() {
            if m[i][j] == 0.0 {
                continue;
            }
            let rho = f64::from(rho);
            stats.tokens += 1.0;
            if rho < 1.0 - params.epsilon_low && a[i] < 0.0 {
                stats.clipped_low += 1.0;
            }
            if rho > 1.0 + params.epsilon_high && a[i] > 0.0 {
                stats.clipped_high += 1.0;
            }
            if params.ratio_cap.is_some_and(|c| rho > c) {
                stats.ratio_capped += 1.0;
            }
            stats.behaviour_kl += (rho - 1.0) - rho.ln();
        }
    }
    Ok((loss, stats))
}
