//! `asrl-rollout-worker`: a thin dispatcher; the logic lives in the library modules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "asrl-rollout-worker", version, about = "asrl rollout worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to a learner and roll out groups until interrupted.
    Run(asrl_rollout_worker::cli::RunArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: asrl_rollout_worker::cli::RunArgs) -> anyhow::Result<()> {
    asrl_common::device::parse_device(&args.device)?;
    // The model-backed RolloutEngine (asrl_common::model + generate) and the paper's rewards
    // are wired here by the lead once those branches land; until then `run` cannot generate.
    anyhow::bail!(
        "no rollout engine is linked into this build yet (device {} accepted); see rollout-worker/src/engine.rs",
        args.device
    )
}
