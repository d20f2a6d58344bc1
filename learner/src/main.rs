//! `asrl-learner`: a thin dispatcher over the subcommands in `asrl_learner::cli`.

use std::process::ExitCode;

use asrl_learner::cli;
use clap::{Parser, Subcommand};

/// mimalloc, keeping freed pages: see `asrl_common::allocator`.
#[global_allocator]
static GLOBAL: asrl_common::allocator::MiMalloc = asrl_common::allocator::MiMalloc;

/// The asrl learner: owns the LoRA adapter, runs SFT and GRPO updates, serves rollout workers.
#[derive(Parser)]
#[command(name = "asrl-learner", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ASRL (or a baseline schedule) from a config: serve rollout workers, train, evaluate,
    /// checkpoint, plot. Resumes from the run directory's last checkpoint.
    Train(cli::train::TrainArgs),
    /// Print a config with every default filled in (or one field with --get).
    Config(cli::config::ConfigArgs),
    /// Per-token log-probabilities of a text under the model (and adapter).
    Score(cli::score::ScoreArgs),
    /// Merge an adapter into its base and write an HF model dir (+ GGUF) to serve elsewhere.
    Export(cli::export::ExportArgs),
    /// Inspect a dataset (demo data: `asrl-tools demo-data`).
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Redraw the per-epoch plots (format accuracy, reward, validation loss) of one or more runs.
    Plot(cli::plot::PlotArgs),
    /// Print Table 1 (format accuracy by epoch, epochs to 90%) and the live-data metric over runs.
    Report(cli::report::ReportArgs),
}

fn main() -> ExitCode {
    asrl_common::allocator::keep_freed_memory();
    let cli: Cli = asrl_common::cli::parse_or_exit();
    match cli.command {
        Command::Train(_) => asrl_common::telemetry::init_tracing_with(asrl_common::telemetry::SERVICE_LOG),
        _ => asrl_common::telemetry::init_tracing(),
    }
    asrl_common::cli::exit_code(match cli.command {
        Command::Train(args) => cli::train::run(args).map(|()| ExitCode::SUCCESS),
        Command::Config(args) => cli::config::run(args).map(|()| ExitCode::SUCCESS),
        Command::Score(args) => cli::score::run(args).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => cli::export::run(args).map(|()| ExitCode::SUCCESS),
        Command::Data(command) => cli::data::run(command),
        Command::Plot(args) => cli::plot::run(args).map(|()| ExitCode::SUCCESS),
        Command::Report(args) => cli::report::run(args).map(|()| ExitCode::SUCCESS),
    })
}
