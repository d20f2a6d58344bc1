//! Shared core of asrl-rs, used by both the learner and the rollout workers.
