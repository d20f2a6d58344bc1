use std::process::ExitCode;

use asrl_learner::cli;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "asrl-learner",
    version,
    about = "The asrl learner: SFT + GRPO on one LoRA adapter."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect a dataset or write demo data.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Data(command) => cli::data::run(command),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
