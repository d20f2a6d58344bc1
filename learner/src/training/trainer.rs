//! The learner's training state machine: one adapter, its optimiser, the LR schedule, counters,
//! metrics and checkpoints. The epoch loop feeds it SFT micro-batches and GRPO groups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use asrl_common::config::TrainConfig;

use super::advantage::compute_advantages;
use super::checkpoint;
use super::losses::{grpo_loss, sft_loss, token_logprobs, AggregationTotals, GrpoBatch, GrpoLossParams, GrpoTokenStats};
use super::metrics::{GrpoStepMetrics, MetricsSink, PhaseMetrics, SftStepMetrics};
use super::optim::{clip_grad_norm, AdamW, AdamWParams};
use super::policy::Policy;
use super::schedule::{LrSchedule, Phase};
use super::TrainError;

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
}

/// One sampled completion of a GRPO group, as reported by a rollout worker.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCompletion {
    pub tokens: Vec<u32>,
    /// log π_behaviour(token) at the sampling temperature, one per token.
    pub behaviour_logprobs: Vec<f32>,
    /// Version of the adapter the worker sampled with.
    pub adapter_version: u64,
    /// Total reward (what advantages are computed from).
    pub reward: f64,
    /// Named components of `reward`, reported as metrics only.
    pub reward_components: BTreeMap<String, f64>,
    /// Stopped at max_new_tokens instead of eos.
    pub truncated: bool,
}

/// All completions sampled for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub prompt: Vec<u32>,
    pub completions: Vec<GroupCompletion>,
}

/// Everything besides tensors that a resumed run needs (`trainer_state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub epoch: u64,
    pub phase: Phase,
    /// Optimiser steps attempted in the current phase (drives the LR schedule).
    pub phase_step: u64,
    pub phase_planned_steps: u64,
    /// Applied optimiser steps over the whole run.
    pub global_step: u64,
    /// Bumped by every applied step; workers tag their samples with it.
    pub adapter_version: u64,
    pub rng_seed: [u8; 32],
    /// ChaCha word position (u128 as a decimal string: JSON numbers are f64).
    pub rng_word_pos: String,
    /// Opaque position of the caller's data iterator.
    pub dataset_position: serde_json::Value,
    pub consecutive_nonfinite: u64,
    pub total_nonfinite: u64,
    pub total_skipped_too_long: u64,
    pub total_stale_dropped: u64,
}

/// Gradients summed over micro-batches until the optimiser step.
#[derive(Default)]
struct Accumulator {
    grads: Vec<Option<Tensor>>,
    loss_sum: f64,
    tokens: usize,
    examples: usize,
    micro_batches: usize,
}

impl Accumulator {
    fn is_empty(&self) -> bool {
        self.micro_batches == 0
    }
}

#[derive(Default)]
struct PhaseTotals {
    metrics: PhaseMetrics,
    loss_weighted: f64,
    reward_sum: f64,
    started: Option<Instant>,
}

pub struct Trainer<P: Policy> {
    policy: P,
    cfg: TrainConfig,
    temperature: f64,
    max_new_tokens: usize,
    optim: AdamW,
    schedule: LrSchedule,
    state: TrainerState,
    rng: ChaCha8Rng,
    accum: Accumulator,
    phase: PhaseTotals,
    metrics: MetricsSink,
}

impl<P: Policy> Trainer<P> {
    /// `temperature` / `max_new_tokens`: the rollout sampling settings (GRPO log-probs are taken
    /// at that temperature; dr_grpo divides by max_new_tokens). `seed` seeds the trainer's RNG.
    pub fn new(
        policy: P,
        cfg: TrainConfig,
        temperature: f64,
        max_new_tokens: usize,
        seed: u64,
        metrics: MetricsSink,
    ) -> Result<Self, TrainError> {
        let o = &cfg.optimiser;
        let optim = AdamW::new(
            policy.trainable(),
            AdamWParams { beta1: o.beta1, beta2: o.beta2, eps: o.eps, weight_decay: o.weight_decay },
        )?;
        let schedule = LrSchedule { base_lr: o.lr, grpo_floor: o.grpo_lr_floor };
        let rng = ChaCha8Rng::seed_from_u64(seed);
        let state = TrainerState {
            epoch: 0,
            phase: Phase::Sft,
            phase_step: 0,
            phase_planned_steps: 0,
            global_step: 0,
            adapter_version: 0,
            rng_seed: rng.get_seed(),
            rng_word_pos: "0".into(),
            dataset_position: serde_json::Value::Null,
            consecutive_nonfinite: 0,
            total_nonfinite: 0,
            total_skipped_too_long: 0,
            total_stale_dropped: 0,
        };
        let temperature = if temperature > 0.0 { temperature } else { 1.0 };
        Ok(Self {
            policy,
            cfg,
            temperature,
            max_new_tokens,
            optim,
            schedule,
            state,
            rng,
            accum: Accumulator::default(),
            phase: PhaseTotals::default(),
            metrics,
        })
    }

    pub fn policy(&self) -> &P {
        &self.policy
    }
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    pub fn state(&self) -> &TrainerState {
        &self.state
    }
    pub fn adapter_version(&self) -> u64 {
        self.state.adapter_version
    }
    /// RNG for the caller's shuffling; its position is checkpointed.
    pub fn rng_mut(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
    pub fn set_dataset_position(&mut self, pos: serde_json::Value) {
        self.state.dataset_position = pos;
    }
    pub fn optimiser(&self) -> &AdamW {
        &self.optim
    }
    pub fn metrics_sink_mut(&mut self) -> &mut MetricsSink {
        &mut self.metrics
    }

    /// Starts a phase of `epoch`; the LR schedule restarts. `planned_steps`: optimiser steps the
    /// phase is expected to take (the GRPO decay horizon). Pending SFT gradients must be flushed.
    pub fn begin_phase(&mut self, epoch: u64, phase: Phase, planned_steps: u64) -> Result<(), TrainError> {
        if !self.accum.is_empty() {
            return Err(TrainError::PendingAccumulation(self.accum.micro_batches));
        }
        self.state.epoch = epoch;
        self.state.phase = phase;
        self.state.phase_step = 0;
        self.state.phase_planned_steps = planned_steps;
        self.phase = PhaseTotals {
            metrics: PhaseMetrics { epoch, ..Default::default() },
            started: Some(Instant::now()),
            ..Default::default()
        };
        Ok(())
    }

    /// Closes the phase (flushing a partial SFT accumulation) and emits its totals.
    pub fn end_phase(&mut self) -> Result<PhaseMetrics, TrainError> {
        if self.state.phase == Phase::Sft {
            self.sft_flush()?;
        }
        let mut m = self.phase.metrics.clone();
        m.loss_mean = if m.tokens > 0 { self.phase.loss_weighted / m.tokens as f64 } else { 0.0 };
        m.reward_mean = if m.completions > 0 { self.phase.reward_sum / m.completions as f64 } else { 0.0 };
        m.wall_seconds = self.phase.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        self.metrics.emit("phase", self.state.phase, &m)?;
        Ok(m)
    }

    fn lr(&self) -> f64 {
        self.schedule.lr(self.state.phase, self.state.phase_step, self.state.phase_planned_steps)
    }

    fn add_grads(&mut self, loss: &Tensor) -> Result<(), TrainError> {
        let store = loss.backward()?;
        let vars: Vec<_> = self.optim.vars().cloned().collect();
        if self.accum.grads.len() != vars.len() {
            self.accum.grads = vec![None; vars.len()];
        }
        for (slot, var) in self.accum.grads.iter_mut().zip(&vars) {
            if let Some(g) = store.get(var.as_tensor()) {
                let g = g.detach();
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// Records a non-finite step or micro-batch; errors once too many happen in a row.
    fn note_nonfinite(&mut self, what: &str) -> Result<(), TrainError> {
        self.state.consecutive_nonfinite += 1;
        self.state.total_nonfinite += 1;
        self.phase.metrics.skipped_nonfinite += 1;
        tracing::warn!(
            epoch = self.state.epoch,
            phase = self.state.phase.as_str(),
            consecutive = self.state.consecutive_nonfinite,
            "non-finite {what}: skipped"
        );
        let limit = self.cfg.optimiser.max_consecutive_nonfinite.max(1) as u64;
        if self.state.consecutive_nonfinite >= limit {
            return Err(TrainError::NonFiniteRun { count: self.state.consecutive_nonfinite });
        }
        Ok(())
    }

    /// Normalises the accumulated gradients by `divisor`, clips, and steps the optimiser unless
    /// anything is non-finite. Returns (pre-clip grad norm, lr, applied).
    fn apply_step(&mut self, divisor: f64) -> Result<(f64, f64, bool), TrainError> {
        let lr = self.lr();
        self.state.phase_step += 1;
        let vars: Vec<_> = self.optim.vars().cloned().collect();
        let mut grads = Vec::with_capacity(vars.len());
        for (i, var) in vars.iter().enumerate() {
            let g = match self.accum.grads.get_mut(i).and_then(Option::take) {
                Some(g) => (g / divisor.max(1e-30))?,
                // A parameter the loss did not reach (e.g. an empty batch) gets a zero gradient,
                // as in torch where its .grad stays zero-filled.
                None => var.as_tensor().zeros_like()?.to_dtype(DType::F32)?,
            };
            grads.push(g);
        }
        let norm = clip_grad_norm(&mut grads, self.cfg.optimiser.max_grad_norm)?;
        if !norm.is_finite() {
            self.note_nonfinite("gradient")?;
            return Ok((norm, lr, false));
        }
        self.optim.step(&grads, lr)?;
        self.state.consecutive_nonfinite = 0;
        self.state.global_step += 1;
        self.state.adapter_version += 1;
        self.phase.metrics.steps += 1;
        Ok((norm, lr, true))
    }

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
            // The first token is never a label (nothing predicts it); a lone token has no labels.
            if ex.tokens.len() >= 2 && ex.label_mask[1..].iter().any(|&m| m) {
                kept.push(ex);
            }
        }
        if kept.is_empty() {
            return Ok(None);
        }
        let (ids, mask) = right_padded(&kept, self.policy.device())?;
        let logits = self.policy.logits(&ids, true)?;
        let loss = sft_loss(&logits, &ids, &mask)?;
        let nll = f64::from(loss.nll_sum.to_scalar::<f32>()?);
        if !nll.is_finite() {
            // Dropped before backward: nothing reaches the accumulated gradients.
            self.note_nonfinite("SFT loss")?;
            return Ok(None);
        }
        self.add_grads(&loss.nll_sum)?;
        self.accum.loss_sum += nll;
        self.accum.tokens += loss.tokens;
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
            .filter(|e| e.tokens.len() <= max_len && e.tokens.len() == e.label_mask.len())
            .filter(|e| e.tokens.len() >= 2 && e.label_mask[1..].iter().any(|&m| m))
            .collect();
        let (mut nll, mut tokens) = (0f64, 0usize);
        for (bi, batch) in kept.chunks(micro_batch.max(1)).enumerate() {
            for ex in batch {
                check_token_ids(&ex.tokens, vocab, || format!("validation batch {bi}"))?;
            }
            let (ids, mask) = right_padded(batch, self.policy.device())?;
            let logits = self.policy.logits(&ids, true)?.detach();
            let loss = sft_loss(&logits, &ids, &mask)?;
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
        let (grad_norm, lr, applied) = self.apply_step(tokens as f64)?;
        self.accum = Accumulator::default();
        let loss = acc.loss_sum / tokens.max(1) as f64;
        if applied {
            self.phase.metrics.tokens += tokens as u64;
            self.phase.loss_weighted += acc.loss_sum;
        }
        let m = SftStepMetrics {
            epoch: self.state.epoch,
            step: self.state.phase_step,
            global_step: self.state.global_step,
            loss,
            tokens,
            examples: acc.examples,
            micro_batches: acc.micro_batches,
            grad_norm,
            lr,
            applied,
        };
        self.metrics.emit("sft_step", Phase::Sft, &m)?;
        Ok(m)
    }

    /// One GRPO update on `groups`: `mu` optimiser steps over the same experiences, each
    /// accumulated over micro-batches of completions with the step-wide loss normaliser.
    pub fn grpo_step(&mut self, groups: &[Group]) -> Result<Vec<GrpoStepMetrics>, TrainError> {
        let g = &self.cfg.grpo;
        let (eps, scaling, mu, micro) = (g.advantage_eps, g.advantage_scaling, g.mu.max(1), g.micro_batch_size.max(1));
        let params = GrpoLossParams {
            epsilon_low: g.epsilon_low,
            epsilon_high: g.epsilon_high,
            ratio_cap: (g.ratio_cap > 0.0).then_some(g.ratio_cap),
            beta: g.beta,
        };
        let (aggregation, max_staleness) = (g.loss_aggregation, g.max_staleness);

        let vocab = self.policy.vocab_size();
        for (gi, group) in groups.iter().enumerate() {
            if group.prompt.is_empty() {
                return Err(TrainError::Input(format!("group {gi}: empty prompt")));
            }
            check_token_ids(&group.prompt, vocab, || format!("group {gi} prompt"))?;
            for (ci, c) in group.completions.iter().enumerate() {
                check_token_ids(&c.tokens, vocab, || format!("group {gi} completion {ci}"))?;
                if c.tokens.len() != c.behaviour_logprobs.len() {
                    return Err(TrainError::Input(format!(
                        "group {gi} completion {ci}: {} tokens but {} behaviour log-probs",
                        c.tokens.len(),
                        c.behaviour_logprobs.len()
                    )));
                }
            }
        }
        let rewards: Vec<Vec<f64>> =
            groups.iter().map(|g| g.completions.iter().map(|c| c.reward).collect()).collect();
        let adv = compute_advantages(&rewards, scaling, eps);

        // Reward / length statistics over every completion received.
        let all: Vec<&GroupCompletion> = groups.iter().flat_map(|g| &g.completions).collect();
        let n_all = all.len().max(1) as f64;
        let reward_mean = all.iter().map(|c| c.reward).sum::<f64>() / n_all;
        let reward_std = (all.iter().map(|c| (c.reward - reward_mean).powi(2)).sum::<f64>() / n_all).sqrt();
        let mut reward_components: BTreeMap<String, f64> = BTreeMap::new();
        for c in &all {
            for (k, v) in &c.reward_components {
                *reward_components.entry(k.clone()).or_default() += v / n_all;
            }
        }
        let completion_len_mean = all.iter().map(|c| c.tokens.len() as f64).sum::<f64>() / n_all;
        let truncation_rate = all.iter().filter(|c| c.truncated).count() as f64 / n_all;

        // Off-policy guard: drop completions sampled by too old an adapter.
        let current = self.state.adapter_version;
        let mut kept: Vec<(&[u32], &GroupCompletion, f32)> = Vec::new();
        let mut stale = 0usize;
        for (gi, group) in groups.iter().enumerate() {
            for (ci, c) in group.completions.iter().enumerate() {
                if current.saturating_sub(c.adapter_version) > max_staleness {
                    stale += 1;
                } else {
                    kept.push((&group.prompt, c, adv.per_group[gi][ci] as f32));
                }
            }
        }
        self.state.total_stale_dropped += stale as u64;
        self.phase.metrics.stale_dropped += stale as u64;
        self.phase.metrics.completions += all.len() as u64;
        self.phase.reward_sum += all.iter().map(|c| c.reward).sum::<f64>();

        let totals = AggregationTotals {
            sequences: kept.len(),
            tokens: kept.iter().map(|(_, c, _)| c.tokens.len()).sum(),
            max_new_tokens: self.max_new_tokens,
        };
        // Sequences without tokens, or (with no KL term) with zero advantage, contribute exactly
        // zero loss and gradient: they count in the normaliser but skip the forward pass.
        let active: Vec<&(&[u32], &GroupCompletion, f32)> = kept
            .iter()
            .filter(|(_, c, a)| !c.tokens.is_empty() && (params.beta != 0.0 || *a != 0.0))
            .collect();

        let mut out = Vec::with_capacity(mu);
        for pass in 0..mu {
            let mut stats = GrpoTokenStats::default();
            let mut loss_total = 0.0f64;
            let mut finite = true;
            self.accum = Accumulator::default();
            for chunk in active.chunks(micro) {
                let (loss, s) = self.grpo_micro_batch(chunk, &params, aggregation, &totals)?;
                let l = f64::from(loss.to_scalar::<f32>()?);
                if !l.is_finite() {
                    finite = false;
                    break;
                }
                self.add_grads(&loss)?;
                self.accum.micro_batches += 1;
                loss_total += l;
                stats.add(&s);
            }
            let (grad_norm, lr, applied) = if active.is_empty() {
                // Nothing carries a learning signal: stepping would only replay Adam momentum.
                (0.0, self.lr(), false)
            } else if finite {
                // Chunk losses already carry the step-wide divisor.
                self.apply_step(1.0)?
            } else {
                self.accum = Accumulator::default();
                let lr = self.lr();
                self.state.phase_step += 1;
                self.note_nonfinite("GRPO loss")?;
                (f64::NAN, lr, false)
            };
            self.accum = Accumulator::default();
            if applied {
                self.phase.metrics.tokens += stats.tokens as u64;
                self.phase.loss_weighted += loss_total * stats.tokens;
            }
            let tok = stats.tokens.max(1.0);
            let m = GrpoStepMetrics {
                epoch: self.state.epoch,
                step: self.state.phase_step,
                global_step: self.state.global_step,
                pass,
                loss: if finite { loss_total } else { f64::NAN },
                tokens: stats.tokens as usize,
                grad_norm,
                lr,
                reward_mean,
                reward_std,
                reward_components: reward_components.clone(),
                groups: groups.len(),
                completions: all.len(),
                zero_std_group_fraction: adv.zero_std_groups as f64 / groups.len().max(1) as f64,
                clip_low_fraction: stats.clipped_low / tok,
                clip_high_fraction: stats.clipped_high / tok,
                ratio_capped_fraction: stats.ratio_capped / tok,
                behaviour_kl: stats.behaviour_kl / tok,
                ref_kl: stats.ref_kl / tok,
                completion_len_mean,
                truncation_rate,
                stale_dropped: stale,
                applied,
            };
            self.metrics.emit("grpo_step", Phase::Grpo, &m)?;
            out.push(m);
        }
        Ok(out)
    }

    /// Forward + loss for one micro-batch of completions. Sequences are `prompt ++ completion`,
    /// right-padded; the loss reads the positions that predict completion tokens.
    fn grpo_micro_batch(
        &self,
        chunk: &[&(&[u32], &GroupCompletion, f32)],
        params: &GrpoLossParams,
        aggregation: asrl_common::config::LossAggregation,
        totals: &AggregationTotals,
    ) -> Result<(Tensor, GrpoTokenStats), TrainError> {
        let seq = chunk.iter().map(|(p, c, _)| p.len() + c.tokens.len()).max().unwrap_or(0);
        let (b, t) = (chunk.len(), seq.saturating_sub(1));
        let mut ids = vec![0u32; b * seq];
        let mut mask = vec![0f32; b * t];
        let mut behaviour = vec![0f32; b * t];
        let mut advantages = Vec::with_capacity(b);
        for (row, (prompt, c, a)) in chunk.iter().enumerate() {
            let r = &mut ids[row * seq..(row + 1) * seq];
            r[..prompt.len()].copy_from_slice(prompt);
            r[prompt.len()..prompt.len() + c.tokens.len()].copy_from_slice(&c.tokens);
            // Logit position p - 1 + j predicts completion token j.
            let start = row * t + prompt.len() - 1;
            mask[start..start + c.tokens.len()].fill(1.0);
            behaviour[start..start + c.tokens.len()].copy_from_slice(&c.behaviour_logprobs);
            advantages.push(*a);
        }
        let dev = self.policy.device().clone();
        let ids = Tensor::from_vec(ids, (b, seq), &dev)?;
        let targets = ids.narrow(1, 1, t)?;
        let mask = Tensor::from_vec(mask, (b, t), &dev)?;
        let behaviour = Tensor::from_vec(behaviour, (b, t), &dev)?;
        let advantages = Tensor::from_vec(advantages, b, &dev)?;
        let logits = self.policy.logits(&ids, true)?.narrow(1, 0, t)?;
        let logprobs = token_logprobs(&logits, &targets, self.temperature)?;
        let reference = if params.beta != 0.0 {
            let ref_logits = self.policy.logits(&ids, false)?.detach().narrow(1, 0, t)?;
            Some(token_logprobs(&ref_logits, &targets, self.temperature)?.detach())
        } else {
            None
        };
        // Padding positions hold 0 behaviour log-probs; zero their current log-probs as well so
        // exp(·) there stays finite whatever the logits at padding are.
        let logprobs = (logprobs * &mask)?;
        let batch = GrpoBatch {
            logprobs: &logprobs,
            behaviour_logprobs: &behaviour,
            ref_logprobs: reference.as_ref(),
            advantages: &advantages,
            mask: &mask,
        };
        grpo_loss(&batch, params, aggregation, totals)
    }

    /// Writes `<checkpoint.dir>/step-<global_step>/` atomically: `adapter/` (policy format),
    /// `optimizer.safetensors`, `trainer_state.json`. Only between optimiser steps.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        if !self.accum.is_empty() {
            return Err(TrainError::PendingAccumulation(self.accum.micro_batches));
        }
        self.state.rng_word_pos = self.rng.get_word_pos().to_string();
        let state_json = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| TrainError::Checkpoint(format!("trainer state: {e}")))?;
        let cfg = &self.cfg.checkpoint;
        let policy = &self.policy;
        let optim = &self.optim;
        let dir = checkpoint::write_atomic(
            &cfg.dir,
            &checkpoint::checkpoint_name(self.state.global_step),
            cfg.keep_last,
            |tmp| {
                let adapter_dir = tmp.join("adapter");
                std::fs::create_dir_all(&adapter_dir)
                    .map_err(|e| TrainError::Io(format!("{}: {e}", adapter_dir.display())))?;
                policy.save_adapter(&adapter_dir)?;
                optim.save(&tmp.join("optimizer.safetensors"))?;
                let p = tmp.join("trainer_state.json");
                std::fs::write(&p, &state_json).map_err(|e| TrainError::Io(format!("{}: {e}", p.display())))
            },
        )?;
        tracing::info!(path = %dir.display(), step = self.state.global_step, "checkpoint written");
        Ok(dir)
    }

    /// Restores adapter, optimiser, RNG and counters from a checkpoint directory written by
    /// [`Trainer::save_checkpoint`]. The phase continues where it stopped.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<(), TrainError> {
        let state_path = dir.join("trainer_state.json");
        let bytes = std::fs::read(&state_path)
            .map_err(|e| TrainError::Io(format!("{}: {e}", state_path.display())))?;
        let state: TrainerState = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", state_path.display())))?;
        let word_pos: u128 = state.rng_word_pos.parse().map_err(|e| {
            TrainError::Checkpoint(format!("{}: rng_word_pos {:?}: {e}", state_path.display(), state.rng_word_pos))
        })?;
        self.policy.load_adapter(&dir.join("adapter"))?;
        self.optim.load(&dir.join("optimizer.safetensors"))?;
        let mut rng = ChaCha8Rng::from_seed(state.rng_seed);
        rng.set_word_pos(word_pos);
        self.rng = rng;
        self.phase = PhaseTotals {
            metrics: PhaseMetrics { epoch: state.epoch, ..Default::default() },
            started: Some(Instant::now()),
            ..Default::default()
        };
        self.state = state;
        self.accum = Accumulator::default();
        Ok(())
    }

    /// Loads the newest checkpoint under the configured directory; false when there is none.
    pub fn resume(&mut self) -> Result<bool, TrainError> {
        match checkpoint::latest(&self.cfg.checkpoint.dir)? {
            Some(dir) => {
                self.load_checkpoint(&dir)?;
                tracing::info!(path = %dir.display(), step = self.state.global_step, "resumed");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether the configured checkpoint cadence asks for one after the latest step.
    pub fn checkpoint_due(&self) -> bool {
        let every = self.cfg.checkpoint.every_steps;
        every > 0 && self.state.global_step > 0 && self.state.global_step % every == 0 && self.accum.is_empty()
    }
}

/// Token ids (batch, seq) u32 and label mask (batch, seq) f32 of `examples`, right-padded with id 0
/// and mask 0 to the longest one.
fn right_padded(examples: &[&SftExample], device: &candle_core::Device) -> Result<(Tensor, Tensor), TrainError> {
    let seq = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(examples.len() * seq);
    let mut mask = Vec::with_capacity(examples.len() * seq);
    for ex in examples {
        ids.extend_from_slice(&ex.tokens);
        ids.extend(std::iter::repeat_n(0u32, seq - ex.tokens.len()));
        mask.extend(ex.label_mask.iter().map(|&m| if m { 1f32 } else { 0f32 }));
        mask.extend(std::iter::repeat_n(0f32, seq - ex.tokens.len()));
    }
    Ok((
        Tensor::from_vec(ids, (examples.len(), seq), device)?,
        Tensor::from_vec(mask, (examples.len(), seq), device)?,
    ))
}

/// Rejects ids outside the vocabulary with the example that holds them.
fn check_token_ids(tokens: &[u32], vocab: usize, what: impl FnOnce() -> String) -> Result<(), TrainError> {
    match tokens.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
        Some((i, t)) => Err(TrainError::Input(format!("{}: token {i} is {t}, vocab size is {vocab}", what()))),
        None => Ok(()),
    }
}
