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
}

impl WorkerRegistry {
    pub fn new(timeout: Duration) -> Self {
        Self { workers: HashMap::new(), timeout }
    }

    /// Random non-zero ids: a restarted learner never hands out an id an old worker still holds.
    pub fn register(&mut self, name: String, device: String, capabilities: Vec<String>, now: Instant) -> u64 {
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
        id
    }

    /// The live entry of `worker_id`, marked seen; `None` if unknown or timed out.
    pub fn touch(&mut self, worker_id: u64, now: Instant) -> Option<&mut WorkerEntry> {
        self.prune(now);
        let w = self.workers.get_mut(&worker_id)?;
        w.last_seen = now;
        Some(w)
    }

    pub fn prune(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.workers.retain(|id, w| {
            let alive = now.saturating_duration_since(w.last_seen) < timeout;
            if !alive {
                tracing::warn!(worker_id = id, name = %w.name, "worker silent too long; dropped from registry");
            }
            alive
        });
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
    fn silent_workers_are_dropped() {
        let t0 = Instant::now();
        let mut r = WorkerRegistry::new(Duration::from_secs(10));
        let a = r.register("a".into(), "cpu".into(), vec![], t0);
        let b = r.register("b".into(), "cuda:0".into(), vec![], t0);
        assert_ne!(a, b);
        assert!(r.touch(a, t0 + Duration::from_secs(9)).is_some());
        assert!(r.touch(b, t0 + Duration::from_secs(11)).is_none());
        assert!(r.touch(a, t0 + Duration::from_secs(11)).is_some());
        assert_eq!(r.iter().count(), 1);
        assert!(r.touch(12345, t0).is_none());
    }
}
