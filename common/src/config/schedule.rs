use serde::{Deserialize, Serialize};

use crate::phase::Phase;

/// Which phases each epoch runs (see `asrl_learner::schedule` for the exact plans). Also the
/// value of `asrl-learner train --schedule` (with the `cli` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The paper: an SFT phase, then a GRPO phase, every epoch.
    Asrl,
    /// SFT phases only.
    Sft,
    /// GRPO phases only, starting from the base model.
    Grpo,
    /// `sequential_sft_epochs` SFT-only epochs, then GRPO-only epochs.
    Sequential,
    /// ARES-style whole stages: stay in one phase until its metric plateaus, then switch.
    Ares,
    /// Both phases every epoch, sized by the last format accuracy (more SFT until the format is learnt).
    Adaptive,
}

impl ScheduleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asrl => "asrl",
            Self::Sft => "sft",
            Self::Grpo => "grpo",
            Self::Sequential => "sequential",
            Self::Ares => "ares",
            Self::Adaptive => "adaptive",
        }
    }
}

/// The quantity early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Validation loss after either phase (lower is better): the paper's criterion.
    ValLoss,
    /// Format accuracy on the validation split (higher is better).
    FormatAccuracy,
}

/// `[schedule]`: phase schedule, epoch budget and early stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `asrl`, `sft`, `grpo`, `sequential`, `ares` or `adaptive`.
    pub kind: ScheduleKind,
    /// Maximum number of epochs; early stopping may end the run sooner.
    pub epochs: usize,
    /// Stop after this many consecutive epochs without improvement of `monitor`.
    pub patience: usize,
    /// An epoch improves only if it beats the best value so far by more than this.
    pub min_delta: f64,
    /// `val_loss` (paper: the best of the after-SFT and after-GRPO losses) or `format_accuracy`.
    pub monitor: Monitor,
    /// Training questions sampled per GRPO phase (each gets a group of `sampling.n` completions).
    pub questions_per_epoch: usize,
    /// Training examples a full SFT phase covers; 0 = one whole pass over the training split.
    pub sft_examples_per_epoch: usize,
    /// `sequential`: SFT-only epochs before switching to GRPO for good.
    pub sequential_sft_epochs: usize,
    /// `ares`: the phase the run's first stage trains.
    pub ares_first_stage: Phase,
    /// `ares`: switch stage after this many consecutive epochs without improvement of the stage's
    /// metric (SFT: validation loss after SFT; GRPO: validation mean reward).
    pub ares_plateau_epochs: usize,
    /// `adaptive`: format accuracy at which the format counts as learnt (GRPO gets its full share).
    pub adaptive_target_accuracy: f64,
    /// `adaptive`: neither phase shrinks below this fraction of its full size.
    pub adaptive_min_fraction: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Asrl,
            epochs: 20,
            patience: 3,
            min_delta: 0.0,
            monitor: Monitor::ValLoss,
            questions_per_epoch: 8,
            sft_examples_per_epoch: 0,
            sequential_sft_epochs: 3,
            ares_first_stage: Phase::Grpo,
            ares_plateau_epochs: 2,
            adaptive_target_accuracy: 0.9,
            adaptive_min_fraction: 0.1,
        }
    }
}
