use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[run]`: where a run writes its outputs and how it is seeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Output directory: `metrics.jsonl`, checkpoints, plots, the resolved config.
    pub dir: PathBuf,
    /// Seed of every RNG the run owns (adapter init, data order, question sampling).
    pub seed: u64,
    /// Label used in plot legends and report tables; empty = the run directory's name.
    pub name: String,
    /// Write TensorBoard scalar event files to `<dir>/tensorboard/` as the run goes.
    pub tensorboard: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("runs/asrl"), seed: 42, name: String::new(), tensorboard: true }
    }
}
