//! The work queue of one GRPO rollout phase and its leases.
//!
//! Every prompt is counted at most once: a lease that passes its deadline, or whose worker falls
//! silent, is re-queued for another worker; a late or repeated submission of an already completed
//! prompt is a duplicate; results from an adapter too many versions behind are dropped and the
//! prompt re-queued; prompts given back or rejected too often are abandoned (`failures`).
//! Time is passed in (`now`) so expiry is testable without sleeping.

mod failures;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use asrl_common::config::{LeaseConfig, SamplingParams};
use asrl_common::rollout::{AdapterVersion, PromptWork};

pub use failures::{FailureKind, ReturnOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemState {
    Pending,
    Leased(u64),
    Done,
    /// Failed `max_prompt_failures` times: the phase goes on without it.
    Abandoned,
}

#[derive(Debug)]
struct Item {
    work: PromptWork,
    state: ItemState,
    /// Returns and rejected submissions of this prompt in the phase.
    failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Active,
    Expired,
    Submitted,
}

#[derive(Debug, Clone)]
pub struct LeaseRecord {
    pub worker_id: u64,
    pub prompt_ids: Vec<String>,
    pub adapter_version: AdapterVersion,
    pub deadline: Instant,
    /// When its worker last named it (grant, heartbeat): a lease unnamed for
    /// `worker_timeout_ms` is orphaned (dead worker, or a lost LeaseWork reply) and re-queued.
    pub last_claimed: Instant,
    pub state: LeaseState,
}

/// What a worker receives.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    pub lease_id: u64,
    pub prompts: Vec<PromptWork>,
    pub sampling: SamplingParams,
    pub adapter_version: AdapterVersion,
    pub deadline: Instant,
}

/// Per-group fate of one submission (in the submitted order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFate {
    Accepted,
    Duplicate,
    Stale,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCounters {
    pub pending: u64,
    pub leased: u64,
    pub completed: u64,
    pub total: u64,
    pub duplicate_groups: u64,
    pub stale_groups: u64,
    pub expired_leases: u64,
    pub returned_prompts: u64,
    pub rejected_groups: u64,
    pub abandoned: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LeaseError {
    #[error("lease {0} is unknown (never issued, or from an earlier phase)")]
    UnknownLease(u64),
    #[error("lease {lease_id} belongs to worker {owner}, not worker {worker_id}")]
    WrongWorker { lease_id: u64, owner: u64, worker_id: u64 },
    #[error("lease {lease_id} required adapter version {required}, submission says {got}")]
    WrongVersion { lease_id: u64, required: AdapterVersion, got: AdapterVersion },
    #[error("prompt id {0:?} appears twice in the phase")]
    DuplicatePrompt(String),
}

#[derive(Debug)]
pub struct LeaseManager {
    cfg: LeaseConfig,
    sampling: SamplingParams,
    items: HashMap<String, Item>,
    pending: VecDeque<String>,
    leases: HashMap<u64, LeaseRecord>,
    next_lease_id: u64,
    counters: LeaseCounters,
    /// Returned prompts by reason, this phase.
    returns_by_reason: BTreeMap<String, u64>,
    /// The most recent failure, for status.
    last_failure: String,
    /// Abandoned prompt ids the training thread has not collected yet.
    abandoned_ids: Vec<String>,
}

impl LeaseManager {
    pub fn new(cfg: LeaseConfig) -> Self {
        Self {
            cfg,
            sampling: SamplingParams::default(),
            items: HashMap::new(),
            pending: VecDeque::new(),
            leases: HashMap::new(),
            // Lease ids keep growing across phases so an old lease can never alias a new one.
            next_lease_id: 1,
            counters: LeaseCounters::default(),
            returns_by_reason: BTreeMap::new(),
            last_failure: String::new(),
            abandoned_ids: Vec::new(),
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    pub fn sampling(&self) -> &SamplingParams {
        &self.sampling
    }

    /// Replaces the queue with a new phase's prompts; outstanding leases are forgotten (their
    /// submissions then fail as unknown). Duplicate prompt ids are an error.
    pub fn start_phase(&mut self, prompts: Vec<PromptWork>, sampling: SamplingParams) -> Result<(), LeaseError> {
        let mut items = HashMap::with_capacity(prompts.len());
        let mut pending = VecDeque::with_capacity(prompts.len());
        for work in prompts {
            let id = work.prompt_id.clone();
            if items.insert(id.clone(), Item { work, state: ItemState::Pending, failures: 0 }).is_some() {
                return Err(LeaseError::DuplicatePrompt(id));
            }
            pending.push_back(id);
        }
        self.counters = LeaseCounters { total: items.len() as u64, ..Default::default() };
        self.items = items;
        self.pending = pending;
        self.leases.clear();
        self.sampling = sampling;
        self.returns_by_reason.clear();
        self.last_failure.clear();
        self.abandoned_ids.clear();
        Ok(())
    }

    /// Every prompt completed or abandoned.
    pub fn is_phase_done(&self) -> bool {
        self.counters.completed + self.counters.abandoned == self.counters.total
    }

    pub fn counters(&self) -> LeaseCounters {
        let mut c = self.counters;
        c.pending = self.items.values().filter(|i| i.state == ItemState::Pending).count() as u64;
        c.leased = self.items.values().filter(|i| matches!(i.state, ItemState::Leased(_))).count() as u64;
        c
    }

    pub fn lease_record(&self, lease_id: u64) -> Option<&LeaseRecord> {
        self.leases.get(&lease_id)
    }

    pub fn prompt(&self, prompt_id: &str) -> Option<&PromptWork> {
        self.items.get(prompt_id).map(|i| &i.work)
    }

    /// Re-queues the prompts of every active lease past its deadline or unclaimed by its
    /// worker's heartbeats for `worker_timeout_ms`.
    pub fn sweep(&mut self, now: Instant) {
        let unclaimed = Duration::from_millis(self.cfg.worker_timeout_ms);
        let mut expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| {
                l.state == LeaseState::Active && (l.deadline <= now || now.saturating_duration_since(l.last_claimed) >= unclaimed)
            })
            .map(|(id, _)| *id)
            .collect();
        // Oldest lease first, so re-queued prompts keep their original order.
        expired.sort_unstable();
        for lease_id in expired {
            let Some(lease) = self.leases.get_mut(&lease_id) else { continue };
            lease.state = LeaseState::Expired;
            self.counters.expired_leases += 1;
            let why = if lease.deadline <= now { "deadline passed" } else { "not named by its worker's heartbeats" };
            tracing::warn!(lease_id, worker_id = lease.worker_id, prompts = lease.prompt_ids.len(), why, "lease expired; re-queueing its prompts");
            self.requeue_leased(lease_id);
        }
    }

    /// Re-queues the prompts still held by `lease_id`.
    fn requeue_leased(&mut self, lease_id: u64) {
        let Some(lease) = self.leases.get(&lease_id) else { return };
        for id in &lease.prompt_ids {
            if let Some(item) = self.items.get_mut(id) {
                if item.state == ItemState::Leased(lease_id) {
                    item.state = ItemState::Pending;
                    self.pending.push_back(id.clone());
                }
            }
        }
    }

    /// A worker fell silent (or went away): its active leases expire now, not at their
    /// deadline. Returns how many leases were released.
    pub fn release_worker(&mut self, worker_id: u64) -> usize {
        let mut ids: Vec<u64> =
            self.leases.iter().filter(|(_, l)| l.worker_id == worker_id && l.state == LeaseState::Active).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        for &lease_id in &ids {
            if let Some(lease) = self.leases.get_mut(&lease_id) {
                lease.state = LeaseState::Expired;
                self.counters.expired_leases += 1;
                tracing::warn!(lease_id, worker_id, prompts = lease.prompt_ids.len(), "worker silent; re-queueing its lease's prompts");
            }
            self.requeue_leased(lease_id);
        }
        ids.len()
    }

    /// A heartbeat of `worker_id` names `lease_ids` as held: they stay alive.
    pub fn claim(&mut self, worker_id: u64, lease_ids: &[u64], now: Instant) {
        for id in lease_ids {
            if let Some(l) = self.leases.get_mut(id) {
                if l.worker_id == worker_id && l.state == LeaseState::Active {
                    l.last_claimed = now;
                }
            }
        }
    }

    /// Active (unsubmitted, unexpired) leases of `worker_id`.
    pub fn active_leases(&self, worker_id: u64) -> usize {
        self.leases.values().filter(|l| l.worker_id == worker_id && l.state == LeaseState::Active).count()
    }

    /// How many prompts a worker's next lease carries (before the configured cap): what its
    /// engine batches (`max_sequences / n`, at least one group; 0 = not advertised), what it
    /// asks for (`max_prompts`, 0 = anything), and its share of the phase's outstanding
    /// (pending or leased) prompts among the `workers` registered, so that a small phase is
    /// spread over every worker instead of batched on the first to ask.
    pub fn lease_size(&self, max_prompts: u32, max_sequences: u32, workers: usize) -> usize {
        let c = self.counters();
        let share = ((c.pending + c.leased) as usize).div_ceil(workers.max(1));
        let batch = match max_sequences {
            0 => 0,
            s => (s as usize / self.sampling.n.max(1)).max(1),
        };
        [max_prompts as usize, batch, share].into_iter().filter(|&k| k > 0).min().unwrap_or(0)
    }

    /// Leases up to `max_prompts` (0: the configured default) pending prompts, or `None`.
    pub fn lease(&mut self, worker_id: u64, max_prompts: usize, adapter_version: AdapterVersion, now: Instant) -> Option<LeaseGrant> {
        self.sweep(now);
        let want = match max_prompts {
            0 => self.cfg.prompts_per_lease,
            n => n.min(self.cfg.prompts_per_lease),
        }
        .max(1);
        let lease_id = self.next_lease_id;
        let mut prompts = Vec::with_capacity(want);
        while prompts.len() < want {
            let Some(id) = self.pending.pop_front() else { break };
            // The deque may hold ids completed meanwhile by a late submission: skip them.
            let Some(item) = self.items.get_mut(&id) else { continue };
            if item.state != ItemState::Pending {
                continue;
            }
            item.state = ItemState::Leased(lease_id);
            prompts.push(item.work.clone());
        }
        if prompts.is_empty() {
            return None;
        }
        self.next_lease_id += 1;
        let deadline = now + Duration::from_millis(self.cfg.lease_timeout_ms);
        self.leases.insert(
            lease_id,
            LeaseRecord {
                worker_id,
                prompt_ids: prompts.iter().map(|p| p.prompt_id.clone()).collect(),
                adapter_version,
                deadline,
                last_claimed: now,
                state: LeaseState::Active,
            },
        );
        Some(LeaseGrant { lease_id, prompts, sampling: self.sampling.clone(), adapter_version, deadline })
    }

    /// Checks that a submission may be applied to this lease (before payload validation).
    pub fn check_submission(&self, lease_id: u64, worker_id: u64, adapter_version: AdapterVersion) -> Result<&LeaseRecord, LeaseError> {
        let lease = self.leases.get(&lease_id).ok_or(LeaseError::UnknownLease(lease_id))?;
        if lease.worker_id != worker_id {
            return Err(LeaseError::WrongWorker { lease_id, owner: lease.worker_id, worker_id });
        }
        if lease.adapter_version != adapter_version {
            return Err(LeaseError::WrongVersion { lease_id, required: lease.adapter_version, got: adapter_version });
        }
        Ok(lease)
    }

    /// Applies a submission already checked by [`Self::check_submission`] and payload
    /// validation. `prompt_ids` are the submitted groups' prompts, each in the lease; `latest`
    /// is the newest published adapter (the staleness reference).
    pub fn apply_submission(&mut self, lease_id: u64, prompt_ids: &[&str], latest: AdapterVersion) -> Result<Vec<GroupFate>, LeaseError> {
        let lease = self.leases.get_mut(&lease_id).ok_or(LeaseError::UnknownLease(lease_id))?;
        let stale = lease.adapter_version.is_stale(latest, self.cfg.max_staleness);
        let was_active = lease.state == LeaseState::Active;
        lease.state = LeaseState::Submitted;
        let mut fates = Vec::with_capacity(prompt_ids.len());
        for id in prompt_ids {
            let Some(item) = self.items.get_mut(*id) else {
                fates.push(GroupFate::Duplicate);
                continue;
            };
            let fate = match (item.state, stale) {
                (ItemState::Done | ItemState::Abandoned, _) => GroupFate::Duplicate,
                (_, true) => GroupFate::Stale,
                (_, false) => GroupFate::Accepted,
            };
            match fate {
                GroupFate::Accepted => {
                    item.state = ItemState::Done;
                    self.counters.completed += 1;
                }
                GroupFate::Duplicate => self.counters.duplicate_groups += 1,
                GroupFate::Stale => {
                    self.counters.stale_groups += 1;
                    if item.state == ItemState::Leased(lease_id) {
                        item.state = ItemState::Pending;
                        self.pending.push_back(id.to_string());
                    }
                }
            }
            fates.push(fate);
        }
        // Prompts of this lease that the submission left out go back to the queue now rather
        // than waiting for a deadline that no longer applies.
        if was_active {
            self.requeue_leased(lease_id);
        }
        Ok(fates)
    }
}

#[cfg(test)]
mod tests;
