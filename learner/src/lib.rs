//! The learner: training math and the gRPC service rollout workers talk to.
//!
//! - [`score`]: the `score` subcommand (per-token log-probs of a text).

pub mod score;
