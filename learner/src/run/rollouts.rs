//! Lease phases seen from the training thread: queue prompts with the service, then take the
//! groups the workers send back, one at a time, until every prompt has its group.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asrl_common::config::SamplingParams;
use asrl_common::rollout::{PromptWork, RolloutGroup};
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::RunError;
use crate::service::LearnerHandle;

/// How often a phase that waits on workers says so.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(30);

pub struct Rollouts {
    handle: LearnerHandle,
    groups: Receiver<RolloutGroup>,
    stop: Arc<AtomicBool>,
}

/// One queued phase: the prompts still owed a group.
pub struct PhaseWait {
    missing: HashSet<String>,
    total: usize,
    started: Instant,
    last_log: Instant,
    /// When the "no worker alive" warning was last logged.
    last_alert: Option<Instant>,
}

impl PhaseWait {
    pub fn remaining(&self) -> usize {
        self.missing.len()
    }
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Rollouts {
    pub fn new(handle: LearnerHandle, groups: Receiver<RolloutGroup>, stop: Arc<AtomicBool>) -> Self {
        Self { handle, groups, stop }
    }

    pub fn handle(&self) -> &LearnerHandle {
        &self.handle
    }

    /// Queues `prompts` (ids unique) for the workers.
    pub fn start(&self, prompts: Vec<PromptWork>, sampling: SamplingParams) -> Result<PhaseWait, RunError> {
        let missing: HashSet<String> = prompts.iter().map(|p| p.prompt_id.clone()).collect();
        let total = missing.len();
        // Groups of an earlier, finished phase cannot still be queued: each phase waits for all.
        while self.groups.try_recv().is_ok() {}
        self.handle.start_phase(prompts, sampling)?;
        let now = Instant::now();
        Ok(PhaseWait { missing, total, started: now, last_log: now, last_alert: None })
    }

    /// The next group of the phase, or `None` once every prompt has one or was abandoned (it
    /// failed `leases.max_prompt_failures` times). Waits as long as it takes (workers may still
    /// be starting), logging who is connected and warning when no worker has been alive for
    /// `leases.no_worker_alert_ms`; a stop request ends the wait with [`RunError::Interrupted`].
    pub fn next(&self, wait: &mut PhaseWait) -> Result<Option<RolloutGroup>, RunError> {
        while !wait.missing.is_empty() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(RunError::Interrupted);
            }
            match self.groups.recv_timeout(Duration::from_millis(250)) {
                Ok(group) => {
                    if wait.missing.remove(&group.prompt_id) {
                        return Ok(Some(group));
                    }
                    tracing::debug!(prompt_id = %group.prompt_id, "group of another phase ignored");
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.drop_abandoned(wait);
                    self.alert_if_no_worker(wait);
                    if wait.last_log.elapsed() >= WAIT_LOG_EVERY {
                        wait.last_log = Instant::now();
                        let workers = self.handle.workers_connected();
                        let c = self.handle.phase_counters();
                        tracing::info!(
                            waited_s = wait.started.elapsed().as_secs(),
                            done = wait.total - wait.missing.len(),
                            total = wait.total,
                            leased = c.leased,
                            workers = workers.len(),
                            "waiting for rollout workers{}",
                            if workers.is_empty() { " (none connected: start one with asrl-rollout-worker run)" } else { "" }
                        );
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RunError::ServiceStopped);
                }
            }
        }
        Ok(None)
    }

    fn drop_abandoned(&self, wait: &mut PhaseWait) {
        for id in self.handle.take_abandoned() {
            if wait.missing.remove(&id) {
                tracing::error!(prompt_id = %id, "prompt abandoned after repeated failures; the phase goes on without it");
            }
        }
    }

    /// Logs (and, through the service, shows in `GetStatus.warning`) a phase with no live
    /// worker, once per alert period; the wait itself goes on with nothing lost.
    fn alert_if_no_worker(&self, wait: &mut PhaseWait) {
        let alert = self.handle.no_worker_alert();
        let Some(absent) = self.handle.workers_absent() else {
            wait.last_alert = None;
            return;
        };
        let due = wait.last_alert.is_none_or(|t| t.elapsed() >= alert);
        if absent >= alert && due {
            wait.last_alert = Some(Instant::now());
            tracing::warn!(
                absent_s = absent.as_secs(),
                done = wait.total - wait.missing.len(),
                total = wait.total,
                "no rollout worker alive: the phase keeps waiting with its state (start one with asrl-rollout-worker run)"
            );
        }
    }

    /// Every group of the phase, in arrival order.
    pub fn collect(&self, mut wait: PhaseWait) -> Result<HashMap<String, RolloutGroup>, RunError> {
        let mut out = HashMap::with_capacity(wait.total);
        while let Some(g) = self.next(&mut wait)? {
            out.insert(g.prompt_id.clone(), g);
        }
        Ok(out)
    }
}
