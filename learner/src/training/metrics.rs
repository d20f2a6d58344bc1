//! The trainer's detailed per-step and per-phase records and [`TrainerLog`], which writes them to
//! `trainer.jsonl` (and `tracing`). The run's summary records are `metrics.jsonl`
//! (`crate::report::metrics`), written by the epoch loop from these.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use asrl_common::fs::at;
use asrl_common::phase::Phase;
use serde::Serialize;

use super::TrainError;

/// What every optimiser step reports, SFT or GRPO: flattened into its `trainer.jsonl` line, and
/// the source of its `metrics.jsonl` `step` record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepMetrics {
    pub epoch: u64,
    /// Optimiser steps taken in this phase, this one included.
    pub step: u64,
    /// Applied optimiser steps over the whole run, after this one.
    pub global_step: u64,
    /// SFT: mean cross-entropy over the step's response tokens. GRPO: the step's loss.
    pub loss: f64,
    /// Tokens that entered the loss.
    pub tokens: usize,
    /// Pre-clip global gradient norm.
    pub grad_norm: f64,
    pub lr: f64,
    /// False when the step was dropped for a non-finite loss or gradient (or, in GRPO, had no
    /// learning signal).
    pub applied: bool,
}

/// One SFT optimiser step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SftStepMetrics {
    #[serde(flatten)]
    pub core: StepMetrics,
    pub examples: usize,
    pub micro_batches: usize,
}

/// One GRPO optimiser step (one pass over the given groups).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GrpoStepMetrics {
    #[serde(flatten)]
    pub core: StepMetrics,
    /// Which of the `mu` passes over the same completions this was (0-based).
    pub pass: usize,
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Mean of every reward component over the step's completions, by name.
    pub reward_components: std::collections::BTreeMap<String, f64>,
    pub groups: usize,
    pub completions: usize,
    /// Fraction of groups whose rewards were all equal (no learning signal).
    pub zero_std_group_fraction: f64,
    /// Fraction of tokens clipped at 1 − ε_low with A < 0, and at 1 + ε_high with A > 0.
    pub clip_low_fraction: f64,
    pub clip_high_fraction: f64,
    /// Fraction of tokens whose ratio hit the truncated-IS cap.
    pub ratio_capped_fraction: f64,
    /// Mean k3 estimate of KL(behaviour ‖ current) per token.
    pub behaviour_kl: f64,
    /// Mean k3 KL to the reference model per token (0 when beta = 0).
    pub ref_kl: f64,
    pub completion_len_mean: f64,
    /// Fraction of completions that stopped at max_new_tokens rather than eos.
    pub truncation_rate: f64,
    /// Completions dropped as too stale / whose behaviour policy was too old.
    pub stale_dropped: usize,
}

/// Totals of one phase of one epoch.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PhaseMetrics {
    pub epoch: u64,
    pub steps: u64,
    pub skipped_nonfinite: u64,
    /// Token-weighted mean loss over applied steps.
    pub loss_mean: f64,
    pub tokens: u64,
    /// SFT examples skipped for exceeding max_seq_len.
    pub skipped_too_long: u64,
    /// GRPO completions dropped for staleness.
    pub stale_dropped: u64,
    /// GRPO: mean reward over all completions of the phase.
    pub reward_mean: f64,
    pub completions: u64,
    pub wall_seconds: f64,
}

/// `trainer.jsonl`: appends one JSON object per line; every line carries `kind`, `epoch`,
/// `phase`, `step` (the step within the phase).
pub struct TrainerLog {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl TrainerLog {
    /// Only `tracing` output.
    pub fn disabled() -> Self {
        Self { path: None, file: None }
    }

    pub fn to_file(path: &Path) -> Result<Self, TrainError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(at(parent))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(at(path))?;
        Ok(Self { path: Some(path.to_path_buf()), file: Some(file) })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes `{kind, phase, ...record}`; `record` must serialise to an object with `epoch`/`step`.
    pub fn emit<T: Serialize>(&mut self, kind: &str, phase: Phase, record: &T) -> Result<(), TrainError> {
        let mut value = serde_json::to_value(record).map_err(TrainError::Encode)?;
        let Some(obj) = value.as_object_mut() else {
            return Err(TrainError::Input(format!("a trainer.jsonl {kind} record must be a JSON object")));
        };
        obj.insert("kind".into(), kind.into());
        obj.insert("phase".into(), phase.as_str().into());
        // Non-finite floats serialise as null; keep the line valid JSON either way.
        let line = serde_json::to_string(&value).map_err(TrainError::Encode)?;
        tracing::info!(target: "asrl::metrics", "{line}");
        if let (Some(f), Some(path)) = (self.file.as_mut(), self.path.as_deref()) {
            writeln!(f, "{line}").and_then(|()| f.flush()).map_err(at(path))?;
        }
        Ok(())
    }
}
