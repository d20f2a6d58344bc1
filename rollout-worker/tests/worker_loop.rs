//! Two rollout workers against a real in-process learner: one is killed mid-lease, its prompts
//! are re-leased after the deadline, and every group reaches the training side exactly once.
//! Then the learner restarts on the same port and the surviving worker reconnects.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use asrl_common::config::{GrpcClientConfig, GrpcServerConfig, LeaseConfig, SamplingParams};
use asrl_common::reward::Reward;
use asrl_common::rollout::{AdapterVersion, ExampleKind, GroupScoreError, GroupScorer, PromptWork};
use asrl_common::sample::{Completion, FinishReason};
use asrl_learner::service::{new_learner, serve_learner, ServiceOptions};
use asrl_rollout_worker::engine::{EngineError, RolloutEngine};
use asrl_rollout_worker::status::{serve_worker_status, WorkerStatusHandle};
use asrl_rollout_worker::worker::{run_worker, WorkerOptions};

const VOCAB: u32 = 500;
const GROUP: usize = 6;

/// Deterministic fake model. With `hang` set, the first group blocks until `release`.
struct FakeEngine {
    loaded: Arc<Mutex<Vec<(AdapterVersion, usize)>>>,
    hang: Option<(mpsc::Sender<()>, Arc<AtomicBool>)>,
}

impl RolloutEngine for FakeEngine {
    fn load_adapter(&mut self, version: AdapterVersion, safetensors: &[u8]) -> Result<(), EngineError> {
        self.loaded.lock().unwrap().push((version, safetensors.len()));
        Ok(())
    }

    fn sample_group(&mut self, prompt: &PromptWork, params: &SamplingParams) -> Result<Vec<Completion>, EngineError> {
        if let Some((started, release)) = self.hang.take() {
            let _ = started.send(());
            let t0 = Instant::now();
            while !release.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok((0..params.n)
            .map(|j| {
                let tokens: Vec<u32> = prompt.prompt_tokens.iter().map(|t| (t + j as u32 + params.seed as u32) % VOCAB).collect();
                Completion {
                    logprobs: vec![-0.25; tokens.len()],
                    text: format!("answer {j}"),
                    tokens,
                    finish: FinishReason::Eos,
                }
            })
            .collect())
    }
}

struct LengthReward;
impl GroupScorer for LengthReward {
    fn score_group(&self, _prompt: &PromptWork, completions: &[Completion]) -> Result<Vec<Reward>, GroupScoreError> {
        Ok(completions
            .iter()
            .map(|c| Reward { total: c.text.len() as f64, components: [("length".into(), c.text.len() as f64)].into() })
            .collect())
    }
}

fn prompts(n: usize) -> Vec<PromptWork> {
    (0..n)
        .map(|i| PromptWork {
            prompt_id: format!("q{i}"),
            prompt_tokens: Arc::from(vec![10u32 + i as u32, 20, 30]),
            prompt_text: format!("question {i}"),
            ground_truth: i.to_string(),
            kind: ExampleKind::Verifiable,
            example_type: String::new(),
        })
        .collect()
}

fn worker_opts(url: &str, name: &str) -> WorkerOptions {
    WorkerOptions {
        client: GrpcClientConfig { url: url.into(), backoff_initial_ms: 20, backoff_max_ms: 200, ..Default::default() },
        name: name.into(),
        device: "cpu".into(),
        capabilities: vec![],
        max_prompts: 0,
        max_sequences: 0,
    }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_finish_a_phase_despite_one_dying_mid_lease() {
    let n_prompts = 12;
    let leases = LeaseConfig {
        prompts_per_lease: 2,
        lease_timeout_ms: 800,
        heartbeat_interval_ms: 100,
        no_work_retry_ms: 20,
        ..Default::default()
    };
    let (service, handle, rx) = new_learner(ServiceOptions::new(leases, VOCAB), None);
    handle.publish_adapter(AdapterVersion::new(1), vec![7u8; 3 << 20]).unwrap();
    handle.start_phase(prompts(n_prompts), SamplingParams { n: GROUP, max_new_tokens: 16, ..Default::default() }).unwrap();
    let server_cfg = GrpcServerConfig { bind: ([127, 0, 0, 1], 0).into(), ..Default::default() };
    let server = serve_learner(&server_cfg, service.clone()).await.unwrap();
    let url = format!("http://{}", server.local_addr());

    // Worker A takes a lease, then hangs in generation and is killed.
    let (started_tx, started_rx) = mpsc::channel();
    let release = Arc::new(AtomicBool::new(false));
    let a_engine = FakeEngine { loaded: Default::default(), hang: Some((started_tx, release.clone())) };
    let (_a_stop, a_rx) = tokio::sync::watch::channel(false);
    let a_status = WorkerStatusHandle::new("a", "cpu", &url);
    let a = tokio::spawn(run_worker(worker_opts(&url, "a"), a_engine, Arc::new(LengthReward), a_status.clone(), a_rx));
    tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("worker a starts generating");
    let a_lease = a_status.snapshot().current_lease_id;
    assert_ne!(a_lease, 0);
    a.abort();

    // Worker B does the rest, including a's prompts once a's lease expires.
    let b_loaded = Arc::new(Mutex::new(Vec::new()));
    let b_engine = FakeEngine { loaded: b_loaded.clone(), hang: None };
    let (b_stop, b_rx) = tokio::sync::watch::channel(false);
    let b_status = WorkerStatusHandle::new("b", "cpu", &url);
    let status_server = serve_worker_status(&server_cfg, b_status.clone()).await.unwrap();
    let b = tokio::spawn(run_worker(worker_opts(&url, "b"), b_engine, Arc::new(LengthReward), b_status.clone(), b_rx));

    wait_until("the phase to complete", Duration::from_secs(30), || handle.phase_counters().completed == n_prompts as u64).await;
    let counters = handle.phase_counters();
    assert!(counters.expired_leases >= 1, "a's lease must have expired: {counters:?}");

    let groups: Vec<_> = rx.try_iter().collect();
    let ids: HashSet<_> = groups.iter().map(|g| g.prompt_id.clone()).collect();
    assert_eq!(groups.len(), n_prompts, "every group exactly once");
    assert_eq!(ids.len(), n_prompts);
    for g in &groups {
        assert_eq!(g.completions.len(), GROUP);
        assert_eq!(g.adapter_version, AdapterVersion::new(1));
        assert!(g
            .completions
            .iter()
            .all(|c| c.completion.tokens.len() == c.completion.logprobs.len() && c.reward.total == 8.0));
    }
    assert_eq!(&*b_loaded.lock().unwrap(), &[(AdapterVersion::new(1), 3 << 20)], "adapter fetched once and cached");

    // The worker's own status endpoint reports its progress.
    let cfg = GrpcClientConfig { url: format!("http://{}", status_server.local_addr()), ..Default::default() };
    let mut wc = asrl_common::transport::worker_client(asrl_common::transport::connect(&cfg).await.unwrap(), &cfg).unwrap();
    let st = wc.get_status(asrl_proto::v1::WorkerStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.name.as_str(), st.adapter_version), ("b", 1));
    assert!(st.groups_completed >= 6, "{st:?}");

    // Learner restart on the same port: the worker reconnects, re-registers, fetches the new
    // adapter and finishes the new phase.
    let addr = server.local_addr();
    server.abort();
    let (service2, handle2, rx2) = new_learner(
        ServiceOptions::new(LeaseConfig { prompts_per_lease: 2, no_work_retry_ms: 20, ..Default::default() }, VOCAB),
        None,
    );
    handle2.publish_adapter(AdapterVersion::new(5), vec![1u8; 100]).unwrap();
    handle2.start_phase(prompts(4), SamplingParams { n: GROUP, max_new_tokens: 16, ..Default::default() }).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server2 = serve_learner(&GrpcServerConfig { bind: addr, ..Default::default() }, service2).await.unwrap();
    wait_until("the second phase", Duration::from_secs(30), || handle2.phase_counters().completed == 4).await;
    assert_eq!(rx2.try_iter().count(), 4);
    assert_eq!(b_loaded.lock().unwrap().last(), Some(&(AdapterVersion::new(5), 100)));

    b_stop.send(true).unwrap();
    b.await.unwrap().unwrap();
    release.store(true, Ordering::SeqCst);
    server2.shutdown().await.unwrap();
    status_server.shutdown().await.unwrap();
}
