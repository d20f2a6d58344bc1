//! `metrics.jsonl`: the records a run appends (schema in docs/metrics.md), a writer that survives
//! a torn last line, and a reader that tolerates unknown keys and kinds.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use asrl_common::phase::Phase;

use crate::schedule::History;

/// File name of the metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a metrics record: {source}")]
    BadLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode metrics record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// First line of a run: what produced it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Label for legends and tables (`run.name`); empty = the run directory's name.
    #[serde(default)]
    pub name: String,
    /// Schedule kind (`asrl`, `sft`, ...).
    #[serde(default)]
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Base model path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub epoch: usize,
    pub phase: Phase,
    /// Global optimiser step, counted over the whole run.
    pub step: u64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Global L2 norm of the LoRA gradients before clipping.
    #[serde(deserialize_with = "f64_or_nan")]
    pub grad_norm: f64,
    /// Tokens the loss was computed over.
    pub tokens: u64,
    /// GRPO: mean reward of the step's completions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_mean: Option<f64>,
    /// GRPO: mean k3 KL estimate to the base model (when beta > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// GRPO: share of tokens whose ratio was clipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_fraction: Option<f64>,
    /// Seconds since the run started.
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub elapsed_s: f64,
}

/// One finished phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub epoch: usize,
    pub phase: Phase,
    /// Optimiser steps the phase took.
    pub steps: u64,
    /// Mean training loss over the phase's steps.
    #[serde(default)]
    pub loss_mean: Option<f64>,
    /// Validation loss right after the phase.
    #[serde(default)]
    pub val_loss: Option<f64>,
    /// SFT: the share of a training pass that was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sft_fraction: Option<f64>,
    /// GRPO: questions sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questions: Option<usize>,
    /// GRPO: completions dropped for being too stale or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Wall-clock seconds of the phase.
    #[serde(default)]
    pub duration_s: Option<f64>,
}

/// One finished epoch: the row of the summary table and, as the run's [`History`], the input of
/// schedules and early stopping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Training examples in this epoch's dataset snapshot.
    #[serde(default)]
    pub train_size: Option<usize>,
    /// Training examples new since the previous snapshot (live data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_added: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_size: Option<usize>,
    /// Schedule kind of the run.
    #[serde(default)]
    pub schedule: String,
    /// Phases this epoch ran: `sft+grpo`, `sft`, `grpo`.
    #[serde(default)]
    pub phases: String,
    /// Mean SFT training loss of the epoch.
    #[serde(default)]
    pub sft_loss: Option<f64>,
    #[serde(default)]
    pub val_loss_after_sft: Option<f64>,
    #[serde(default)]
    pub val_loss_after_grpo: Option<f64>,
    /// Mean total reward on the validation split.
    #[serde(default)]
    pub reward_mean: Option<f64>,
    /// Share of validation completions in the required format, in [0, 1].
    #[serde(default)]
    pub format_accuracy: Option<f64>,
    /// Early stopping: consecutive epochs without improvement after this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_epochs: Option<usize>,
    /// Seconds since the run started, at the end of the epoch.
    #[serde(default)]
    pub elapsed_s: Option<f64>,
}

/// Validation accuracy on one example type (one prompt pattern) after an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub epoch: usize,
    /// The example type / pattern name.
    #[serde(rename = "type")]
    pub example_type: String,
    /// Validation examples of this type that were evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    pub format_accuracy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_mean: Option<f64>,
}

/// A line of `metrics.jsonl`, tagged by `kind`. Unknown kinds read as [`Record::Other`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Run(RunRecord),
    Step(StepRecord),
    Phase(PhaseRecord),
    Epoch(EpochRecord),
    Eval(EvalRecord),
    #[serde(other)]
    Other,
}

/// NaN is written as `null` by serde_json; read it back as NaN.
fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Appends records to `metrics.jsonl`, one flushed line each.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens (creating) `dir/metrics.jsonl` for appending. A torn last line left by a crash is cut
    /// off first, so the file stays one record per line.
    pub fn open(dir: &Path) -> Result<Self, MetricsError> {
        let path = dir.join(METRICS_FILE);
        let io = |source| MetricsError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(|source| MetricsError::Io { path: dir.to_path_buf(), source })?;
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io)?;
        let bytes = std::fs::read(&path).map_err(io)?;
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(Self { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, record: &Record) -> Result<(), MetricsError> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let io = |source| MetricsError::Io { path: self.path.clone(), source };
        self.file.write_all(&line).map_err(io)?;
        self.file.flush().map_err(io)
    }
}

/// Everything read back from one run directory.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    pub dir: PathBuf,
    /// Legend label: the run record's name, else the directory's name.
    pub name: String,
    pub run: Option<RunRecord>,
    pub steps: Vec<StepRecord>,
    pub phases: Vec<PhaseRecord>,
    /// One per epoch, sorted; a resumed run's later record for the same epoch wins.
    pub epochs: Vec<EpochRecord>,
    pub evals: Vec<EvalRecord>,
    /// Lines skipped on purpose (a torn last line), for the caller to print.
    pub warnings: Vec<String>,
}

impl RunMetrics {
    /// Reads `dir/metrics.jsonl` (or `dir` itself when it is a file).
    pub fn load(dir: &Path) -> Result<Self, MetricsError> {
        let (dir, path) = if dir.is_file() {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            (parent.to_path_buf(), dir.to_path_buf())
        } else {
            (dir.to_path_buf(), dir.join(METRICS_FILE))
        };
        let text = std::fs::read_to_string(&path).map_err(|source| MetricsError::Io { path: path.clone(), source })?;
        let mut out = Self::parse(&text, &path)?;
        out.name = match out.run.as_ref().map(|r| r.name.trim()).filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => dir_label(&dir),
        };
        out.dir = dir;
        Ok(out)
    }

    /// Parses the text of a metrics file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, MetricsError> {
        let mut out = Self::default();
        let mut epochs = BTreeMap::new();
        let lines: Vec<&str> = text.split('\n').collect();
        let torn_allowed = !text.ends_with('\n');
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let record: Record = match serde_json::from_str(line) {
                Ok(r) => r,
                Err(_) if torn_allowed && i + 1 == lines.len() => {
                    out.warnings.push(format!("{}:{}: skipped a torn last line", path.display(), i + 1));
                    continue;
                }
                Err(source) => return Err(MetricsError::BadLine { path: path.to_path_buf(), line: i + 1, source }),
            };
            match record {
                Record::Run(r) => out.run = Some(r),
                Record::Step(s) => out.steps.push(s),
                Record::Phase(p) => out.phases.push(p),
                Record::Epoch(e) => {
                    epochs.insert(e.epoch, e);
                }
                Record::Eval(e) => out.evals.push(e),
                Record::Other => {}
            }
        }
        out.epochs = epochs.into_values().collect();
        Ok(out)
    }

    /// The run's history as schedules and early stopping see it.
    pub fn history(&self) -> History {
        History { records: self.epochs.clone() }
    }
}

fn dir_label(dir: &Path) -> String {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_and_tolerates_unknown_keys_kinds_and_a_torn_tail() {
        let text = concat!(
            r#"{"kind":"run","name":"ASRL","schedule":"asrl","future_key":1}"#, "\n",
            r#"{"kind":"step","epoch":1,"phase":"sft","step":1,"loss":2.5,"lr":0.0001,"grad_norm":null,"tokens":100,"elapsed_s":1.0}"#, "\n",
            r#"{"kind":"phase","epoch":1,"phase":"sft","steps":4,"val_loss":2.0}"#, "\n",
            r#"{"kind":"heartbeat","t":3}"#, "\n",
            "\n",
            r#"{"kind":"epoch","epoch":1,"train_size":64,"val_loss_after_sft":2.0,"format_accuracy":0.1,"extra":"x"}"#, "\n",
            r#"{"kind":"eval","epoch":1,"type":"json","format_accuracy":0.5}"#, "\n",
            r#"{"kind":"epoch","epoch":1,"train_size":65,"val_loss_after_sft":1.9}"#, "\n",
            r#"{"kind":"epoch","epo"#,
        );
        let m = RunMetrics::parse(text, Path::new("run/metrics.jsonl")).unwrap();
        assert_eq!(m.run.as_ref().unwrap().name, "ASRL");
        assert_eq!(m.steps.len(), 1);
        assert!(m.steps[0].grad_norm.is_nan());
        assert_eq!(m.phases[0].val_loss, Some(2.0));
        assert_eq!(m.epochs.len(), 1);
        assert_eq!(m.epochs[0].train_size, Some(65), "the later record of an epoch wins");
        assert_eq!(m.evals[0].example_type, "json");
        assert_eq!(m.warnings.len(), 1);
        assert!(m.warnings[0].contains("run/metrics.jsonl:9"), "{:?}", m.warnings);
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_naming_file_and_line() {
        let text = "{\"kind\":\"run\"}\n{not json}\n{\"kind\":\"run\"}\n";
        let err = RunMetrics::parse(text, Path::new("r/metrics.jsonl")).unwrap_err().to_string();
        assert!(err.contains("r/metrics.jsonl:2"), "{err}");
        // A complete (newline-terminated) bad last line is corruption, not a torn write.
        let err = RunMetrics::parse("{\"kind\":\"epoch\"}\n", Path::new("m")).unwrap_err().to_string();
        assert!(err.contains("m:1") && err.contains("epoch"), "{err}");
    }

    #[test]
    fn writer_round_trips_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METRICS_FILE), "{\"kind\":\"run\",\"name\":\"a\"}\n{\"kind\":\"ep").unwrap();
        let mut w = MetricsWriter::open(dir.path()).unwrap();
        let epoch = EpochRecord {
            epoch: 1,
            train_size: Some(10),
            schedule: "asrl".into(),
            phases: "sft+grpo".into(),
            val_loss_after_sft: Some(1.5),
            val_loss_after_grpo: Some(f64::NAN),
            format_accuracy: Some(0.25),
            ..EpochRecord::default()
        };
        w.write(&Record::Epoch(epoch.clone())).unwrap();
        w.write(&Record::Step(StepRecord {
            epoch: 1,
            phase: Phase::Grpo,
            step: 7,
            loss: f64::NAN,
            lr: 1e-4,
            grad_norm: 0.5,
            tokens: 12,
            reward_mean: Some(0.3),
            kl: None,
            clip_fraction: None,
            elapsed_s: 2.0,
        }))
        .unwrap();
        drop(w);
        let m = RunMetrics::load(dir.path()).unwrap();
        assert!(m.warnings.is_empty());
        assert_eq!(m.name, "a");
        assert_eq!(m.epochs, vec![EpochRecord { val_loss_after_grpo: None, ..epoch }]);
        assert!(m.steps[0].loss.is_nan());
        assert_eq!(m.history().records[0].format_accuracy, Some(0.25));
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../docs/metrics.md");
        let block = doc.split("```json\n").nth(1).and_then(|b| b.split("```").next()).unwrap();
        let m = RunMetrics::parse(block, Path::new("docs/metrics.md")).unwrap();
        assert!(m.warnings.is_empty());
        assert_eq!((m.steps.len(), m.phases.len(), m.epochs.len(), m.evals.len()), (2, 2, 1, 1));
        assert_eq!(m.history().records[0].val_loss_after_grpo, Some(1.90));
    }

    #[test]
    fn name_falls_back_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("sft-only");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join(METRICS_FILE), "{\"kind\":\"epoch\",\"epoch\":1}\n").unwrap();
        assert_eq!(RunMetrics::load(&run).unwrap().name, "sft-only");
        assert_eq!(RunMetrics::load(&run.join(METRICS_FILE)).unwrap().name, "sft-only");
        let err = RunMetrics::load(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
