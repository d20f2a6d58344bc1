//! Subcommands of the `asrl-rollout-worker` binary; `main.rs` only dispatches.

pub mod generate;
pub mod run;

pub use run::RunArgs;
