//! Prompts that come back unfinished: given back by a worker (`ReturnPrompts`) or answered by a
//! submission the learner rejected. Each is re-queued at once, with its reason counted; a prompt
//! that fails `max_prompt_failures` times in a phase is abandoned so a poison prompt cannot hold
//! a phase forever.

use super::{ItemState, LeaseError, LeaseManager, LeaseState};

/// Why a prompt came back unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    EngineError,
    RewardError,
    RewardOutOfBounds,
    AdapterUnavailable,
    MalformedGroup,
    /// The worker gave no reason.
    Unspecified,
    /// The learner rejected the submission (INVALID_ARGUMENT).
    InvalidSubmission,
}

impl FailureKind {
    /// The key in `GetStatus.returns_by_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::EngineError => "engine_error",
            FailureKind::RewardError => "reward_error",
            FailureKind::RewardOutOfBounds => "reward_out_of_bounds",
            FailureKind::AdapterUnavailable => "adapter_unavailable",
            FailureKind::MalformedGroup => "malformed_group",
            FailureKind::Unspecified => "unspecified",
            FailureKind::InvalidSubmission => "invalid_submission",
        }
    }
}

/// What became of the prompts of one `ReturnPrompts` call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReturnOutcome {
    pub requeued: u32,
    pub abandoned: u32,
    /// No longer held by the lease (done, re-leased, returned before, or not in it).
    pub ignored: u32,
}

impl LeaseManager {
    /// Gives prompts of `lease_id` back. Only prompts the lease still holds are affected, so a
    /// repeated call is harmless; once the lease holds none it stops counting against its
    /// worker's lease cap.
    pub fn return_prompts(
        &mut self,
        lease_id: u64,
        worker_id: u64,
        returns: &[(String, FailureKind, String)],
    ) -> Result<ReturnOutcome, LeaseError> {
        let lease = self.leases.get(&lease_id).ok_or(LeaseError::UnknownLease(lease_id))?;
        if lease.worker_id != worker_id {
            return Err(LeaseError::WrongWorker { lease_id, owner: lease.worker_id, worker_id });
        }
        let mut out = ReturnOutcome::default();
        for (prompt_id, kind, message) in returns {
            let held = self.items.get(prompt_id).is_some_and(|i| i.state == ItemState::Leased(lease_id));
            if !held {
                out.ignored += 1;
                continue;
            }
            *self.returns_by_reason.entry(kind.as_str().to_string()).or_default() += 1;
            self.counters.returned_prompts += 1;
            self.note_failure(worker_id, prompt_id, *kind, message);
            if self.fail_prompt(prompt_id) {
                out.abandoned += 1;
            } else {
                out.requeued += 1;
            }
        }
        self.close_if_empty(lease_id);
        Ok(out)
    }

    /// A submission answering `lease_id` was invalid: every prompt the lease still holds is
    /// re-queued (or abandoned) now rather than at the lease deadline, and the submitted groups
    /// are counted as rejected.
    pub fn reject_submission(&mut self, lease_id: u64, worker_id: u64, groups: usize, message: &str) {
        let Some(lease) = self.leases.get(&lease_id) else { return };
        if lease.worker_id != worker_id {
            return;
        }
        self.counters.rejected_groups += groups as u64;
        let held: Vec<String> = lease
            .prompt_ids
            .iter()
            .filter(|id| self.items.get(*id).is_some_and(|i| i.state == ItemState::Leased(lease_id)))
            .cloned()
            .collect();
        if let Some(first) = held.first() {
            self.note_failure(worker_id, first, FailureKind::InvalidSubmission, message);
        }
        for id in &held {
            self.fail_prompt(id);
        }
        self.close_if_empty(lease_id);
    }

    /// Prompts abandoned since the last call (the training thread stops waiting for them).
    pub fn take_abandoned(&mut self) -> Vec<String> {
        std::mem::take(&mut self.abandoned_ids)
    }

    pub fn returns_by_reason(&self) -> impl Iterator<Item = (&str, u64)> {
        self.returns_by_reason.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn last_failure(&self) -> &str {
        &self.last_failure
    }

    fn note_failure(&mut self, worker_id: u64, prompt_id: &str, kind: FailureKind, message: &str) {
        tracing::warn!(worker_id, prompt_id, reason = kind.as_str(), message, "prompt came back unfinished");
        self.last_failure = format!("worker {worker_id}: prompt {prompt_id}: {}: {message}", kind.as_str());
    }

    /// One more failure of a leased prompt: back to the queue, or abandoned at the limit.
    /// Returns whether it was abandoned.
    fn fail_prompt(&mut self, prompt_id: &str) -> bool {
        let limit = self.cfg.max_prompt_failures.max(1);
        let Some(item) = self.items.get_mut(prompt_id) else { return false };
        item.failures += 1;
        if item.failures >= limit {
            item.state = ItemState::Abandoned;
            self.counters.abandoned += 1;
            self.abandoned_ids.push(prompt_id.to_string());
            tracing::error!(prompt_id, failures = item.failures, "prompt abandoned for this phase after repeated failures");
            true
        } else {
            item.state = ItemState::Pending;
            self.pending.push_back(prompt_id.to_string());
            false
        }
    }

    fn close_if_empty(&mut self, lease_id: u64) {
        let Some(lease) = self.leases.get(&lease_id) else { return };
        let holds_any = lease.prompt_ids.iter().any(|id| self.items.get(id).is_some_and(|i| i.state == ItemState::Leased(lease_id)));
        if !holds_any && lease.state == LeaseState::Active {
            if let Some(lease) = self.leases.get_mut(&lease_id) {
                lease.state = LeaseState::Submitted;
            }
        }
    }
}
