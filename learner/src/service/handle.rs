//! [`LearnerHandle`]: the training thread's side of the service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use asrl_common::config::SamplingParams;
use asrl_common::rollout::{AdapterVersion, PromptWork};
use asrl_common::transport::AdapterPayload;

use super::{LeaseCounters, Progress, ServiceError, Shared};

/// The training thread's handle. Cheap to clone; every method is a short critical section.
#[derive(Clone)]
pub struct LearnerHandle {
    pub(super) shared: Arc<Shared>,
}

impl LearnerHandle {
    /// Makes `bytes` (the adapter's safetensors serialisation) the latest version. Hashes here,
    /// on the caller's thread, once; every worker download then slices the same buffer.
    pub fn publish_adapter(&self, version: AdapterVersion, bytes: Vec<u8>) -> Result<(), ServiceError> {
        let payload = AdapterPayload::new(version, bytes);
        let mut inner = self.shared.lock();
        let current = inner.latest_version();
        if version <= current {
            return Err(ServiceError::VersionNotIncreasing { current, got: version });
        }
        inner.adapters.push_back(payload);
        let keep = self.shared.opts.leases.adapter_versions_kept.max(1);
        while inner.adapters.len() > keep {
            inner.adapters.pop_front();
        }
        tracing::info!(version = version.get(), "adapter version published");
        Ok(())
    }

    pub fn latest_adapter_version(&self) -> AdapterVersion {
        self.shared.lock().latest_version()
    }

    /// Queues a GRPO rollout phase; leases of the previous phase become unknown.
    pub fn start_phase(&self, prompts: Vec<PromptWork>, sampling: SamplingParams) -> Result<(), ServiceError> {
        let n = prompts.len();
        self.shared.lock().leases.start_phase(prompts, sampling)?;
        tracing::info!(prompts = n, "rollout phase started");
        Ok(())
    }

    pub fn phase_counters(&self) -> LeaseCounters {
        let mut inner = self.shared.lock();
        inner.expire(Instant::now());
        inner.leases.counters()
    }

    /// Workers heard from within the worker timeout, as (name, device).
    pub fn workers_connected(&self) -> Vec<(String, String)> {
        let mut inner = self.shared.lock();
        inner.expire(Instant::now());
        inner.registry.iter().map(|(_, w)| (w.name.clone(), w.device.clone())).collect()
    }

    /// Prompt ids abandoned since the last call (failed `leases.max_prompt_failures` times):
    /// the phase stops waiting for them. Also releases the leases of silent workers.
    pub fn take_abandoned(&self) -> Vec<String> {
        let mut inner = self.shared.lock();
        inner.expire(Instant::now());
        inner.leases.take_abandoned()
    }

    /// How long no worker has been alive (`None` while one is).
    pub fn workers_absent(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut inner = self.shared.lock();
        inner.expire(now);
        inner.registry.absent_for(now)
    }

    /// `leases.no_worker_alert_ms`: how long a phase may go without a live worker before the
    /// learner says so.
    pub fn no_worker_alert(&self) -> Duration {
        Duration::from_millis(self.shared.opts.leases.no_worker_alert_ms)
    }

    pub fn set_progress(&self, progress: Progress) {
        self.shared.lock().progress = progress;
    }
}
