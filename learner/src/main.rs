//! `asrl-learner`: a thin dispatcher over the subcommands in `asrl_learner::cli`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "asrl-learner", version, about = "The asrl learner")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-token log-probabilities of a text under the model (and adapter).
    Score(asrl_learner::cli::score::ScoreArgs),
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
        Command::Score(args) => asrl_learner::cli::score::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", asrl_common::telemetry::one_line_error(e.as_ref()));
        std::process::exit(2);
    }
}
