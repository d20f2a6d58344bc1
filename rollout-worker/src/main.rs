//! `asrl-rollout-worker`: a thin dispatcher over the subcommands in `asrl_rollout_worker::cli`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "asrl-rollout-worker", version, about = "An asrl rollout worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample a group of completions for one prompt.
    Generate(asrl_rollout_worker::cli::generate::GenerateArgs),
}

fn main() {
    asrl_common::telemetry::init_tracing();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help / --version
        Err(e) => {
            let msg = e.render().to_string();
            eprintln!("{}", msg.lines().next().unwrap_or("error: invalid arguments"));
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Generate(args) => asrl_rollout_worker::cli::generate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", asrl_common::telemetry::one_line_error(e.as_ref()));
        std::process::exit(2);
    }
}
