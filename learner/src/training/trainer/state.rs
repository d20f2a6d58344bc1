//! `trainer_state.json` and checkpoints: save, load, resume.

use std::path::{Path, PathBuf};

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
        }
    }

    /// Every applied step publishes the next adapter version; workers tag their samples with it.
    pub fn adapter_version(&self) -> AdapterVersion {
        AdapterVersion::after_steps(self.global_step)
    }
}

impl<P: Policy> Trainer<P> {
    /// Writes `<checkpoint.dir>/step-<global_step>/` atomically: `adapter/` (policy format),
    /// `optimizer.safetensors`, `trainer_state.json`. Only between optimiser steps.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        if !self.accum.is_empty() {
            return Err(TrainError::PendingAccumulation(self.accum.micro_batches));
        }
        self.state.rng_word_pos = self.rng.get_word_pos().to_string();
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

    /// Restores adapter, optimiser, RNG and counters from a checkpoint directory written by
    /// [`Trainer::save_checkpoint`]. The phase continues where it stopped.
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
        self.phase = PhaseTotals::starting(state.epoch);
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
        every > 0 && self.state.global_step > 0 && self.state.global_step.is_multiple_of(every) && self.accum.is_empty()
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
