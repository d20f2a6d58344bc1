use serde::{Deserialize, Serialize};

/// How the learner hands GRPO prompt groups to rollout workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Most prompts one lease carries. A lease holds what the worker batches
    /// (`workers.max_sequences / n` as it advertised), its fair share of the phase's pending
    /// prompts among the registered workers, and what it asks for, capped by this. Default 64.
    pub prompts_per_lease: usize,
    /// A lease not submitted within this time is re-leased to another worker. Default 600 s
    /// (48 sequences × 300 tokens decoded together on a slow CPU worker fit inside it).
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
            prompts_per_lease: 64,
            lease_timeout_ms: 600_000,
            max_staleness: 1,
            adapter_versions_kept: 2,
            heartbeat_interval_ms: 5_000,
            worker_timeout_ms: 30_000,
            no_work_retry_ms: 1_000,
        }
    }
}
