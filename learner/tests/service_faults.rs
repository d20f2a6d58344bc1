//! The learner service under faults, over real loopback gRPC: leases that follow heartbeats,
//! prompts given back, rewards out of bounds, and every client-controlled bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use asrl_common::config::{GrpcClientConfig, GrpcServerConfig, LeaseConfig, SamplingParams};
use asrl_common::rollout::{AdapterVersion, ExampleKind, PromptWork, RolloutGroup};
use asrl_common::transport::{self, AuthChannel, RunningServer};
use asrl_learner::service::limits::{MAX_ADD_EXAMPLES_LINES, MAX_REJECTIONS_LISTED};
use asrl_learner::service::{new_learner, serve_learner, AddExamplesOutcome, ExampleSink, LearnerHandle, ServiceOptions, SinkError};
use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use tonic::Code;

const VOCAB: u32 = 1000;
const GROUP: usize = 2;

struct Learner {
    server: RunningServer,
    handle: LearnerHandle,
    rx: crossbeam_channel::Receiver<RolloutGroup>,
}

/// Every line is rejected, or (with `fail`) the "disk" is full.
struct Sink {
    fail: bool,
}
impl ExampleSink for Sink {
    fn add_jsonl(&self, jsonl: &str) -> Result<AddExamplesOutcome, SinkError> {
        if self.fail {
            return Err(SinkError { message: "live.jsonl: No space left on device".into(), no_space: true });
        }
        Ok(AddExamplesOutcome { accepted: 0, rejected: (1..=jsonl.lines().count() as u32).map(|l| (l, "bad".into())).collect() })
    }
    fn dataset_size(&self) -> u64 {
        0
    }
}

fn prompts(n: usize) -> Vec<PromptWork> {
    (0..n)
        .map(|i| PromptWork {
            prompt_id: format!("p{i}"),
            prompt_tokens: Arc::from(vec![5u32, 6, i as u32]),
            prompt_text: format!("prompt {i}"),
            ground_truth: String::new(),
            kind: ExampleKind::Open,
            example_type: String::new(),
        })
        .collect()
}

async fn start(leases: LeaseConfig, n_prompts: usize, sink: Option<Sink>) -> Learner {
    let opts = ServiceOptions { max_abs_reward: 10.0, ..ServiceOptions::new(leases, VOCAB) };
    let (service, handle, rx) = new_learner(opts, sink.map(|s| Arc::new(s) as Arc<dyn ExampleSink>));
    handle.publish_adapter(AdapterVersion::new(1), b"v1".to_vec()).unwrap();
    handle.start_phase(prompts(n_prompts), SamplingParams { n: GROUP, max_new_tokens: 8, ..Default::default() }).unwrap();
    let cfg = GrpcServerConfig { bind: ([127, 0, 0, 1], 0).into(), ..Default::default() };
    let server = serve_learner(&cfg, service).await.unwrap();
    Learner { server, handle, rx }
}

impl Learner {
    async fn client(&self) -> LearnerClient<AuthChannel> {
        let cfg = GrpcClientConfig { url: format!("http://{}", self.server.local_addr()), max_message_bytes: 64 << 20, ..Default::default() };
        transport::learner_client(transport::connect(&cfg).await.unwrap(), &cfg).unwrap()
    }
}

fn leases(heartbeat_ms: u64) -> LeaseConfig {
    LeaseConfig {
        prompts_per_lease: 2,
        heartbeat_interval_ms: heartbeat_ms,
        worker_timeout_ms: 3 * heartbeat_ms,
        max_workers: 3,
        max_leases_per_worker: 1,
        max_prompt_failures: 2,
        no_worker_alert_ms: 300,
        ..Default::default()
    }
}

async fn register(c: &mut LearnerClient<AuthChannel>, name: &str) -> u64 {
    let r = pb::RegisterRequest { name: name.into(), device: "cpu".into(), capabilities: vec![], max_sequences: 0 };
    c.register(r).await.unwrap().into_inner().worker_id
}

async fn lease(c: &mut LearnerClient<AuthChannel>, worker_id: u64) -> Option<pb::Lease> {
    match c.lease_work(pb::LeaseWorkRequest { worker_id, max_prompts: 0 }).await.unwrap().into_inner().outcome.unwrap() {
        pb::lease_work_response::Outcome::Lease(l) => Some(l),
        pb::lease_work_response::Outcome::NoWork(_) => None,
    }
}

async fn heartbeat(c: &mut LearnerClient<AuthChannel>, worker_id: u64, lease_id: u64) {
    c.heartbeat(pb::HeartbeatRequest { worker_id, lease_id, ..Default::default() }).await.unwrap();
}

async fn status(c: &mut LearnerClient<AuthChannel>) -> pb::LearnerStatus {
    c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner()
}

fn submission(worker_id: u64, lease: &pb::Lease, reward: f64) -> pb::SubmitGroupsRequest {
    let completion = || pb::CompletionResult {
        token_ids: vec![1, 2, 3],
        logprobs: vec![-0.5; 3],
        finish_reason: pb::FinishReason::Eos as i32,
        rewards: vec![pb::RewardComponent { name: "format".into(), score: 1.0 }],
        total_reward: reward,
    };
    pb::SubmitGroupsRequest {
        lease_id: lease.lease_id,
        worker_id,
        adapter_version: lease.adapter_version,
        groups: lease
            .prompts
            .iter()
            .map(|p| pb::GroupResult { prompt_id: p.prompt_id.clone(), completions: (0..GROUP).map(|_| completion()).collect() })
            .collect(),
        timings: None,
    }
}

/// A worker that stops heartbeating loses its lease after three heartbeat intervals, although
/// the lease timeout (600 s) is far off; one that keeps heartbeating keeps it.
#[tokio::test]
async fn leases_follow_heartbeats() {
    let hb = 150;
    let l = start(leases(hb), 4, None).await;
    let mut c = l.client().await;
    let (alive, dead, spare) = (register(&mut c, "alive").await, register(&mut c, "dead").await, register(&mut c, "spare").await);
    let la = lease(&mut c, alive).await.unwrap();
    let ld = lease(&mut c, dead).await.unwrap();
    let killed = Instant::now();
    // `alive` heartbeats naming its lease; `dead` is silent from now on.
    let relet = loop {
        heartbeat(&mut c, alive, la.lease_id).await;
        heartbeat(&mut c, spare, 0).await;
        if let Some(got) = lease(&mut c, spare).await {
            break got;
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "the silent worker's lease was never re-queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = killed.elapsed();
    assert!(waited >= Duration::from_millis(3 * hb) && waited < Duration::from_millis(3 * hb + 400), "{waited:?}");
    assert_eq!(relet.prompts.iter().map(|p| &p.prompt_id).collect::<Vec<_>>(), ld.prompts.iter().map(|p| &p.prompt_id).collect::<Vec<_>>());
    let s = status(&mut c).await;
    assert_eq!(s.expired_leases, 1);
    assert!(!s.workers.iter().any(|w| w.worker_id == dead), "the silent worker is dropped");
    // The live worker's lease outlived the dead one's by far, and still counts.
    let r = c.submit_groups(submission(alive, &la, 1.0)).await.unwrap().into_inner();
    assert_eq!(r.accepted, 2);
    // The dead worker comes back: told to register again.
    let e = c.submit_groups(submission(dead, &ld, 1.0)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().starts_with("worker_id"), "{}", e.message());
}

/// A lease its (live) worker never names in a heartbeat — a LeaseWork reply lost on the way —
/// is re-queued after the same three intervals.
#[tokio::test]
async fn a_lease_the_worker_never_received_is_requeued() {
    let hb = 150;
    let l = start(leases(hb), 2, None).await;
    let mut c = l.client().await;
    let w = register(&mut c, "w").await;
    let lost = lease(&mut c, w).await.unwrap();
    let t0 = Instant::now();
    let again = loop {
        heartbeat(&mut c, w, 0).await;
        // The cap of one lease per worker holds while the lost one is active.
        match c.lease_work(pb::LeaseWorkRequest { worker_id: w, max_prompts: 0 }).await {
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message()),
            Ok(r) => match r.into_inner().outcome.unwrap() {
                pb::lease_work_response::Outcome::Lease(l) => break l,
                pb::lease_work_response::Outcome::NoWork(_) => {}
            },
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the unclaimed lease never expired");
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    assert!(t0.elapsed() >= Duration::from_millis(3 * hb), "{:?}", t0.elapsed());
    assert_ne!(again.lease_id, lost.lease_id);
    assert_eq!(again.prompts.len(), 2);
}

/// Given-back prompts are re-queued at once with their reason counted; a prompt that keeps
/// failing is abandoned so the phase can end; absurd rewards are refused and re-queued.
#[tokio::test]
async fn returns_rejections_and_abandoned_prompts() {
    let l = start(leases(1000), 2, None).await;
    let mut c = l.client().await;
    let w = register(&mut c, "w").await;

    let first = lease(&mut c, w).await.unwrap();
    let ret = |lease: &pb::Lease, reason: pb::ReturnReason| pb::ReturnPromptsRequest {
        worker_id: w,
        lease_id: lease.lease_id,
        prompts: vec![pb::PromptReturn { prompt_id: lease.prompts[0].prompt_id.clone(), reason: reason as i32, message: "x".repeat(5000) }],
    };
    let r = c.return_prompts(ret(&first, pb::ReturnReason::EngineError)).await.unwrap().into_inner();
    assert_eq!((r.requeued, r.abandoned, r.ignored), (1, 0, 0));
    let r = c.return_prompts(ret(&first, pb::ReturnReason::EngineError)).await.unwrap().into_inner();
    assert_eq!((r.requeued, r.ignored), (0, 1), "a repeated return changes nothing");
    let s = status(&mut c).await;
    assert_eq!((s.returned_prompts, s.prompts_pending, s.prompts_leased), (1, 1, 1));
    assert_eq!(s.returns_by_reason.get("engine_error"), Some(&1));
    assert!(s.last_failure.contains("engine_error") && s.last_failure.len() < 1200, "message cut to 1 KiB: {}", s.last_failure.len());

    // Rewards beyond the bound (10 here; ±1e308 is the attack): INVALID_ARGUMENT naming the
    // field and the bound; the lease's prompts go back to the queue at once.
    let e = c.submit_groups(submission(w, &first, 1e308)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("total_reward") && e.message().contains("reward.max_abs"), "{}", e.message());
    let mut bad_component = submission(w, &first, 1.0);
    bad_component.groups[0].completions[0].rewards[0].score = -1e308;
    assert_eq!(c.submit_groups(bad_component).await.unwrap_err().code(), Code::InvalidArgument);
    let s = status(&mut c).await;
    assert_eq!((s.prompts_pending, s.prompts_leased, s.abandoned_prompts), (2, 0, 0), "{s:?}");
    assert_eq!(s.rejected_groups, 4, "every group of both rejected submissions");
    assert!(l.rx.try_recv().is_err());

    // p0 has failed once (returned), p1 once (held when the first submission was rejected).
    // A second failure of p0 reaches max_prompt_failures = 2: abandoned, never leased again.
    let next = lease(&mut c, w).await.unwrap();
    assert_eq!(next.prompts[0].prompt_id, first.prompts[0].prompt_id);
    let r = c.return_prompts(ret(&next, pb::ReturnReason::RewardError)).await.unwrap().into_inner();
    assert_eq!((r.requeued, r.abandoned), (0, 1));
    assert_eq!(l.handle.take_abandoned(), vec![first.prompts[0].prompt_id.clone()]);
    let r = c.submit_groups(submission(w, &next, 2.5)).await.unwrap().into_inner();
    assert_eq!((r.accepted, r.duplicates), (1, 1), "a late group of an abandoned prompt is not counted");
    let s = status(&mut c).await;
    assert_eq!((s.prompts_completed, s.abandoned_prompts, s.prompts_pending), (1, 1, 0));
    assert_eq!(s.returns_by_reason.get("reward_error"), Some(&1));
    assert!(lease(&mut c, w).await.is_none(), "the phase is over");
    assert_eq!(l.rx.try_iter().count(), 1);
}

/// With no live worker for `no_worker_alert_ms`, status says so (and keeps the phase).
#[tokio::test]
async fn a_phase_without_workers_is_reported_not_lost() {
    let l = start(leases(100), 2, None).await;
    let mut c = l.client().await;
    let s = status(&mut c).await;
    assert!(s.warning.is_empty(), "{}", s.warning);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let s = status(&mut c).await;
    assert!(s.warning.contains("no rollout worker alive"), "{s:?}");
    assert!(s.no_worker_ms >= 300 && s.prompts_pending == 2, "{s:?}");
    assert!(l.handle.workers_absent().unwrap() >= Duration::from_millis(300));
    let w = register(&mut c, "late").await;
    let s = status(&mut c).await;
    assert!(s.warning.is_empty() && s.no_worker_ms == 0, "{s:?}");
    assert_eq!(lease(&mut c, w).await.unwrap().prompts.len(), 2, "nothing was lost meanwhile");
}

/// Oversized requests of every RPC get the right status and change nothing; the server stays up.
#[tokio::test]
async fn oversized_requests_are_refused_by_name() {
    // 6 prompts: each of the 3 workers' fair share is 2.
    let l = start(leases(1000), 6, Some(Sink { fail: false })).await;
    let mut c = l.client().await;
    let reg = |name: String, device: &str, caps: Vec<String>| pb::RegisterRequest { name, device: device.into(), capabilities: caps, max_sequences: 0 };
    for (r, field) in [
        (reg("n".repeat(1 << 20), "cpu", vec![]), "name"),
        (reg("w".into(), &"c".repeat(1 << 20), vec![]), "device"),
        (reg("w".into(), "cpu", vec!["f".into(); 100_000]), "capabilities"),
        (reg("w".into(), "cpu", vec!["f".repeat(1 << 20)]), "capabilities[0]"),
    ] {
        let e = c.register(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert!(e.message().starts_with(field) && e.message().len() < 300, "{field}: {}", &e.message()[..e.message().len().min(300)]);
    }
    // Registrations beyond max_workers (3).
    for i in 0..3 {
        register(&mut c, &format!("w{i}")).await;
    }
    let e = c.register(reg("w4".into(), "cpu", vec![])).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("leases.max_workers"), "{}", e.message());
    let w = status(&mut c).await.workers[0].worker_id;

    // Heartbeat naming more leases than a worker may hold.
    let e = c.heartbeat(pb::HeartbeatRequest { worker_id: w, lease_ids: vec![1; 1000], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // LeaseWork asking for 4 billion prompts gets its fair share (2 of 6 among 3 workers).
    let big = c.lease_work(pb::LeaseWorkRequest { worker_id: w, max_prompts: u32::MAX }).await.unwrap().into_inner();
    let Some(pb::lease_work_response::Outcome::Lease(ls)) = big.outcome else { panic!("no lease") };
    assert_eq!(ls.prompts.len(), 2);
    // SubmitGroups: too many reward components, too long a name, over the message size.
    let mut r = submission(w, &ls, 1.0);
    r.groups[0].completions[0].rewards = vec![pb::RewardComponent { name: "c".into(), score: 0.0 }; 100_000];
    let e = c.submit_groups(r).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("rewards"), "{}", e.message());
    let mut r = submission(w, &ls, 1.0);
    r.groups[0].completions[0].rewards[0].name = "n".repeat(1 << 20);
    let e = c.submit_groups(r).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("rewards[0].name") && e.message().len() < 300, "{}", e.message().len());
    let mut r = submission(w, &ls, 1.0);
    r.groups[0].completions[0].token_ids = vec![999; 9_000_000];
    assert_eq!(c.submit_groups(r).await.unwrap_err().code(), Code::OutOfRange);
    // ReturnPrompts with more entries than the lease has prompts.
    let many = pb::ReturnPromptsRequest {
        worker_id: w,
        lease_id: ls.lease_id,
        prompts: vec![pb::PromptReturn { prompt_id: "p0".into(), reason: 1, message: String::new() }; 10_000],
    };
    assert_eq!(c.return_prompts(many).await.unwrap_err().code(), Code::InvalidArgument);
    // FetchAdapter of a version never published.
    let e = c.fetch_adapter(pb::FetchAdapterRequest { worker_id: w, version: u64::MAX }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // AddExamples: over the line cap; at the cap every rejection is counted, 100 are listed.
    let e = c.add_examples(pb::AddExamplesRequest { jsonl: "{}\n".repeat(MAX_ADD_EXAMPLES_LINES + 1) }).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("lines exceed"), "{}", e.message());
    let r = c.add_examples(pb::AddExamplesRequest { jsonl: "{}\n".repeat(MAX_ADD_EXAMPLES_LINES) }).await.unwrap().into_inner();
    assert_eq!((r.rejected.len(), r.rejected_total as usize), (MAX_REJECTIONS_LISTED, MAX_ADD_EXAMPLES_LINES));

    // Still up and serving. The two refused submissions (INVALID_ARGUMENT; the oversized one
    // never reached the service) re-queued the lease's prompts; a valid answer still counts.
    let s = status(&mut c).await;
    assert_eq!((s.prompts_pending, s.rejected_groups, s.workers.len()), (6, 4, 3), "{s:?}");
    let r = c.submit_groups(submission(w, &ls, 1.0)).await.unwrap().into_inner();
    assert_eq!(r.accepted, 2);
    assert_eq!(l.rx.try_iter().count(), 2);
}

/// An append that fails (disk full) is an error status, never an OK with a rejected line.
#[tokio::test]
async fn a_failed_append_is_an_error_status() {
    let l = start(leases(1000), 1, Some(Sink { fail: true })).await;
    let mut c = l.client().await;
    let e = c.add_examples(pb::AddExamplesRequest { jsonl: "{}".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("nothing appended") && e.message().contains("No space"), "{}", e.message());
}
