//! `asrl-tools`: a thin dispatcher over `asrl_tools::demo_data` and `asrl_tools::bench`.

use std::process::ExitCode;

use asrl_tools::{bench, demo_data};
use clap::{Parser, Subcommand};

/// Tools around asrl: demo data and benchmarks.
#[derive(Parser)]
#[command(name = "asrl-tools", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write checkable demo examples in the dual-brain format (once, or live at a rate).
    DemoData(demo_data::cli::DemoDataArgs),
    /// Throughput benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli: Cli = asrl_common::cli::parse_or_exit();
    asrl_common::telemetry::init_tracing();
    asrl_common::cli::exit_code(match cli.command {
        Command::DemoData(args) => demo_data::cli::run(&args),
        Command::Bench(command) => bench::run(command).map(|()| ExitCode::SUCCESS),
    })
}
