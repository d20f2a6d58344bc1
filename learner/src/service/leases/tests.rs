use std::sync::Arc;

use asrl_common::rollout::ExampleKind;

use super::*;

fn v(raw: u64) -> AdapterVersion {
    AdapterVersion::new(raw)
}

fn prompts(n: usize) -> Vec<PromptWork> {
    (0..n)
        .map(|i| PromptWork {
            prompt_id: format!("p{i}"),
            prompt_tokens: Arc::from(vec![1u32, 2, i as u32]),
            prompt_text: format!("prompt {i}"),
            ground_truth: String::new(),
            kind: ExampleKind::Open,
            example_type: String::new(),
        })
        .collect()
}

fn manager(n: usize) -> LeaseManager {
    let cfg = LeaseConfig { prompts_per_lease: 2, lease_timeout_ms: 1000, max_staleness: 1, ..Default::default() };
    let mut m = LeaseManager::new(cfg);
    m.start_phase(prompts(n), SamplingParams::default()).unwrap();
    m
}

fn ids(g: &LeaseGrant) -> Vec<&str> {
    g.prompts.iter().map(|p| p.prompt_id.as_str()).collect()
}

#[test]
fn expired_lease_is_released_and_late_duplicate_ignored() {
    let t0 = Instant::now();
    let mut m = manager(3);
    let a = m.lease(1, 0, v(5), t0).unwrap();
    assert_eq!(ids(&a), ["p0", "p1"]);
    let b = m.lease(2, 0, v(5), t0 + Duration::from_millis(500)).unwrap();
    assert_eq!(ids(&b), ["p2"]);
    assert!(m.lease(2, 0, v(5), t0 + Duration::from_millis(500)).is_none(), "queue is empty while leases are active");

    // Worker 1 stalls past its deadline: worker 2 gets its prompts.
    let later = t0 + Duration::from_millis(1001);
    let c = m.lease(2, 0, v(5), later).unwrap();
    assert_eq!(ids(&c), ["p0", "p1"]);
    assert_eq!(m.counters().expired_leases, 1);

    assert_eq!(m.apply_submission(c.lease_id, &["p0", "p1"], v(5)).unwrap(), [GroupFate::Accepted; 2]);
    // Worker 1 wakes up and submits late: counted once, as duplicates.
    m.check_submission(a.lease_id, 1, v(5)).unwrap();
    assert_eq!(m.apply_submission(a.lease_id, &["p0", "p1"], v(5)).unwrap(), [GroupFate::Duplicate; 2]);
    // A retried submission of the same lease is a duplicate too.
    assert_eq!(m.apply_submission(c.lease_id, &["p0"], v(5)).unwrap(), [GroupFate::Duplicate]);
    assert_eq!(m.apply_submission(b.lease_id, &["p2"], v(5)).unwrap(), [GroupFate::Accepted]);
    let k = m.counters();
    assert_eq!((k.completed, k.duplicate_groups, k.pending, k.leased), (3, 3, 0, 0));
    assert!(m.is_phase_done());
}

#[test]
fn late_submission_of_expired_lease_still_counts_if_first() {
    let t0 = Instant::now();
    let mut m = manager(2);
    let a = m.lease(1, 0, v(5), t0).unwrap();
    m.sweep(t0 + Duration::from_secs(2));
    assert_eq!(m.counters().pending, 2);
    assert_eq!(m.apply_submission(a.lease_id, &["p0", "p1"], v(5)).unwrap(), [GroupFate::Accepted; 2]);
    // The re-queued ids are skipped: nothing left to lease.
    assert!(m.lease(2, 0, v(5), t0 + Duration::from_secs(2)).is_none());
    assert!(m.is_phase_done());
}

#[test]
fn stale_results_are_dropped_and_requeued() {
    let t0 = Instant::now();
    let mut m = manager(2);
    let a = m.lease(1, 0, v(3), t0).unwrap();
    // Latest is 5, lease used 3: two versions behind with max_staleness 1.
    assert_eq!(m.apply_submission(a.lease_id, &["p0", "p1"], v(5)).unwrap(), [GroupFate::Stale; 2]);
    let k = m.counters();
    assert_eq!((k.stale_groups, k.completed, k.pending), (2, 0, 2));
    // One version behind is fine.
    let b = m.lease(1, 0, v(4), t0).unwrap();
    assert_eq!(m.apply_submission(b.lease_id, &["p0", "p1"], v(5)).unwrap(), [GroupFate::Accepted; 2]);
    assert!(m.is_phase_done());
}

#[test]
fn partial_submission_requeues_the_rest() {
    let t0 = Instant::now();
    let mut m = manager(2);
    let a = m.lease(1, 0, v(1), t0).unwrap();
    assert_eq!(m.apply_submission(a.lease_id, &["p1"], v(1)).unwrap(), [GroupFate::Accepted]);
    let b = m.lease(1, 0, v(1), t0).unwrap();
    assert_eq!(ids(&b), ["p0"]);
}

#[test]
fn submission_checks() {
    let t0 = Instant::now();
    let mut m = manager(2);
    let a = m.lease(1, 0, v(7), t0).unwrap();
    assert_eq!(m.check_submission(99, 1, v(7)).unwrap_err(), LeaseError::UnknownLease(99));
    assert!(matches!(m.check_submission(a.lease_id, 2, v(7)), Err(LeaseError::WrongWorker { .. })));
    assert!(matches!(m.check_submission(a.lease_id, 1, v(6)), Err(LeaseError::WrongVersion { .. })));
    m.start_phase(prompts(1), SamplingParams::default()).unwrap();
    assert_eq!(m.check_submission(a.lease_id, 1, v(7)).unwrap_err(), LeaseError::UnknownLease(a.lease_id));
    assert!(m.start_phase([prompts(1), prompts(1)].concat(), SamplingParams::default()).is_err());
}

#[test]
fn lease_size_follows_batch_capacity_share_and_cap() {
    let t0 = Instant::now();
    let cfg = LeaseConfig { prompts_per_lease: 5, lease_timeout_ms: 1000, max_staleness: 1, ..Default::default() };
    let mut m = LeaseManager::new(cfg);
    m.start_phase(prompts(12), SamplingParams { n: 6, ..SamplingParams::default() }).unwrap();
    // One worker batching 24 sequences: 4 groups of 6; one batching 5 still gets a group.
    assert_eq!(m.lease_size(0, 24, 1), 4);
    assert_eq!(m.lease_size(0, 5, 1), 1);
    // It asks for fewer; capacity not advertised: the share (12 over 1 worker), then the cap.
    assert_eq!(m.lease_size(2, 24, 1), 2);
    assert_eq!(m.lease_size(0, 0, 1), 12);
    assert_eq!(ids(&m.lease(1, m.lease_size(0, 0, 1), v(1), t0).unwrap()).len(), 5, "capped by prompts_per_lease");
    // Three workers share the 12 outstanding prompts (5 leased, 7 pending): 4 each.
    assert_eq!(m.lease_size(0, 48, 3), 4);
    let b = m.lease(2, m.lease_size(0, 48, 3), v(1), t0).unwrap();
    assert_eq!(ids(&b), ["p5", "p6", "p7", "p8"]);
    // Greedy validation (n = 1): the batch capacity is prompts.
    m.start_phase(prompts(30), SamplingParams { n: 1, ..SamplingParams::default() }).unwrap();
    assert_eq!(m.lease_size(0, 16, 1), 16);
    assert_eq!(m.lease_size(0, 16, 4), 8);
}
