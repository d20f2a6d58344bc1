//! `asrl-tools`: a thin dispatcher over `asrl_tools::demo_data` and `asrl_tools::bench`.

use std::process::ExitCode;

use asrl_tools::{bench, demo_data, parity, random_model};
use clap::{Parser, Subcommand};

/// mimalloc, keeping freed pages: see `asrl_common::allocator`.
#[global_allocator]
static GLOBAL: asrl_common::allocator::MiMalloc = asrl_common::allocator::MiMalloc;

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
    /// Log-probs, LoRA gradients and greedy tokens of one model for the torch comparison of
    /// scripts/gpu-check.sh.
    Parity(parity::ParityArgs),
    /// An HF model dir with seeded random weights of a named shape (Qwen3-0.6B).
    RandomModel(random_model::RandomModelArgs),
}

fn main() -> ExitCode {
    asrl_common::allocator::keep_freed_memory();
    let cli: Cli = asrl_common::cli::parse_or_exit();
    asrl_common::telemetry::init_tracing();
    asrl_common::cli::exit_code(match cli.command {
        Command::DemoData(args) => demo_data::cli::run(&args),
        Command::Bench(command) => bench::run(command).map(|()| ExitCode::SUCCESS),
        Command::Parity(args) => parity::run(&args).map(|()| ExitCode::SUCCESS),
        Command::RandomModel(args) => random_model::run(&args).map(|()| ExitCode::SUCCESS),
    })
}
