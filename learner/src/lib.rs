//! The learner: training math, the gRPC service rollout workers talk to, and the epoch loop that
//! joins them.
//!
//! - [`training`]: the [`training::Trainer`] (SFT and GRPO steps, optimiser, checkpoints) and its
//!   losses, independent of gRPC.
//! - [`service`]: the `asrl.v1.Learner` gRPC service, lease manager, worker registry.
//! - [`run`]: the ASRL epoch loop of `asrl-learner train` (phase drivers, run directory).
//! - [`schedule`]: which phases each epoch runs, and early stopping.
//! - [`report`]: `metrics.jsonl` records, the summary table, plots and the Table 1 report.
//! - [`cli`]: the `asrl-learner` subcommands.

pub mod cli;
pub mod report;
pub mod run;
pub mod schedule;
pub mod service;
pub mod training;
