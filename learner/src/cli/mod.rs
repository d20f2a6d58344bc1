//! Subcommands of the `asrl-learner` binary; `main.rs` only dispatches.

pub mod data;
pub mod plot;
pub mod report;
