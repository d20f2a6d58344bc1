use serde::{Deserialize, Serialize};

/// How the learner hands GRPO prompt groups to rollout workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Prompts per lease (a worker asks for at most this many). Default 4.
    pub prompts_per_lease: usize,
    /// A lease not submitted within this time is re-leased to another worker. Default 600 s
    /// (4 prompts × 6 completions × 300 tokens on a slow CPU worker fit well inside it).
    pub lease_timeout_ms: u64,
    /// Results generated with an adapter more than this many versions behind the latest are
    /// dropped (and their prompts re-queued). Default 1. Not a TOML field: `asrl-learner train`
    /// sets it from `grpo.max_staleness`, so one knob bounds off-policy data.
    #[serde(skip)]
    pub max_staleness: u64,
    /// Adapter versions kept in memory for workers still fetching an older one. Default 2.
    pub adapter_versions_kept: usize,
    /// Heartbeat period told to workers. Default 5 s.
    pub heartbeat_interval_ms: u64,
    /// A worker silent for this long is dropped from the registry. Default 30 s.
    pub worker_timeout_ms: u64,
    /// Retry hint sent with "no work". Default 1 s.
    pub no_work_retry_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            prompts_per_lease: 4,
            lease_timeout_ms: 600_000,
            max_staleness: 1,
            adapter_versions_kept: 2,
            heartbeat_interval_ms: 5_000,
            worker_timeout_ms: 30_000,
            no_work_retry_ms: 1_000,
        }
    }
}
