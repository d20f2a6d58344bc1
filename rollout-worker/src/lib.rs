//! The rollout worker.
//!
//! - [`engine`]: the [`engine::RolloutEngine`] seam the model side implements.
//! - [`worker`]: the rollout loop ([`worker::run_worker`]); one lease at a time in `lease.rs`.
//! - [`status`]: the worker's own `asrl.v1.Worker` status endpoint.
//! - [`cli`]: the `run` subcommand.

pub mod cli;
pub mod engine;
mod lease;
pub mod status;
pub mod worker;
