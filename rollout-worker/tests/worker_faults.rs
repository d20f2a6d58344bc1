//! A rollout worker against a real in-process learner, under per-prompt faults: an engine error,
//! an engine panic, a reward plug-in returning absurd scores, an adapter the engine refuses.
//! The worker lives through all of them and the learner hears why each prompt came back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asrl_common::config::{GrpcClientConfig, GrpcServerConfig, LeaseConfig, SamplingParams};
use asrl_common::reward::Reward;
use asrl_common::rollout::{AdapterVersion, ExampleKind, GroupScoreError, GroupScorer, PromptWork, RolloutGroup};
use asrl_common::sample::{Completion, FinishReason};
use asrl_learner::service::{new_learner, serve_learner, LearnerHandle, ServiceOptions};
use asrl_proto::v1 as pb;
use asrl_rollout_worker::engine::{EngineError, RolloutEngine};
use asrl_rollout_worker::status::WorkerStatusHandle;
use asrl_rollout_worker::worker::{run_worker, WorkerOptions};

const VOCAB: u32 = 500;
const GROUP: usize = 3;

/// What goes wrong, by prompt id, and how often.
#[derive(Default)]
struct Faults {
    /// Prompt ids whose next sampling fails with an error (each once).
    error_once: HashSet<String>,
    /// Prompt ids whose next sampling panics (each once).
    panic_once: HashSet<String>,
    /// Adapter loads to refuse before accepting.
    refuse_loads: usize,
}

struct FaultyEngine {
    faults: Arc<Mutex<Faults>>,
}

impl RolloutEngine for FaultyEngine {
    fn load_adapter(&mut self, version: AdapterVersion, _safetensors: &[u8]) -> Result<(), EngineError> {
        let mut f = self.faults.lock().unwrap();
        if f.refuse_loads > 0 {
            f.refuse_loads -= 1;
            return Err(format!("cannot merge adapter version {}: shape mismatch", version.get()).into());
        }
        Ok(())
    }

    fn sample_group(&mut self, prompt: &PromptWork, params: &SamplingParams) -> Result<Vec<Completion>, EngineError> {
        let (error, panic) = {
            let mut f = self.faults.lock().unwrap();
            (f.error_once.remove(&prompt.prompt_id), f.panic_once.remove(&prompt.prompt_id))
        };
        if error {
            return Err("CUDA error: an illegal memory access was encountered".into());
        }
        if panic {
            panic!("index out of bounds in the sampler");
        }
        Ok((0..params.n)
            .map(|j| Completion {
                tokens: vec![1 + j as u32, 2, 3],
                logprobs: vec![-0.5; 3],
                text: format!("answer {j}"),
                finish: FinishReason::Eos,
            })
            .collect())
    }
}

/// A reward plug-in gone wrong on one prompt: finite but absurd scores.
struct AbsurdOn(String);
impl GroupScorer for AbsurdOn {
    fn score_group(&self, prompt: &PromptWork, completions: &[Completion]) -> Result<Vec<Reward>, GroupScoreError> {
        let big = prompt.prompt_id == self.0;
        Ok(completions
            .iter()
            .enumerate()
            .map(|(j, _)| {
                let total = if big { [1e308, -1e308, 0.0][j % 3] } else { j as f64 };
                Reward { total, components: [("plugin".into(), total)].into() }
            })
            .collect())
    }
}

fn prompts(n: usize) -> Vec<PromptWork> {
    (0..n)
        .map(|i| PromptWork {
            prompt_id: format!("q{i}"),
            prompt_tokens: Arc::from(vec![10u32 + i as u32, 20]),
            prompt_text: format!("question {i}"),
            ground_truth: String::new(),
            kind: ExampleKind::Open,
            example_type: String::new(),
        })
        .collect()
}

struct Setup {
    handle: LearnerHandle,
    rx: crossbeam_channel::Receiver<RolloutGroup>,
    url: String,
    server: asrl_common::transport::RunningServer,
}

async fn learner(n: usize) -> Setup {
    let leases = LeaseConfig { prompts_per_lease: 2, heartbeat_interval_ms: 100, worker_timeout_ms: 1000, no_work_retry_ms: 20, ..Default::default() };
    let (service, handle, rx) = new_learner(ServiceOptions::new(leases, VOCAB), None);
    handle.publish_adapter(AdapterVersion::new(1), vec![3u8; 1000]).unwrap();
    handle.start_phase(prompts(n), SamplingParams { n: GROUP, max_new_tokens: 8, ..Default::default() }).unwrap();
    let server = serve_learner(&GrpcServerConfig { bind: ([127, 0, 0, 1], 0).into(), ..Default::default() }, service).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    Setup { handle, rx, url, server }
}

fn opts(url: &str) -> WorkerOptions {
    WorkerOptions {
        client: GrpcClientConfig { url: url.into(), backoff_initial_ms: 20, backoff_max_ms: 200, ..Default::default() },
        name: "w".into(),
        device: "cpu".into(),
        capabilities: vec![],
        max_prompts: 0,
        max_sequences: 0,
    }
}

async fn status(url: &str) -> pb::LearnerStatus {
    let cfg = GrpcClientConfig { url: url.into(), ..Default::default() };
    let mut c = asrl_common::transport::learner_client(asrl_common::transport::connect(&cfg).await.unwrap(), &cfg).unwrap();
    c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner()
}

/// Waits until every prompt is completed or abandoned; the worker must still be running.
async fn finish(s: &Setup, worker: &tokio::task::JoinHandle<Result<(), asrl_rollout_worker::worker::WorkerError>>, n: u64) {
    let t0 = Instant::now();
    loop {
        let c = s.handle.phase_counters();
        if c.completed + c.abandoned == n {
            return;
        }
        assert!(!worker.is_finished(), "the worker exited: {:?}", c);
        assert!(t0.elapsed() < Duration::from_secs(30), "phase not done: {c:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_and_panics_give_the_prompt_back_and_the_worker_goes_on() {
    let n = 6;
    let s = learner(n).await;
    let faults = Arc::new(Mutex::new(Faults {
        error_once: ["q1".to_string()].into(),
        panic_once: ["q4".to_string()].into(),
        refuse_loads: 1,
    }));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let ws = WorkerStatusHandle::new("w", "cpu", &s.url);
    let worker = tokio::spawn(run_worker(opts(&s.url), FaultyEngine { faults: faults.clone() }, Arc::new(AbsurdOn(String::new())), ws.clone(), stop_rx));
    finish(&s, &worker, n as u64).await;

    // Every prompt trained on exactly once, including the ones that failed first.
    let groups: Vec<_> = s.rx.try_iter().collect();
    let ids: HashSet<_> = groups.iter().map(|g| g.prompt_id.as_str()).collect();
    assert_eq!((groups.len(), ids.len()), (n, n));
    let st = status(&s.url).await;
    // One error and one panic: both reported as engine errors, the engine kept.
    assert_eq!(st.returns_by_reason.get("engine_error"), Some(&2), "{st:?}");
    // The refused adapter gave the first lease (2 prompts) back.
    assert_eq!(st.returns_by_reason.get("adapter_unavailable"), Some(&2), "{st:?}");
    assert_eq!((st.returned_prompts, st.abandoned_prompts), (4, 0));
    assert_eq!(ws.snapshot().prompts_returned, 4);

    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    s.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_plugin_rewards_are_given_back_never_submitted() {
    let n = 4;
    let s = learner(n).await;
    let faults = Arc::new(Mutex::new(Faults::default()));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let ws = WorkerStatusHandle::new("w", "cpu", &s.url);
    let worker = tokio::spawn(run_worker(opts(&s.url), FaultyEngine { faults }, Arc::new(AbsurdOn("q2".into())), ws, stop_rx));
    finish(&s, &worker, n as u64).await;

    // q2 scores absurdly every time: given back until abandoned (3 failures); the rest train.
    let groups: Vec<_> = s.rx.try_iter().collect();
    assert_eq!(groups.len(), n - 1);
    assert!(groups.iter().all(|g| g.prompt_id != "q2" && g.completions.iter().all(|c| c.reward.total.abs() <= 1000.0)));
    let st = status(&s.url).await;
    assert_eq!(st.returns_by_reason.get("reward_out_of_bounds"), Some(&3), "{st:?}");
    assert_eq!((st.abandoned_prompts, st.rejected_groups), (1, 0), "the worker never submitted them");
    assert_eq!(s.handle.take_abandoned(), vec!["q2".to_string()]);
    assert!(st.last_failure.contains("outside ±1000"), "{}", st.last_failure);

    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    s.server.shutdown().await.unwrap();
}
