//! The learner: training math and the gRPC service rollout workers talk to.

pub mod cli;
