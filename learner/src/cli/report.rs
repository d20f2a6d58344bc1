//! `asrl-learner report RUN_DIR...`: Table 1 (format accuracy by epoch, epochs to 90%) and the
//! live-data metric over several runs, optionally with each run's summary table.

use std::path::PathBuf;

use anyhow::bail;

use super::plot::load_runs;
use crate::report::{render_table1, summary_table, Table1Options};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run directories (one per schedule), each with a metrics.jsonl.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Format accuracy the main table counts epochs to.
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
    /// Per-pattern accuracy the live-data metric counts epochs to.
    #[arg(long, default_value_t = 0.8)]
    pub live_threshold: f64,
    /// Injected pattern to report (repeatable). Default: every pattern that appeared mid-run.
    #[arg(long = "pattern", value_name = "TYPE")]
    pub patterns: Vec<String>,
    /// Also print each run's per-epoch summary table.
    #[arg(long)]
    pub summary: bool,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    for (name, v) in [("--threshold", args.threshold), ("--live-threshold", args.live_threshold)] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} {v} is not in [0, 1]");
        }
    }
    let runs = load_runs(&args.runs)?;
    if args.summary {
        for run in &runs {
            println!("{}", summary_table(run));
        }
    }
    let opts = Table1Options { threshold: args.threshold, live_threshold: args.live_threshold, injected: args.patterns };
    print!("{}", render_table1(&runs, &opts));
    Ok(())
}
