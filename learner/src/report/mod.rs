//! Run outputs: the `metrics.jsonl` records, the TensorBoard curves, the end-of-run summary
//! table, plots, and the cross-run Table 1 report.

pub mod board;
pub mod metrics;
pub mod plot;
pub mod table;
pub mod table1;
pub mod tensorboard;

use std::path::{Path, PathBuf};

pub use board::{RunBoard, TENSORBOARD_DIR};
pub use metrics::{
    EpochRecord, EvalRecord, MetricsError, MetricsWriter, PhaseRecord, Record, RunMetrics, RunRecord,
    StepRecord, METRICS_FILE,
};
pub use plot::{plot_runs, Chart, PlotError};
pub use table::summary_table;
pub use table1::{render_table1, Table1Options};
pub use tensorboard::TensorboardError;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// What a finished run leaves behind besides its checkpoints.
#[derive(Debug, Clone)]
pub struct RunOutputs {
    /// The summary table, ready to print.
    pub summary: String,
    /// Plot files written under `<run_dir>/plots`.
    pub plots: Vec<PathBuf>,
    /// Tolerated problems in `metrics.jsonl` (a torn last line).
    pub warnings: Vec<String>,
}

/// End of a run: reads `<run_dir>/metrics.jsonl`, draws `<run_dir>/plots/*.{png,svg}` and returns
/// the summary table for the caller to print.
pub fn finish_run(run_dir: &Path) -> Result<RunOutputs, ReportError> {
    let run = RunMetrics::load(run_dir)?;
    let plots = plot_runs(std::slice::from_ref(&run), &run_dir.join("plots"))?;
    Ok(RunOutputs { summary: summary_table(&run), plots, warnings: run.warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_run_writes_plots_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::open(dir.path()).unwrap();
        w.write(&Record::Run(RunRecord { name: "demo".into(), schedule: "asrl".into(), ..Default::default() }))
            .unwrap();
        for epoch in 1..=3 {
            w.write(&Record::Epoch(EpochRecord {
                epoch,
                train_size: Some(60 + epoch),
                phases: "sft+grpo".into(),
                val_loss_after_sft: Some(2.0 / epoch as f64),
                val_loss_after_grpo: Some(1.9 / epoch as f64),
                reward_mean: Some(0.2 * epoch as f64),
                format_accuracy: Some(0.3 * epoch as f64),
                ..Default::default()
            }))
            .unwrap();
        }
        let out = finish_run(dir.path()).unwrap();
        assert_eq!(out.plots.len(), 6);
        assert!(out.plots.iter().all(|p| p.starts_with(dir.path().join("plots"))));
        assert!(out.summary.starts_with("demo ("));
        assert_eq!(out.summary.lines().count(), 2 + 3 + 1);
        let err = finish_run(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
