//! The run's summary records (`metrics.jsonl`) and TensorBoard scalars, written from the
//! trainer's own records, and the progress `GetStatus` reports.

use std::collections::BTreeMap;

use asrl_common::phase::Phase;

use super::{EpochLoop, RunError};
use crate::report::{EpochRecord, EvalRecord, PhaseRecord, Record, RunBoard, StepRecord, TensorboardError};
use crate::service::{Activity, Progress};
use crate::training::{GrpoStepMetrics, PhaseMetrics, SftStepMetrics, StepMetrics};

impl EpochLoop {
    /// The `step` record of an applied SFT step.
    pub(super) fn write_sft_step(&mut self, m: &SftStepMetrics) -> Result<(), RunError> {
        let record = self.step_record(Phase::Sft, &m.core);
        self.metrics.write(&Record::Step(record))?;
        self.board(|b| b.sft_step(m))
    }

    /// The `step` record of an applied GRPO pass.
    pub(super) fn write_grpo_step(&mut self, m: &GrpoStepMetrics) -> Result<(), RunError> {
        let record = StepRecord {
            reward_mean: Some(m.reward_mean),
            kl: (m.ref_kl != 0.0).then_some(m.ref_kl),
            clip_fraction: Some(m.clip_low_fraction + m.clip_high_fraction),
            ..self.step_record(Phase::Grpo, &m.core)
        };
        self.metrics.write(&Record::Step(record))?;
        self.board(|b| b.grpo_step(m))
    }

    pub(super) fn write_eval(&mut self, record: EvalRecord) -> Result<(), RunError> {
        self.metrics.write(&Record::Eval(record.clone()))?;
        self.board(|b| b.eval(&record))
    }

    pub(super) fn write_epoch(&mut self, record: &EpochRecord) -> Result<(), RunError> {
        self.metrics.write(&Record::Epoch(record.clone()))?;
        self.board(|b| b.epoch(record))
    }

    /// Writes to the TensorBoard events when they are on.
    fn board(&mut self, write: impl FnOnce(&mut RunBoard) -> Result<(), TensorboardError>) -> Result<(), RunError> {
        match self.board.as_mut() {
            Some(board) => Ok(write(board)?),
            None => Ok(()),
        }
    }

    /// `step` counts optimiser steps over the whole run there (the trainer's `global_step`).
    fn step_record(&self, phase: Phase, s: &StepMetrics) -> StepRecord {
        StepRecord {
            epoch: s.epoch as usize,
            phase,
            step: s.global_step,
            loss: s.loss,
            lr: s.lr,
            grad_norm: s.grad_norm,
            tokens: s.tokens as u64,
            reward_mean: None,
            kl: None,
            clip_fraction: None,
            elapsed_s: self.elapsed(),
        }
    }

    pub(super) fn write_phase(
        &mut self,
        epoch: usize,
        phase: Phase,
        m: &PhaseMetrics,
        val_loss: Option<f64>,
        sft_fraction: Option<f64>,
        questions: Option<usize>,
    ) -> Result<(), RunError> {
        let record = PhaseRecord {
            epoch,
            phase,
            steps: m.steps,
            loss_mean: (m.steps > 0).then_some(m.loss_mean),
            val_loss,
            sft_fraction,
            questions,
            dropped: (phase == Phase::Grpo).then_some(m.stale_dropped),
            duration_s: Some(m.wall_seconds),
        };
        self.metrics.write(&Record::Phase(record.clone()))?;
        self.board(|b| b.phase(&record))
    }

    pub(super) fn set_progress(&self, epoch: usize, activity: Activity, metrics: BTreeMap<String, f64>) {
        self.rollouts.handle().set_progress(Progress {
            epoch: epoch as u64,
            activity,
            step: self.trainer.state().global_step,
            metrics,
        });
    }
}

/// A terminal progress bar over `len` tokens.
pub(super) fn progress_bar(len: u64, prefix: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} tokens  {per_sec}  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(prefix.to_string());
    bar
}
