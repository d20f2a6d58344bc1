//! The run's TensorBoard curves: which scalars each training and epoch record becomes.
//!
//! Written to `<run.dir>/tensorboard/` (`run.tensorboard = false` turns it off), beside
//! `metrics.jsonl`, from the same records. Two step axes, told apart by the tag's prefix:
//!
//! - `sft/*`, `grpo/*`: one point per applied optimiser step, at the run's global step (the
//!   `step` of `metrics.jsonl`);
//! - `eval/*`, `data/*`, `epoch/*`: one point per epoch, at the epoch number.
//!
//! A resumed run appends a new event file to the same directory; TensorBoard shows the epoch cut
//! short by the restart twice, as `metrics.jsonl` does.

use std::path::Path;

use asrl_common::phase::Phase;

use super::tensorboard::{EventWriter, TensorboardError};
use super::{EpochRecord, EvalRecord, PhaseRecord};
use crate::training::{GrpoStepMetrics, SftStepMetrics, StepMetrics};

/// Directory of the event files inside a run directory.
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// Scalars of one run, appended to a fresh event file.
pub struct RunBoard {
    writer: EventWriter,
}

impl RunBoard {
    /// A new event file in `dir` (created if missing).
    pub fn create(dir: &Path) -> Result<Self, TensorboardError> {
        Ok(Self { writer: EventWriter::create(dir)? })
    }

    pub fn path(&self) -> &Path {
        self.writer.path()
    }

    /// An applied SFT step: `sft/{loss,lr,grad_norm,tokens}`.
    pub fn sft_step(&mut self, m: &SftStepMetrics) -> Result<(), TensorboardError> {
        let core = core_scalars("sft", &m.core);
        self.write(m.core.global_step, &core)
    }

    /// An applied GRPO pass: the core scalars plus the rollouts' rewards, clipping and KL;
    /// `grpo/reward/<component>` per reward component.
    pub fn grpo_step(&mut self, m: &GrpoStepMetrics) -> Result<(), TensorboardError> {
        let mut values = core_scalars("grpo", &m.core);
        values.extend([
            ("grpo/reward_mean".to_string(), m.reward_mean),
            ("grpo/reward_std".to_string(), m.reward_std),
            ("grpo/clip_low_fraction".to_string(), m.clip_low_fraction),
            ("grpo/clip_high_fraction".to_string(), m.clip_high_fraction),
            ("grpo/ratio_capped_fraction".to_string(), m.ratio_capped_fraction),
            ("grpo/kl_ref".to_string(), m.ref_kl),
            ("grpo/kl_behaviour".to_string(), m.behaviour_kl),
            ("grpo/zero_std_group_fraction".to_string(), m.zero_std_group_fraction),
            ("grpo/completion_len_mean".to_string(), m.completion_len_mean),
            ("grpo/truncation_rate".to_string(), m.truncation_rate),
        ]);
        values.extend(m.reward_components.iter().map(|(name, v)| (format!("grpo/reward/{name}"), *v)));
        self.write(m.core.global_step, &values)
    }

    /// A finished phase: `epoch/{sft,grpo}_{steps,loss_mean,seconds}`, `epoch/grpo_dropped`.
    pub fn phase(&mut self, r: &PhaseRecord) -> Result<(), TensorboardError> {
        let p = r.phase.as_str();
        let mut values = vec![(format!("epoch/{p}_steps"), r.steps as f64)];
        push_some(&mut values, format!("epoch/{p}_loss_mean"), r.loss_mean);
        push_some(&mut values, format!("epoch/{p}_seconds"), r.duration_s);
        if r.phase == Phase::Grpo {
            push_some(&mut values, "epoch/grpo_dropped".into(), r.dropped.map(|d| d as f64));
        }
        self.write(r.epoch as u64, &values)
    }

    /// Validation on one example type: `eval/<type>/{format_accuracy,reward_mean}`.
    pub fn eval(&mut self, r: &EvalRecord) -> Result<(), TensorboardError> {
        let mut values = vec![(format!("eval/{}/format_accuracy", r.example_type), r.format_accuracy)];
        push_some(&mut values, format!("eval/{}/reward_mean", r.example_type), r.reward_mean);
        self.write(r.epoch as u64, &values)
    }

    /// A finished epoch: validation losses, format accuracy and reward (`eval/*`) and the
    /// dataset's size (`data/*`); the phases' own scalars come from [`RunBoard::phase`].
    pub fn epoch(&mut self, r: &EpochRecord) -> Result<(), TensorboardError> {
        let mut values = Vec::new();
        let mut add = |tag: &str, v: Option<f64>| push_some(&mut values, tag.to_string(), v);
        add("eval/val_loss_after_sft", r.val_loss_after_sft);
        add("eval/val_loss_after_grpo", r.val_loss_after_grpo);
        add("eval/format_accuracy", r.format_accuracy);
        add("eval/reward_mean", r.reward_mean);
        add("data/train_size", r.train_size.map(|n| n as f64));
        add("data/train_added", r.train_added.map(|n| n as f64));
        add("data/val_size", r.val_size.map(|n| n as f64));
        self.write(r.epoch as u64, &values)
    }

    fn write(&mut self, step: u64, values: &[(String, f64)]) -> Result<(), TensorboardError> {
        let refs: Vec<(&str, f64)> = values.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        self.writer.scalars(step as i64, &refs)
    }
}

fn core_scalars(prefix: &str, s: &StepMetrics) -> Vec<(String, f64)> {
    vec![
        (format!("{prefix}/loss"), s.loss),
        (format!("{prefix}/lr"), s.lr),
        (format!("{prefix}/grad_norm"), s.grad_norm),
        (format!("{prefix}/tokens"), s.tokens as f64),
    ]
}

fn push_some(values: &mut Vec<(String, f64)>, tag: String, v: Option<f64>) {
    if let Some(v) = v {
        values.push((tag, v));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::tensorboard::{event_files, read_scalars};

    fn core(global_step: u64, loss: f64) -> StepMetrics {
        StepMetrics { epoch: 1, step: 1, global_step, loss, tokens: 40, grad_norm: 0.5, lr: 1e-4, applied: true }
    }

    #[test]
    fn records_become_tagged_scalars_on_their_axes() {
        let dir = tempfile::tempdir().unwrap();
        let mut board = RunBoard::create(&dir.path().join(TENSORBOARD_DIR)).unwrap();
        board.sft_step(&SftStepMetrics { core: core(1, 2.5), examples: 4, micro_batches: 2 }).unwrap();
        board
            .grpo_step(&GrpoStepMetrics {
                core: core(2, -0.1),
                pass: 0,
                reward_mean: 0.25,
                reward_std: 0.5,
                reward_components: BTreeMap::from([("format".to_string(), 0.75)]),
                groups: 2,
                completions: 6,
                zero_std_group_fraction: 0.5,
                clip_low_fraction: 0.125,
                clip_high_fraction: 0.0625,
                ratio_capped_fraction: 0.0,
                behaviour_kl: 0.01,
                ref_kl: 0.02,
                completion_len_mean: 12.0,
                truncation_rate: 0.5,
                stale_dropped: 0,
            })
            .unwrap();
        board
            .epoch(&EpochRecord {
                epoch: 1,
                train_size: Some(60),
                val_size: Some(7),
                val_loss_after_sft: Some(1.5),
                format_accuracy: Some(0.25),
                ..Default::default()
            })
            .unwrap();
        board
            .eval(&EvalRecord { epoch: 1, example_type: "arith".into(), n: Some(3), format_accuracy: 1.0, reward_mean: None })
            .unwrap();
        board
            .phase(&PhaseRecord {
                epoch: 1,
                phase: Phase::Grpo,
                steps: 1,
                loss_mean: None,
                val_loss: None,
                sft_fraction: None,
                questions: Some(2),
                dropped: Some(3),
                duration_s: Some(4.0),
            })
            .unwrap();
        let files = event_files(&dir.path().join(TENSORBOARD_DIR)).unwrap();
        assert_eq!(files, vec![board.path().to_path_buf()]);
        let points: BTreeMap<String, (i64, f32)> =
            read_scalars(&files[0]).unwrap().into_iter().map(|p| (p.tag, (p.step, p.value))).collect();
        let expect = [
            ("sft/loss", 1, 2.5),
            ("sft/tokens", 1, 40.0),
            ("grpo/loss", 2, -0.1),
            ("grpo/reward_mean", 2, 0.25),
            ("grpo/reward_std", 2, 0.5),
            ("grpo/clip_low_fraction", 2, 0.125),
            ("grpo/clip_high_fraction", 2, 0.0625),
            ("grpo/kl_ref", 2, 0.02),
            ("grpo/reward/format", 2, 0.75),
            ("eval/val_loss_after_sft", 1, 1.5),
            ("eval/format_accuracy", 1, 0.25),
            ("data/train_size", 1, 60.0),
            ("data/val_size", 1, 7.0),
            ("eval/arith/format_accuracy", 1, 1.0),
            ("epoch/grpo_steps", 1, 1.0),
            ("epoch/grpo_dropped", 1, 3.0),
            ("epoch/grpo_seconds", 1, 4.0),
        ];
        for (tag, step, value) in expect {
            assert_eq!(points.get(tag), Some(&(step, value as f32)), "{tag} in {points:?}");
        }
        // Absent values are not written as zeros.
        for absent in ["eval/val_loss_after_grpo", "eval/reward_mean", "eval/arith/reward_mean", "epoch/grpo_loss_mean"] {
            assert!(!points.contains_key(absent), "{absent} written");
        }
    }
}
