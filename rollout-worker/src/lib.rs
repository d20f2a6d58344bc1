//! The rollout worker.
