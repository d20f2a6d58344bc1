//! Subcommands of the `asrl-learner` binary; `main.rs` only dispatches.

pub mod config;
pub mod data;
pub mod export;
pub mod plot;
pub mod report;
pub mod score;
pub mod train;
