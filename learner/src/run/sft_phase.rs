//! The SFT phase driver.

use std::collections::BTreeMap;
use std::time::Instant;

use asrl_common::data::Snapshot;
use asrl_common::phase::Phase;
use rand::seq::SliceRandom;

use super::data::sft_example;
use super::records::progress_bar;
use super::{EpochLoop, RunError};
use crate::service::Activity;
use crate::training::{PhaseMetrics, SftStepMetrics};

impl EpochLoop {
    /// SFT over `n` training examples in a fresh random order (the trainer's checkpointed RNG),
    /// publishing the adapter after every applied optimiser step.
    pub(super) fn sft_phase(&mut self, epoch: usize, snapshot: &Snapshot, n: usize) -> Result<PhaseMetrics, RunError> {
        let mut order: Vec<usize> = (0..snapshot.train.len()).collect();
        order.shuffle(self.trainer.rng_mut());
        order.truncate(n);
        let sft = &self.cfg.sft;
        let (micro, accum) = (sft.micro_batch_size.max(1), sft.grad_accum_steps.max(1));
        let planned = n.div_ceil(micro * accum) as u64;
        self.trainer.begin_phase(epoch as u64, Phase::Sft, planned)?;
        let examples: Vec<_> =
            order.iter().map(|&i| sft_example(&self.encoder, &snapshot.train[i])).collect::<Result<_, _>>()?;
        let total_tokens: usize = examples.iter().map(|e| e.tokens.len()).sum();
        let bar = progress_bar(total_tokens as u64, &format!("epoch {epoch} SFT"));
        let started = Instant::now();
        for batch in examples.chunks(micro) {
            self.check_stop()?;
            let step = self.trainer.sft_micro_step(batch)?;
            bar.inc(batch.iter().map(|e| e.tokens.len() as u64).sum());
            if let Some(m) = step {
                self.after_sft_step(epoch, &m, &bar)?;
            }
        }
        if let Some(m) = self.trainer.sft_flush()? {
            self.after_sft_step(epoch, &m, &bar)?;
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

    fn after_sft_step(&mut self, epoch: usize, m: &SftStepMetrics, bar: &indicatif::ProgressBar) -> Result<(), RunError> {
        let s = &m.core;
        if !s.applied {
            return Ok(());
        }
        bar.set_message(format!("loss {:.3}", s.loss));
        tracing::info!(epoch, step = s.global_step, loss = s.loss, lr = s.lr, grad_norm = s.grad_norm, "SFT step");
        self.write_sft_step(m)?;
        self.publish()?;
        self.set_progress(epoch, Activity::Training(Phase::Sft), BTreeMap::from([("sft_loss".into(), s.loss)]));
        Ok(())
    }
}
