//! Subcommands of the `asrl-learner` binary (logic here, argument wiring in `main.rs`).

pub mod data;
