//! Connected rollout workers: registration, heartbeats, throughput, silence timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use asrl_common::rollout::AdapterVersion;

#[derive(Debug, Clone)]
pub struct WorkerEntry {
    pub name: String,
    pub device: String,
    pub capabilities: Vec<String>,
    pub last_seen: Instant,
    pub tokens_per_second: f64,
    /// Last reported by the worker's heartbeat.
    pub adapter_version: AdapterVersion,
    pub groups_completed: u64,
    pub lease_id: u64,
    /// Sequences the worker decodes together, as it registered (0: not advertised).
    pub max_sequences: u32,
}

#[derive(Debug)]
pub struct WorkerRegistry {
    workers: HashMap<u64, WorkerEntry>,
    timeout: Duration,
    capacity: usize,
    /// The last instant a worker was known alive (creation time until the first one).
    last_alive: Instant,
}

impl WorkerRegistry {
    /// `capacity`: registered workers at most.
    pub fn new(timeout: Duration, capacity: usize, now: Instant) -> Self {
        Self { workers: HashMap::new(), timeout, capacity: capacity.max(1), last_alive: now }
    }

    /// Random non-zero ids: a restarted learner never hands out an id an old worker still holds.
    /// `None` when the registry is full (prune first so silent workers make room).
    pub fn register(&mut self, name: String, device: String, capabilities: Vec<String>, now: Instant) -> Option<u64> {
        if self.workers.len() >= self.capacity {
            return None;
        }
        let id = loop {
            let id: u64 = rand::random();
            if id != 0 && !self.workers.contains_key(&id) {
                break id;
            }
        };
        self.workers.insert(
            id,
            WorkerEntry {
                name,
                device,
                capabilities,
                last_seen: now,
                tokens_per_second: 0.0,
                adapter_version: AdapterVersion::NONE,
                groups_completed: 0,
                lease_id: 0,
                max_sequences: 0,
            },
        );
        self.last_alive = self.last_alive.max(now);
        Some(id)
    }

    /// The live entry of `worker_id`, marked seen; `None` if unknown or silent too long. Callers
    /// prune first (see `Inner::expire_silent`) so a silent worker's leases are released.
    pub fn touch(&mut self, worker_id: u64, now: Instant) -> Option<&mut WorkerEntry> {
        let timeout = self.timeout;
        let w = self.workers.get_mut(&worker_id)?;
        if now.saturating_duration_since(w.last_seen) >= timeout {
            return None;
        }
        w.last_seen = now;
        self.last_alive = self.last_alive.max(now);
        Some(w)
    }

    /// Drops workers silent for the timeout; returns their ids.
    pub fn prune(&mut self, now: Instant) -> Vec<u64> {
        let timeout = self.timeout;
        let mut dropped = Vec::new();
        let mut last_alive = self.last_alive;
        self.workers.retain(|id, w| {
            let alive = now.saturating_duration_since(w.last_seen) < timeout;
            if alive {
                last_alive = last_alive.max(now);
            } else {
                tracing::warn!(worker_id = id, name = %w.name, silent_ms = now.saturating_duration_since(w.last_seen).as_millis() as u64, "worker silent too long; dropped from registry");
                last_alive = last_alive.max(w.last_seen);
                dropped.push(*id);
            }
            alive
        });
        self.last_alive = last_alive;
        dropped
    }

    /// How long no worker has been alive; `None` while one is. Call after [`Self::prune`].
    pub fn absent_for(&self, now: Instant) -> Option<Duration> {
        self.workers.is_empty().then(|| now.saturating_duration_since(self.last_alive))
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &WorkerEntry)> {
        self.workers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_workers_are_dropped_and_absence_is_timed() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = WorkerRegistry::new(s(10), 8, t0);
        let a = r.register("a".into(), "cpu".into(), vec![], t0).unwrap();
        let b = r.register("b".into(), "cuda:0".into(), vec![], t0).unwrap();
        assert_ne!(a, b);
        assert!(r.touch(a, t0 + s(9)).is_some());
        assert!(r.touch(b, t0 + s(11)).is_none(), "silent past the timeout even before a prune");
        assert_eq!(r.prune(t0 + s(11)), vec![b]);
        assert!(r.touch(a, t0 + s(11)).is_some());
        assert_eq!(r.iter().count(), 1);
        assert!(r.touch(12345, t0).is_none());
        assert_eq!(r.absent_for(t0 + s(12)), None);
        // a was last seen at 11 s; dropped at 21 s; absent counts from when it was last seen.
        assert_eq!(r.prune(t0 + s(21)), vec![a]);
        assert_eq!(r.absent_for(t0 + s(30)), Some(s(19)));
    }

    #[test]
    fn registrations_are_capped() {
        let t0 = Instant::now();
        let mut r = WorkerRegistry::new(Duration::from_secs(10), 2, t0);
        assert!(r.register("a".into(), "cpu".into(), vec![], t0).is_some());
        assert!(r.register("b".into(), "cpu".into(), vec![], t0).is_some());
        assert!(r.register("c".into(), "cpu".into(), vec![], t0).is_none());
        r.prune(t0 + Duration::from_secs(10));
        assert!(r.register("c".into(), "cpu".into(), vec![], t0 + Duration::from_secs(10)).is_some(), "silent workers make room");
    }
}
