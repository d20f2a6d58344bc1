use serde::{Deserialize, Serialize};

/// How the learner hands GRPO prompt groups to rollout workers, and the bounds it keeps on what
/// workers may hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Most prompts one lease carries. A lease holds what the worker batches
    /// (`workers.max_sequences / n` as it advertised), its fair share of the phase's pending
    /// prompts among the registered workers, and what it asks for, capped by this. Default 64.
    pub prompts_per_lease: usize,
    /// Upper bound on a lease's life even while its worker heartbeats (a worker whose engine
    /// hangs keeps heartbeating). Default 600 s (48 sequences × 300 tokens decoded together on a
    /// slow CPU worker fit inside it). A dead worker loses its leases after `worker_timeout_ms`.
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
    /// A worker silent this long is dropped from the registry and its leases are re-queued at
    /// once. Default 15 s: three heartbeat intervals. At least two heartbeat intervals.
    pub worker_timeout_ms: u64,
    /// Retry hint sent with "no work". Default 1 s.
    pub no_work_retry_ms: u64,
    /// A rollout phase with no live worker for this long is reported (log and `GetStatus`
    /// `warning`); it keeps waiting with its state intact. Default 60 s.
    pub no_worker_alert_ms: u64,
    /// Registered workers at most; further `Register` calls get RESOURCE_EXHAUSTED. Default 256.
    pub max_workers: usize,
    /// Unsubmitted leases one worker may hold at once; more get RESOURCE_EXHAUSTED. Default 4.
    pub max_leases_per_worker: usize,
    /// A prompt given back (engine or reward failure) or rejected this many times in one phase
    /// is abandoned: the phase goes on without it. Default 3.
    pub max_prompt_failures: u32,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            prompts_per_lease: 64,
            lease_timeout_ms: 600_000,
            max_staleness: 1,
            adapter_versions_kept: 2,
            heartbeat_interval_ms: 5_000,
            worker_timeout_ms: 15_000,
            no_work_retry_ms: 1_000,
            no_worker_alert_ms: 60_000,
            max_workers: 256,
            max_leases_per_worker: 4,
            max_prompt_failures: 3,
        }
    }
}
