//! Subcommand implementations of the `asrl-learner` binary.

pub mod bench_sft;
pub mod score;
