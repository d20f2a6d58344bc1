//! Subcommand implementations of the `asrl-learner` binary.

pub mod score;
