//! `asrl-learner plot RUN_DIR... [--out DIR]`: redraws the per-epoch plots of one or more runs.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::report::{plot_runs, RunMetrics};

#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Run directories (each with a metrics.jsonl) or metrics files; one line per run.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Output directory. Default: RUN_DIR/plots for one run, ./plots for several.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let runs = load_runs(&args.runs)?;
    let out = match (args.out, runs.as_slice()) {
        (Some(out), _) => out,
        (None, [one]) => one.dir.join("plots"),
        (None, _) => PathBuf::from("plots"),
    };
    let files = plot_runs(&runs, &out).with_context(|| format!("plotting into {}", out.display()))?;
    if files.is_empty() {
        bail!("no epoch records with format accuracy, reward or validation loss in {}", describe(&args.runs));
    }
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

/// Loads every run, printing tolerated problems (a torn last line) as warnings.
pub fn load_runs(paths: &[PathBuf]) -> anyhow::Result<Vec<RunMetrics>> {
    let mut runs = Vec::with_capacity(paths.len());
    for p in paths {
        let run = RunMetrics::load(p)?;
        for w in &run.warnings {
            eprintln!("warning: {w}");
        }
        runs.push(run);
    }
    Ok(runs)
}

fn describe(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
