//! The rollout worker.

pub mod cli;
