//! Subcommand implementations of the `asrl-rollout-worker` binary.

pub mod generate;
