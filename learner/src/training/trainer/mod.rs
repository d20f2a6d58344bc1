//! The learner's training state machine: one adapter, its optimiser, the LR schedule, counters,
//! metrics and checkpoints. The epoch loop feeds it SFT micro-batches and GRPO groups.
//!
//! - this module: the core (construction, phases, gradient accumulation, the optimiser step);
//! - [`sft`]: SFT micro-steps and the validation loss;
//! - [`grpo`]: the GRPO step, built from the stages in [`crate::training::grpo_stages`];
//! - [`state`]: `trainer_state.json` and checkpoint save / load / resume.

mod grpo;
mod sft;
mod state;

use std::time::Instant;

use candle_core::{DType, Tensor, Var};

use asrl_common::model::ScoringBatch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use asrl_common::config::TrainConfig;
use asrl_common::phase::Phase;
use asrl_common::rollout::AdapterVersion;

use super::lr::LrSchedule;
use super::metrics::{PhaseMetrics, StepMetrics, TrainerLog};
use super::optim::{clip_coefficient, grad_norm, AdamW, AdamWParams};
use super::policy::Policy;
use super::TrainError;

pub use sft::SftExample;
pub use state::{PhaseSoFar, TrainerState};

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

impl PhaseTotals {
    fn starting(epoch: u64) -> Self {
        Self { metrics: PhaseMetrics { epoch, ..Default::default() }, started: Some(Instant::now()), ..Default::default() }
    }
}

/// What one optimiser step did: the pre-clip gradient norm, the LR, and whether it was applied.
struct StepOutcome {
    grad_norm: f64,
    lr: f64,
    applied: bool,
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
    log: TrainerLog,
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
        log: TrainerLog,
    ) -> Result<Self, TrainError> {
        let o = &cfg.optimiser;
        let optim = AdamW::new(
            policy.trainable(),
            AdamWParams { beta1: o.beta1, beta2: o.beta2, eps: o.eps, weight_decay: o.weight_decay },
        )?;
        let schedule = LrSchedule { sft_lr: o.lr, grpo_lr: o.grpo_peak_lr(), grpo_floor: o.grpo_lr_floor };
        let rng = ChaCha8Rng::seed_from_u64(seed);
        let state = TrainerState::new(rng.get_seed());
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
            log,
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
    /// The adapter as it is now: [`AdapterVersion::INITIAL`] plus one per applied optimiser step.
    pub fn adapter_version(&self) -> AdapterVersion {
        self.state.adapter_version()
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
    pub fn log_mut(&mut self) -> &mut TrainerLog {
        &mut self.log
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
        self.phase = PhaseTotals::starting(epoch);
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
        self.log.emit("phase", self.state.phase, &m)?;
        Ok(m)
    }

    fn lr(&self) -> f64 {
        self.schedule.lr(self.state.phase, self.state.phase_step, self.state.phase_planned_steps)
    }

    /// Adds one micro-batch's gradients (one per optimiser var, in order) to the accumulator.
    fn add_grads(&mut self, grads: Vec<Option<Tensor>>) -> Result<(), TrainError> {
        let n = self.optim.vars().count();
        if grads.len() != n {
            return Err(TrainError::Shape(format!("the policy returned {} gradients for {n} parameters", grads.len())));
        }
        if self.accum.grads.len() != n {
            self.accum.grads = vec![None; n];
        }
        for (slot, g) in self.accum.grads.iter_mut().zip(grads) {
            if let Some(g) = g {
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// Runs `loss_of` on the micro-batch's log-probs (as a leaf of a small candle graph) and
    /// backpropagates its value through the policy into the accumulator. Returns the loss and
    /// what `loss_of` reported, or `None` (and no gradient) when the loss is not finite.
    fn backprop_logprobs<T>(
        &mut self,
        batch: &ScoringBatch,
        temperature: f64,
        loss_of: impl FnOnce(&Tensor) -> Result<(Tensor, T), TrainError>,
    ) -> Result<Option<(f64, T)>, TrainError> {
        self.policy.seed_dropout(self.dropout_seed());
        let (logprobs, back) = self.policy.score_for_training(batch, temperature)?;
        let leaf = Var::from_tensor(&logprobs)?;
        let (loss, extra) = loss_of(leaf.as_tensor())?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Ok(None);
        }
        let dlogprobs = match loss.backward()?.get(leaf.as_tensor()) {
            Some(g) => g.clone(),
            None => logprobs.zeros_like()?,
        };
        let grads = back.backward(&dlogprobs)?;
        self.add_grads(grads)?;
        Ok(Some((value, extra)))
    }

    /// A seed for this micro-batch's dropout masks from state a checkpoint restores exactly (the
    /// run seed, epoch, phase, step and micro-batch), so masks never depend on how a run was
    /// interrupted and the trainer's RNG stream is left alone.
    fn dropout_seed(&self) -> u64 {
        let s = &self.state;
        let base = u64::from_le_bytes(s.rng_seed[..8].try_into().expect("32-byte seed"));
        [s.epoch, s.phase as u64, s.phase_step, self.accum.micro_batches as u64]
            .iter()
            .fold(base, |h, &v| splitmix64(h ^ v))
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

    /// Steps the optimiser on the accumulated gradients divided by `divisor` and clipped, unless
    /// anything is non-finite. The divisor and the clip coefficient travel to the optimiser as
    /// one gradient scale, so the gradients are read once for the norm and once for the update.
    fn apply_step(&mut self, divisor: f64) -> Result<StepOutcome, TrainError> {
        let lr = self.lr();
        self.state.phase_step += 1;
        let divisor = divisor.max(1e-30);
        let vars: Vec<_> = self.optim.vars().cloned().collect();
        let mut grads = Vec::with_capacity(vars.len());
        for (i, var) in vars.iter().enumerate() {
            let g = match self.accum.grads.get_mut(i).and_then(Option::take) {
                Some(g) => g,
                // A parameter the loss did not reach (e.g. an empty batch) gets a zero gradient,
                // as in torch where its .grad stays zero-filled.
                None => var.as_tensor().zeros_like()?.to_dtype(DType::F32)?,
            };
            grads.push(g);
        }
        let grad_norm = grad_norm(&grads)? / divisor;
        if !grad_norm.is_finite() {
            self.note_nonfinite("gradient")?;
            return Ok(StepOutcome { grad_norm, lr, applied: false });
        }
        let scale = clip_coefficient(grad_norm, self.cfg.optimiser.max_grad_norm) / divisor;
        self.optim.step_scaled(&grads, lr, scale)?;
        self.state.consecutive_nonfinite = 0;
        self.state.global_step += 1;
        self.phase.metrics.steps += 1;
        Ok(StepOutcome { grad_norm, lr, applied: true })
    }
}

impl StepOutcome {
    /// The step's record, at the trainer's state right after it.
    fn metrics<P: Policy>(&self, trainer: &Trainer<P>, loss: f64, tokens: usize) -> StepMetrics {
        let s = &trainer.state;
        StepMetrics {
            epoch: s.epoch,
            step: s.phase_step,
            global_step: s.global_step,
            loss,
            tokens,
            grad_norm: self.grad_norm,
            lr: self.lr,
            applied: self.applied,
        }
    }
}

/// Rejects ids outside the vocabulary with the example that holds them.
pub(crate) fn check_token_ids(tokens: &[u32], vocab: usize, what: impl FnOnce() -> String) -> Result<(), TrainError> {
    match tokens.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
        Some((i, t)) => Err(TrainError::Input(format!("{}: token {i} is {t}, vocab size is {vocab}", what()))),
        None => Ok(()),
    }
}

/// SplitMix64's finaliser: a cheap, well-mixed hash step.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
