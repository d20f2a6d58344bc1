//! The learner: training math and the gRPC service rollout workers talk to.
//!
//! - [`service`]: the `asrl.v1.Learner` gRPC service, lease manager, worker registry.
//! - [`bench`]: the adapter-push benchmark.

pub mod bench;
pub mod cli;
pub mod report;
pub mod schedule;
pub mod training;
pub mod service;
