//! The GRPO step: the stages of [`crate::training::grpo_stages`], then `mu` optimiser passes.

use candle_core::Tensor;

use asrl_common::config::LossAggregation;
use asrl_common::model::ScoringBatch;
use asrl_common::phase::Phase;
use asrl_common::rollout::RolloutGroup;

use super::{Accumulator, StepOutcome, Trainer};
use crate::training::grpo_stages::{
    check_groups, drop_stale, group_advantages, pack_micro_batch, with_signal, RolloutStats, Sample,
};
use crate::training::losses::{grpo_loss, AggregationTotals, GrpoBatch, GrpoLossParams, GrpoTokenStats};
use crate::training::metrics::GrpoStepMetrics;
use crate::training::policy::Policy;
use crate::training::TrainError;

/// What one pass over the step's samples produced.
struct PassResult {
    step: StepOutcome,
    /// `None` when a micro-batch loss was non-finite.
    loss: Option<f64>,
    stats: GrpoTokenStats,
}

impl<P: Policy> Trainer<P> {
    /// One GRPO update on `groups`: `mu` optimiser steps over the same completions, each
    /// accumulated over micro-batches with the step-wide loss normaliser. Completions sampled by
    /// an adapter too far behind the current one are dropped first.
    pub fn grpo_step(&mut self, groups: &[RolloutGroup]) -> Result<Vec<GrpoStepMetrics>, TrainError> {
        let g = &self.cfg.grpo;
        let (mu, micro) = (g.mu.max(1), g.micro_batch_size.max(1));
        let params = GrpoLossParams {
            epsilon_low: g.epsilon_low,
            epsilon_high: g.epsilon_high,
            ratio_cap: (g.ratio_cap > 0.0).then_some(g.ratio_cap),
            beta: g.beta,
        };
        let aggregation = g.loss_aggregation;

        check_groups(groups, self.policy.vocab_size())?;
        let adv = group_advantages(groups, g.advantage_scaling, g.advantage_eps);
        let rollouts = RolloutStats::of(groups);
        // The trainer's adapter is the latest published one: the loop publishes after every step.
        let (kept, stale) = drop_stale(groups, &adv, self.adapter_version(), g.max_staleness);
        self.state.total_stale_dropped += stale as u64;
        self.phase.metrics.stale_dropped += stale as u64;
        self.phase.metrics.completions += rollouts.completions as u64;
        self.phase.reward_sum += rollouts.reward_sum;

        let totals = AggregationTotals {
            sequences: kept.len(),
            tokens: kept.iter().map(|s| s.completion.tokens.len()).sum(),
            max_new_tokens: self.max_new_tokens,
        };
        let active = with_signal(&kept, params.beta);

        let mut out = Vec::with_capacity(mu);
        for pass in 0..mu {
            let r = self.grpo_pass(&active, micro, &params, aggregation, &totals)?;
            let tok = r.stats.tokens.max(1.0);
            let m = GrpoStepMetrics {
                core: r.step.metrics(self, r.loss.unwrap_or(f64::NAN), r.stats.tokens as usize),
                pass,
                reward_mean: rollouts.reward_mean,
                reward_std: rollouts.reward_std,
                reward_components: rollouts.reward_components.clone(),
                groups: groups.len(),
                completions: rollouts.completions,
                zero_std_group_fraction: adv.zero_std_groups as f64 / groups.len().max(1) as f64,
                clip_low_fraction: r.stats.clipped_low / tok,
                clip_high_fraction: r.stats.clipped_high / tok,
                ratio_capped_fraction: r.stats.ratio_capped / tok,
                behaviour_kl: r.stats.behaviour_kl / tok,
                ref_kl: r.stats.ref_kl / tok,
                completion_len_mean: rollouts.completion_len_mean,
                truncation_rate: rollouts.truncation_rate,
                stale_dropped: stale,
            };
            self.log.emit("grpo_step", Phase::Grpo, &m)?;
            out.push(m);
        }
        Ok(out)
    }

    /// One optimiser step over `active` in micro-batches; a non-finite micro-batch loss skips
    /// the step (counted towards the non-finite run limit).
    fn grpo_pass(
        &mut self,
        active: &[&Sample<'_>],
        micro: usize,
        params: &GrpoLossParams,
        aggregation: LossAggregation,
        totals: &AggregationTotals,
    ) -> Result<PassResult, TrainError> {
        let mut stats = GrpoTokenStats::default();
        let mut loss_total = 0.0f64;
        let mut finite = true;
        self.accum = Accumulator::default();
        for chunk in active.chunks(micro) {
            let Some((l, s)) = self.grpo_micro_batch(chunk, params, aggregation, totals)? else {
                finite = false;
                break;
            };
            self.accum.micro_batches += 1;
            loss_total += l;
            stats.add(&s);
        }
        let step = if active.is_empty() {
            // Nothing carries a learning signal: stepping would only replay Adam momentum.
            StepOutcome { grad_norm: 0.0, lr: self.lr(), applied: false }
        } else if finite {
            // Chunk losses already carry the step-wide divisor.
            self.apply_step(1.0)?
        } else {
            self.accum = Accumulator::default();
            let lr = self.lr();
            self.state.phase_step += 1;
            self.note_nonfinite("GRPO loss")?;
            StepOutcome { grad_norm: f64::NAN, lr, applied: false }
        };
        self.accum = Accumulator::default();
        if step.applied {
            self.phase.metrics.tokens += stats.tokens as u64;
            self.phase.loss_weighted += loss_total * stats.tokens;
        }
        Ok(PassResult { step, loss: finite.then_some(loss_total), stats })
    }

    /// Forward, loss and backward for one micro-batch of completions ([`pack_micro_batch`]
    /// layout); `None` when its loss is not finite (nothing was accumulated).
    fn grpo_micro_batch(
        &mut self,
        chunk: &[&Sample<'_>],
        params: &GrpoLossParams,
        aggregation: LossAggregation,
        totals: &AggregationTotals,
    ) -> Result<Option<(f64, GrpoTokenStats)>, TrainError> {
        let packed = pack_micro_batch(chunk);
        let (b, t) = (packed.rows, packed.seq.saturating_sub(1));
        let dev = self.policy.device().clone();
        let rows: Vec<(&[u32], &[u32])> = chunk.iter().map(|s| (s.prompt, s.completion.tokens.as_slice())).collect();
        let batch = ScoringBatch::completions(&rows, &dev)?;
        let mask = Tensor::from_vec(packed.mask, (b, t), &dev)?;
        let behaviour = Tensor::from_vec(packed.behaviour, (b, t), &dev)?;
        let advantages = Tensor::from_vec(packed.advantages, b, &dev)?;
        let reference = if params.beta != 0.0 {
            Some(self.policy.score(&batch, self.temperature, false)?.narrow(1, 0, t)?)
        } else {
            None
        };
        self.backprop_logprobs(&batch, self.temperature, |lp| {
            // Unscored positions hold 0 (as do the behaviour log-probs there), so exp(·) of
            // their ratio is finite.
            let logprobs = (lp.narrow(1, 0, t)? * &mask)?;
            let batch = GrpoBatch {
                logprobs: &logprobs,
                behaviour_logprobs: &behaviour,
                ref_logprobs: reference.as_ref(),
                advantages: &advantages,
                mask: &mask,
            };
            grpo_loss(&batch, params, aggregation, totals)
        })
    }
}
