//! `trainer_state.json` and checkpoints: save, load, resume.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use asrl_common::fs::at;
use asrl_common::phase::Phase;
use asrl_common::rollout::AdapterVersion;

use super::{Accumulator, PhaseTotals, Trainer};
use crate::training::checkpoint;
use crate::training::policy::Policy;
use crate::training::TrainError;

const STATE_FILE: &str = "trainer_state.json";

/// Everything besides tensors that a resumed run needs (`trainer_state.json`).
///
/// Files written before the adapter-version numbering was unified also hold `adapter_version`
/// (then equal to `global_step`); it is ignored on load, the version being `global_step + 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub epoch: u64,
    pub phase: Phase,
    /// Optimiser steps attempted in the current phase (drives the LR schedule).
    pub phase_step: u64,
    pub phase_planned_steps: u64,
    /// Applied optimiser steps over the whole run.
    pub global_step: u64,
    pub rng_seed: [u8; 32],
    /// ChaCha word position (u128 as a decimal string: JSON numbers are f64).
    pub rng_word_pos: String,
    /// Opaque position of the caller's data iterator.
    pub dataset_position: serde_json::Value,
    pub consecutive_nonfinite: u64,
    pub total_nonfinite: u64,
    pub total_skipped_too_long: u64,
    pub total_stale_dropped: u64,
    /// Totals of the phase running when the checkpoint was written (absent in older files).
    #[serde(default)]
    pub phase_totals: PhaseSoFar,
}

impl TrainerState {
    pub(super) fn new(rng_seed: [u8; 32]) -> Self {
        Self {
            epoch: 0,
            phase: Phase::Sft,
            phase_step: 0,
            phase_planned_steps: 0,
            global_step: 0,
            rng_seed,
            rng_word_pos: "0".into(),
            dataset_position: serde_json::Value::Null,
            consecutive_nonfinite: 0,
            total_nonfinite: 0,
            total_skipped_too_long: 0,
            total_stale_dropped: 0,
            phase_totals: PhaseSoFar::default(),
        }
    }

    /// Every applied step publishes the next adapter version; workers tag their samples with it.
    pub fn adapter_version(&self) -> AdapterVersion {
        AdapterVersion::after_steps(self.global_step)
    }
}

impl<P: Policy> Trainer<P> {
    /// Writes `<checkpoint.dir>/step-<global_step>/` atomically: `adapter/` (policy format),
    /// `optimizer.safetensors`, `trainer_state.json` (with the running phase's totals) and the
    /// manifest. Only between optimiser steps. A checkpoint of the same step is replaced.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        if !self.accum.is_empty() {
            return Err(TrainError::PendingAccumulation(self.accum.micro_batches));
        }
        self.state.rng_word_pos = self.rng.get_word_pos().to_string();
        self.state.phase_totals = PhaseSoFar::of(&self.phase);
        let state_json = serde_json::to_vec_pretty(&self.state).map_err(TrainError::Encode)?;
        let cfg = &self.cfg.checkpoint;
        let (policy, optim) = (&self.policy, &self.optim);
        let dir = checkpoint::write_atomic(
            &cfg.dir,
            &checkpoint::checkpoint_name(self.state.global_step),
            cfg.keep_last,
            |tmp| {
                let adapter_dir = tmp.join("adapter");
                std::fs::create_dir_all(&adapter_dir).map_err(at(&adapter_dir))?;
                policy.save_adapter(&adapter_dir)?;
                optim.save(&tmp.join("optimizer.safetensors"))?;
                let p = tmp.join(STATE_FILE);
                Ok(std::fs::write(&p, &state_json).map_err(at(&p))?)
            },
        )?;
        tracing::info!(path = %dir.display(), step = self.state.global_step, "checkpoint written");
        Ok(dir)
    }

    /// Restores adapter, optimiser, RNG, counters and the running phase's totals from a
    /// checkpoint directory written by [`Trainer::save_checkpoint`]. The phase continues where it
    /// stopped. Does not check the manifest ([`Trainer::resume`] does).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<(), TrainError> {
        let state_path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&state_path).map_err(at(&state_path))?;
        let state: TrainerState =
            serde_json::from_slice(&bytes).map_err(|e| TrainError::checkpoint(&state_path, e.to_string()))?;
        let word_pos: u128 = state.rng_word_pos.parse().map_err(|e| {
            TrainError::checkpoint(&state_path, format!("rng_word_pos {:?}: {e}", state.rng_word_pos))
        })?;
        self.policy.load_adapter(&dir.join("adapter"))?;
        self.optim.load(&dir.join("optimizer.safetensors"))?;
        let mut rng = ChaCha8Rng::from_seed(state.rng_seed);
        rng.set_word_pos(word_pos);
        self.rng = rng;
        self.phase = state.phase_totals.restore(state.epoch);
        self.state = state;
        self.accum = Accumulator::default();
        Ok(())
    }

    /// Loads the newest readable checkpoint under the configured directory and returns its path;
    /// `None` when there is none. A checkpoint that fails its manifest or does not load is
    /// skipped with a warning for the one before it; once one loads, the skipped ones are set
    /// aside as `corrupt-step-…`. When every checkpoint fails, nothing is set aside and the error
    /// lists them all (the run must not silently start over).
    pub fn resume(&mut self) -> Result<Option<PathBuf>, TrainError> {
        let root = self.cfg.checkpoint.dir.clone();
        let mut candidates = checkpoint::list(&root)?;
        let mut failed: Vec<(PathBuf, TrainError)> = Vec::new();
        while let Some(dir) = candidates.pop() {
            let checked = checkpoint::manifest::verify(&dir);
            match checked.and_then(|sealed| self.load_checkpoint(&dir).map(|()| sealed)) {
                Ok(sealed) => {
                    if !sealed {
                        tracing::warn!(path = %dir.display(), "checkpoint has no manifest (written by an older version): loaded unchecked");
                    }
                    for (bad, _) in &failed {
                        let aside = checkpoint::set_aside(bad)?;
                        tracing::warn!("{} set aside as {}", bad.display(), aside.display());
                    }
                    tracing::info!(path = %dir.display(), step = self.state.global_step, "resumed");
                    return Ok(Some(dir));
                }
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "checkpoint unreadable: falling back to the previous one");
                    failed.push((dir, e));
                }
            }
        }
        if failed.is_empty() {
            return Ok(None);
        }
        let why: Vec<String> = failed.iter().map(|(_, e)| e.to_string()).collect();
        Err(TrainError::checkpoint(
            root,
            format!("no checkpoint is readable ({}); move them away or start over with --fresh", why.join("; ")),
        ))
    }

    /// Whether `checkpoint.every_steps` asks for a checkpoint now, the last one having been at
    /// global step `last`: a multiple of `every_steps` was passed since (a GRPO update of `mu`
    /// passes may step over one) and nothing is accumulated.
    pub fn checkpoint_due(&self, last: u64) -> bool {
        let every = self.cfg.checkpoint.every_steps;
        every > 0 && self.state.global_step / every > last / every && self.accum.is_empty()
    }
}

/// The running phase's totals (what its `phase` record sums), so a phase resumed from a
/// mid-phase checkpoint reports the whole phase, not only the part after the restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhaseSoFar {
    pub steps: u64,
    pub skipped_nonfinite: u64,
    pub tokens: u64,
    pub skipped_too_long: u64,
    pub stale_dropped: u64,
    pub completions: u64,
    pub loss_weighted: f64,
    pub reward_sum: f64,
    /// Wall-clock seconds the phase had run.
    pub seconds: f64,
}

impl PhaseSoFar {
    fn of(t: &PhaseTotals) -> Self {
        let m = &t.metrics;
        Self {
            steps: m.steps,
            skipped_nonfinite: m.skipped_nonfinite,
            tokens: m.tokens,
            skipped_too_long: m.skipped_too_long,
            stale_dropped: m.stale_dropped,
            completions: m.completions,
            loss_weighted: t.loss_weighted,
            reward_sum: t.reward_sum,
            seconds: t.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
        }
    }

    fn restore(&self, epoch: u64) -> PhaseTotals {
        let mut t = PhaseTotals::starting(epoch);
        let m = &mut t.metrics;
        m.steps = self.steps;
        m.skipped_nonfinite = self.skipped_nonfinite;
        m.tokens = self.tokens;
        m.skipped_too_long = self.skipped_too_long;
        m.stale_dropped = self.stale_dropped;
        m.completions = self.completions;
        t.loss_weighted = self.loss_weighted;
        t.reward_sum = self.reward_sum;
        let ran = Duration::try_from_secs_f64(self.seconds).unwrap_or_default();
        t.started = Some(Instant::now().checked_sub(ran).unwrap_or_else(Instant::now));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_from_before_the_version_unification_still_loads() {
        let mut old = serde_json::to_value(TrainerState::new([3; 32])).unwrap();
        old["global_step"] = 7.into();
        old["adapter_version"] = 7.into();
        let state: TrainerState = serde_json::from_value(old).unwrap();
        assert_eq!(state.adapter_version(), AdapterVersion::new(8), "initial adapter + 7 applied steps");
        let written = serde_json::to_value(&state).unwrap();
        assert!(written.get("adapter_version").is_none(), "derived, not stored");
    }
}
