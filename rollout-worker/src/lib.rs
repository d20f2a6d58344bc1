//! The rollout worker.
//!
//! - [`engine`]: the [`engine::RolloutEngine`] seam the model side implements.
//! - [`worker`]: the rollout loop ([`worker::run_worker`]).
//! - [`status`]: the worker's own `asrl.v1.Worker` status endpoint.
//! - [`cli`]: the `run` subcommand.

pub mod cli;
pub mod engine;
pub mod status;
pub mod worker;
