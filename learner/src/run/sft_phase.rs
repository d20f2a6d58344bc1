//! The SFT phase driver.

use std::collections::BTreeMap;
use std::time::Instant;

use asrl_common::data::Snapshot;
use asrl_common::phase::Phase;
use rand::seq::SliceRandom;

use super::data::sft_example;
use super::position::{EpochCursor, SftCursor};
use super::records::progress_bar;
use super::{EpochLoop, RunError};
use crate::service::Activity;
use crate::training::{PhaseMetrics, SftStepMetrics};

impl EpochLoop {
    /// SFT over `n` training examples in a fresh random order (the trainer's checkpointed RNG),
    /// publishing the adapter after every applied optimiser step and checkpointing every
    /// `checkpoint.every_steps`. A cursor already in SFT (a resumed epoch) goes on from its
    /// position: the same order, the phase's LR schedule and totals from the checkpoint.
    pub(super) fn sft_phase(&mut self, snapshot: &Snapshot, cursor: &mut EpochCursor, n: usize) -> Result<PhaseMetrics, RunError> {
        let epoch = cursor.epoch;
        let sft = &self.cfg.sft;
        let (micro, accum) = (sft.micro_batch_size.max(1), sft.grad_accum_steps.max(1));
        if cursor.sft.is_none() {
            let mut order: Vec<usize> = (0..snapshot.train.len()).collect();
            order.shuffle(self.trainer.rng_mut());
            order.truncate(n);
            let planned = n.div_ceil(micro * accum) as u64;
            self.trainer.begin_phase(epoch as u64, Phase::Sft, planned)?;
            cursor.sft = Some(SftCursor { order: order.into_iter().map(|i| i as u32).collect(), done: 0 });
        } else {
            self.check_resumed_phase(epoch, Phase::Sft)?;
        }
        let (order, done) = cursor.sft.as_ref().map(|c| (c.order.clone(), c.done)).unwrap_or_default();
        let examples: Vec<_> = order[done.min(order.len())..]
            .iter()
            .map(|&i| sft_example(&self.encoder, &snapshot.train[i as usize]))
            .collect::<Result<_, _>>()?;
        let total_tokens: usize = examples.iter().map(|e| e.tokens.len()).sum();
        let bar = progress_bar(total_tokens as u64, &format!("epoch {epoch} SFT"));
        let started = Instant::now();
        let mut trained = done;
        for batch in examples.chunks(micro) {
            self.check_stop()?;
            let step = self.trainer.sft_micro_step(batch)?;
            trained += batch.len();
            bar.inc(batch.iter().map(|e| e.tokens.len() as u64).sum());
            if let Some(m) = step {
                self.after_sft_step(cursor, trained, &m, &bar)?;
            }
        }
        if let Some(m) = self.trainer.sft_flush()? {
            self.after_sft_step(cursor, trained, &m, &bar)?;
        }
        bar.finish_and_clear();
        let phase = self.trainer.end_phase()?;
        tracing::info!(
            epoch,
            steps = phase.steps,
            loss = phase.loss_mean,
            tokens_per_s = total_tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            skipped_too_long = phase.skipped_too_long,
            "SFT phase done"
        );
        Ok(phase)
    }

    /// After an optimiser step that consumed `order[..trained]` (nothing is left accumulated).
    fn after_sft_step(
        &mut self,
        cursor: &mut EpochCursor,
        trained: usize,
        m: &SftStepMetrics,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), RunError> {
        if let Some(c) = &mut cursor.sft {
            c.done = trained;
        }
        let s = &m.core;
        if !s.applied {
            return Ok(());
        }
        let epoch = cursor.epoch;
        bar.set_message(format!("loss {:.3}", s.loss));
        tracing::info!(epoch, step = s.global_step, loss = s.loss, lr = s.lr, grad_norm = s.grad_norm, "SFT step");
        self.write_sft_step(m)?;
        self.publish()?;
        self.checkpoint_if_due(cursor)?;
        self.set_progress(epoch, Activity::Training(Phase::Sft), BTreeMap::from([("sft_loss".into(), s.loss)]));
        Ok(())
    }

    /// A resumed phase must be the one the trainer's checkpoint was taken in.
    pub(super) fn check_resumed_phase(&self, epoch: usize, phase: Phase) -> Result<(), RunError> {
        let s = self.trainer.state();
        if s.epoch != epoch as u64 || s.phase != phase {
            return Err(RunError::Resume(format!(
                "the checkpoint's run position is in the {} phase of epoch {epoch}, its trainer state in the {} phase of epoch {}",
                phase.as_str(),
                s.phase.as_str(),
                s.epoch
            )));
        }
        Ok(())
    }
}
