//! The learner: training math and the gRPC service rollout workers talk to.
//!
//! - [`service`]: the `asrl.v1.Learner` gRPC service, lease manager, worker registry.
//! - [`run`]: the ASRL epoch loop of `asrl-learner train`.

pub mod cli;
pub mod report;
pub mod run;
pub mod schedule;
pub mod training;
pub mod service;
