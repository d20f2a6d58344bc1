use std::process::ExitCode;

use asrl_learner::cli;
use clap::{Parser, Subcommand};

/// The asrl learner: owns the LoRA adapter, runs SFT and GRPO updates, serves rollout workers.
#[derive(Parser)]
#[command(name = "asrl-learner", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a dataset or write demo data.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Redraw the per-epoch plots (format accuracy, reward, validation loss) of one or more runs.
    Plot(cli::plot::PlotArgs),
    /// Print Table 1 (format accuracy by epoch, epochs to 90%) and the live-data metric over runs.
    Report(cli::report::ReportArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Data(command) => cli::data::run(command),
        Command::Plot(args) => cli::plot::run(args).map(|()| ExitCode::SUCCESS),
        Command::Report(args) => cli::report::run(args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
