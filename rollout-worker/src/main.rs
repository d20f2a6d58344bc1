//! `asrl-rollout-worker`: a thin dispatcher over the subcommands in `asrl_rollout_worker::cli`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use asrl_common::reward::RewardScorer;
use asrl_rollout_worker::cli;
use asrl_rollout_worker::engine::ModelEngine;
use clap::{Parser, Subcommand};

/// mimalloc, keeping freed pages: see `asrl_common::allocator`.
#[global_allocator]
static GLOBAL: asrl_common::allocator::MiMalloc = asrl_common::allocator::MiMalloc;

/// An asrl rollout worker: samples completion groups with the learner's adapter and scores them.
#[derive(Parser)]
#[command(name = "asrl-rollout-worker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample a group of completions for one prompt (outside training).
    Generate(cli::generate::GenerateArgs),
    /// Connect to a learner and roll out groups until interrupted.
    Run(cli::RunArgs),
}

fn main() -> ExitCode {
    asrl_common::allocator::keep_freed_memory();
    let parsed: Cli = asrl_common::cli::parse_or_exit();
    match parsed.command {
        Command::Run(_) => asrl_common::telemetry::init_tracing_with(asrl_common::telemetry::SERVICE_LOG),
        _ => asrl_common::telemetry::init_tracing(),
    }
    asrl_common::cli::exit_code(
        match parsed.command {
            Command::Generate(args) => cli::generate::run(args),
            Command::Run(args) => run(args),
        }
        .map(|()| ExitCode::SUCCESS),
    )
}

fn run(args: cli::RunArgs) -> anyhow::Result<()> {
    let resolved = args.resolve()?;
    let device = args.model.device.open()?;
    let loaded = asrl_common::model::load(&resolved.model, &device, resolved.dtype.to_candle())
        .with_context(|| format!("loading model {}", resolved.model.display()))?;
    let engine = ModelEngine::new(loaded).with_max_sequences(resolved.max_sequences);
    let rewards = RewardScorer::from_config(&resolved.reward)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let result = runtime.block_on(cli::run::run(&args, &resolved, engine, Arc::new(rewards)));
    // A group still being sampled on the blocking pool is abandoned (its lease expires on the
    // learner) instead of holding the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
