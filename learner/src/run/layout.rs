//! What a run directory holds, in one place.
//!
//! ```text
//! <run.dir>/
//!   config.toml          the resolved config the run started with
//!   metrics.jsonl        summary records (docs/metrics.md)
//!   trainer.jsonl        the trainer's per-step diagnostics
//!   checkpoints/         step-<N>/ (unless checkpoint.dir points elsewhere)
//!   best-adapter/        PEFT adapter of the best epoch so far
//!   final-adapter/       PEFT adapter at the end of the run
//!   plots/               drawn at the end of the run
//!   tensorboard/         scalar event files, written as the run goes (`run.tensorboard`)
//! ```

use std::path::{Path, PathBuf};

use asrl_common::fs::replace_dir;

use super::RunError;
use crate::report::{METRICS_FILE, TENSORBOARD_DIR};
use crate::training::{Policy, TrainError};

/// The best adapter so far (PEFT layout), inside the run directory.
pub const BEST_ADAPTER: &str = "best-adapter";
/// The adapter at the end of the run (PEFT layout).
pub const FINAL_ADAPTER: &str = "final-adapter";
/// The resolved config the run was started with.
pub const RESOLVED_CONFIG: &str = "config.toml";
/// Detailed per-step training diagnostics (clip fractions, KL, ...); `metrics.jsonl` holds the
/// run's summary records.
pub const TRAINER_LOG: &str = "trainer.jsonl";
/// Plots drawn at the end of a run.
pub const PLOTS: &str = "plots";

/// The paths of one run directory.
#[derive(Debug, Clone)]
pub struct RunLayout {
    dir: PathBuf,
}

impl RunLayout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join(METRICS_FILE)
    }
    pub fn trainer_log(&self) -> PathBuf {
        self.dir.join(TRAINER_LOG)
    }
    pub fn resolved_config(&self) -> PathBuf {
        self.dir.join(RESOLVED_CONFIG)
    }
    pub fn best_adapter(&self) -> PathBuf {
        self.dir.join(BEST_ADAPTER)
    }
    pub fn final_adapter(&self) -> PathBuf {
        self.dir.join(FINAL_ADAPTER)
    }
    pub fn plots(&self) -> PathBuf {
        self.dir.join(PLOTS)
    }
    pub fn tensorboard(&self) -> PathBuf {
        self.dir.join(TENSORBOARD_DIR)
    }

    /// Where an orphaned `metrics.jsonl` (a run that died before its first checkpoint) is moved.
    pub fn metrics_set_aside(&self, unix_secs: u64) -> PathBuf {
        self.dir.join(format!("metrics.{unix_secs}.jsonl"))
    }

    /// What a run writes here, for `train --fresh`: the directories (checkpoints, adapters,
    /// plots, TensorBoard events) and the files (metrics, trainer log). `checkpoints` is the
    /// resolved checkpoint dir.
    pub fn outputs(&self, checkpoints: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        (
            vec![checkpoints.to_path_buf(), self.best_adapter(), self.final_adapter(), self.plots(), self.tensorboard()],
            vec![self.metrics(), self.trainer_log()],
        )
    }
}

/// Writes the policy's adapter (PEFT layout) to `dir`, replacing it whole and atomically.
pub fn save_adapter(policy: &impl Policy, dir: &Path) -> Result<(), RunError> {
    replace_dir(dir, |tmp| policy.save_adapter(tmp)).map_err(|e: TrainError| e.into())
}
