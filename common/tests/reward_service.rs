//! The `service` reward component against an in-test `asrl.v1.RewardService` (the project's own
//! gRPC server builder, auth included): scores used, one call per group, auth, retries,
//! deadlines, a service that is down, malformed answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asrl_common::config::{GrpcServerConfig, RewardConfig};
use asrl_common::reward::{RewardScorer, ServiceParams, ServiceReward};
use asrl_common::rollout::{ExampleKind, GroupScorer, PromptWork};
use asrl_common::sample::{Completion, FinishReason};
use asrl_common::transport::{self, RunningServer};
use asrl_proto::v1 as pb;
use asrl_proto::v1::reward_service_server::{RewardService, RewardServiceServer};
use tonic::{Request, Response, Status};

/// What the fake service does with the next calls.
#[derive(Default)]
struct Behaviour {
    /// Answer this many calls with UNAVAILABLE first.
    unavailable: usize,
    /// Sleep this long before answering.
    delay: Duration,
    /// Answer one score too few.
    short: bool,
    /// Answer a NaN total.
    nan: bool,
}

#[derive(Clone, Default)]
struct Fake {
    behaviour: Arc<Mutex<Behaviour>>,
    requests: Arc<Mutex<Vec<pb::ScoreRequest>>>,
}

#[tonic::async_trait]
impl RewardService for Fake {
    /// Each completion scores its length in characters, with a `len` part and a `vowels` part.
    async fn score(&self, request: Request<pb::ScoreRequest>) -> Result<Response<pb::ScoreResponse>, Status> {
        let req = request.into_inner();
        self.requests.lock().unwrap().push(req.clone());
        let (delay, short, nan) = {
            let mut b = self.behaviour.lock().unwrap();
            if b.unavailable > 0 {
                b.unavailable -= 1;
                return Err(Status::unavailable("warming up"));
            }
            (b.delay, b.short, b.nan)
        };
        tokio::time::sleep(delay).await;
        let mut scores: Vec<pb::CompletionScore> = req
            .completions
            .iter()
            .map(|c| pb::CompletionScore {
                total: if nan { f64::NAN } else { c.chars().count() as f64 },
                components: vec![
                    pb::ComponentScore { name: "len".into(), score: c.chars().count() as f64 },
                    pb::ComponentScore { name: "vowels".into(), score: c.chars().filter(|ch| "aeiou".contains(*ch)).count() as f64 },
                ],
            })
            .collect();
        if short {
            scores.pop();
        }
        Ok(Response::new(pb::ScoreResponse { scores }))
    }
}

/// The fake service on its own runtime (the scorer has its own; the test thread is neither).
struct Served {
    fake: Fake,
    addr: SocketAddr,
    server: Option<RunningServer>,
    rt: tokio::runtime::Runtime,
}

impl Served {
    fn start(bind: SocketAddr, token: Option<&str>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let fake = Fake::default();
        let cfg = GrpcServerConfig { bind, auth_token: token.map(str::to_string), ..Default::default() };
        let routes = tonic::service::Routes::new(RewardServiceServer::new(fake.clone()));
        let server = rt
            .block_on(transport::serve(&cfg, routes, &[asrl_proto::FILE_DESCRIPTOR_SET], &["asrl.v1.RewardService"]))
            .unwrap();
        Self { fake, addr: server.local_addr(), server: Some(server), rt }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.fake.behaviour.lock().unwrap());
    }

    fn requests(&self) -> Vec<pb::ScoreRequest> {
        self.fake.requests.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = self.rt.block_on(s.shutdown_within(Duration::from_secs(1)));
        }
    }
}

fn scorer(toml_text: &str) -> RewardScorer {
    let cfg: RewardConfig = toml::from_str(toml_text).unwrap();
    RewardScorer::from_config(&cfg).unwrap()
}

fn service_only(url: &str, extra: &str) -> RewardScorer {
    scorer(&format!("[[components]]\nname = \"service\"\nparams = {{ url = \"{url}\"{extra} }}\n"))
}

fn prompt(id: &str) -> PromptWork {
    PromptWork {
        prompt_id: id.into(),
        prompt_tokens: Arc::from(vec![1u32]),
        prompt_text: "User: spell a word".into(),
        ground_truth: "ok".into(),
        kind: ExampleKind::Verifiable,
        example_type: "spelling".into(),
    }
}

fn completions(texts: &[&str]) -> Vec<Completion> {
    texts
        .iter()
        .map(|t| Completion { tokens: vec![1, 2], logprobs: vec![-0.5; 2], text: t.to_string(), finish: FinishReason::Eos })
        .collect()
}

#[test]
fn scores_come_from_the_service_once_per_group_weighted_beside_local_components() {
    let served = Served::start("127.0.0.1:0".parse().unwrap(), None);
    let s = scorer(&format!(
        "[[components]]\nname = \"service\"\nweight = 0.5\nparams = {{ url = \"{}\" }}\n\
         [[components]]\nname = \"regex\"\nweight = 1.0\nparams = {{ pattern = \"^a\" }}\n",
        served.url()
    ));
    let rewards = s.score_group(&prompt("e1-q3"), &completions(&["abc", "hello", "a"])).unwrap();
    let totals: Vec<f64> = rewards.iter().map(|r| r.total).collect();
    // regex: +1 on a match, -1 otherwise.
    assert_eq!(totals, vec![0.5 * 3.0 + 1.0, 0.5 * 5.0 - 1.0, 0.5 * 1.0 + 1.0]);
    assert_eq!(rewards[1].components["service"], 5.0);
    assert_eq!(rewards[1].components["service.len"], 5.0);
    assert_eq!(rewards[1].components["service.vowels"], 2.0);
    assert_eq!(rewards[1].components["regex"], -1.0);

    let reqs = served.requests();
    assert_eq!(reqs.len(), 1, "one call for the whole group");
    let r = &reqs[0];
    assert_eq!(r.completions, vec!["abc", "hello", "a"]);
    assert_eq!((r.prompt_id.as_str(), r.prompt_text.as_str()), ("e1-q3", "User: spell a word"));
    assert_eq!((r.ground_truth.as_str(), r.example_type.as_str()), ("ok", "spelling"));
    assert_eq!(r.kind, pb::ExampleKind::Verifiable as i32);
}

#[test]
fn the_auth_token_is_sent_and_a_refused_one_names_the_setting() {
    let served = Served::start("127.0.0.1:0".parse().unwrap(), Some("s3cret"));
    // The token from the environment, as a deployment would keep it.
    std::env::set_var("ASRL_TEST_REWARD_SERVICE_TOKEN", "s3cret");
    let s = service_only(&served.url(), ", auth_token_env = \"ASRL_TEST_REWARD_SERVICE_TOKEN\"");
    assert_eq!(s.score_group(&prompt("p"), &completions(&["xy"])).unwrap()[0].total, 2.0);

    let wrong = service_only(&served.url(), ", auth_token = \"guess\", retries = 3");
    let err = wrong.score_group(&prompt("p7"), &completions(&["xy"])).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.prompt_id, "p7");
    assert!(msg.contains("refused the credentials") && msg.contains("(1 attempt)"), "not retried: {msg}");
    let none = service_only(&served.url(), "");
    assert!(none.score_group(&prompt("p"), &completions(&["xy"])).unwrap_err().to_string().contains("Unauthenticated"));
    assert_eq!(served.requests().len(), 1, "refused calls never reach the service");
}

#[test]
fn transient_failures_are_retried_up_to_the_limit() {
    let served = Served::start("127.0.0.1:0".parse().unwrap(), None);
    served.set(|b| b.unavailable = 2);
    let s = service_only(&served.url(), ", retries = 2, backoff_ms = 10");
    assert_eq!(s.score_group(&prompt("p"), &completions(&["abcd"])).unwrap()[0].total, 4.0);
    assert_eq!(served.requests().len(), 3);

    served.set(|b| b.unavailable = 2);
    let s = service_only(&served.url(), ", retries = 1, backoff_ms = 10");
    let msg = s.score_group(&prompt("p2"), &completions(&["abcd"])).unwrap_err().to_string();
    assert!(msg.contains("prompt p2") && msg.contains("unreachable (2 attempts)") && msg.contains("warming up"), "{msg}");
}

#[test]
fn a_missed_deadline_fails_the_prompt_and_the_scorer_recovers() {
    let served = Served::start("127.0.0.1:0".parse().unwrap(), None);
    served.set(|b| b.delay = Duration::from_secs(3));
    let s = service_only(&served.url(), ", timeout_ms = 200, retries = 1, backoff_ms = 10");
    let started = Instant::now();
    let err = s.score_group(&prompt("slow"), &completions(&["a", "b"])).unwrap_err();
    let took = started.elapsed();
    let msg = err.to_string();
    assert_eq!(err.prompt_id, "slow");
    assert!(msg.contains(&served.url()) && msg.contains("no answer within the 200 ms deadline (2 attempts)"), "{msg}");
    assert!(took < Duration::from_millis(1500), "two 200 ms attempts took {took:?}");

    served.set(|b| b.delay = Duration::ZERO);
    assert_eq!(s.score_group(&prompt("fast"), &completions(&["abc"])).unwrap()[0].total, 3.0);
}

#[test]
fn a_service_that_is_down_fails_each_prompt_and_is_picked_up_once_it_starts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let s = service_only(&url, ", retries = 1, backoff_ms = 10");
    let msg = s.score_group(&prompt("p1"), &completions(&["x"])).unwrap_err().to_string();
    assert!(msg.contains("prompt p1") && msg.contains(&url) && msg.contains("unreachable (2 attempts)"), "{msg}");

    let served = Served::start(format!("127.0.0.1:{port}").parse().unwrap(), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.score_group(&prompt("p2"), &completions(&["xyz"])) {
            Ok(r) => {
                assert_eq!(r[0].total, 3.0);
                break;
            }
            // The channel's reconnect backoff may still be running.
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the service never got picked up: {e}"),
        }
    }
    drop(served);
}

#[test]
fn malformed_answers_are_per_prompt_failures() {
    let served = Served::start("127.0.0.1:0".parse().unwrap(), None);
    let s = service_only(&served.url(), "");
    served.set(|b| b.short = true);
    let msg = s.score_group(&prompt("p"), &completions(&["a", "b"])).unwrap_err().to_string();
    assert!(msg.contains("answered 1 scores for 2 completions"), "{msg}");
    served.set(|b| (b.short, b.nan) = (false, true));
    let msg = s.score_group(&prompt("p"), &completions(&["a"])).unwrap_err().to_string();
    assert!(msg.contains("scores[0].total is NaN"), "{msg}");
}

/// Called as the worker calls it: from a blocking thread of another runtime, and from that
/// runtime's async context too, without a panic either way.
#[test]
fn works_from_inside_another_runtime_and_drops_there() {
    let served = Served::start("127.0.0.1:0".parse().unwrap(), None);
    let s = Arc::new(service_only(&served.url(), ""));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let total = rt.block_on(async {
        let blocking = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || s.score_group(&prompt("p"), &completions(&["abcde"])).unwrap()[0].total)
        };
        let direct = s.score_group(&prompt("p"), &completions(&["ab"])).unwrap()[0].total;
        let blocking = blocking.await.unwrap();
        drop(s); // the last reference, dropped in an async context
        blocking + direct
    });
    assert_eq!(total, 7.0);
}

#[test]
fn params_are_checked_when_the_worker_starts() {
    let err = |params: &str| {
        let cfg: RewardConfig = toml::from_str(&format!("[[components]]\nname = \"service\"\nparams = {{ {params} }}\n")).unwrap();
        RewardScorer::from_config(&cfg).err().expect(params).to_string()
    };
    assert!(err("timeout_ms = 5").contains("url"), "url is required");
    assert!(err("url = \"http://h:1\", timeout = 5").contains("timeout"), "unknown keys are rejected");
    assert!(err("url = \"http://h:1\", timeout_ms = 0").contains("timeout_ms"));
    assert!(err("url = \"not a url\"").contains("not a url"));
    let msg = err("url = \"http://h:1\", auth_token_env = \"ASRL_TEST_NO_SUCH_VARIABLE\"");
    assert!(msg.contains("ASRL_TEST_NO_SUCH_VARIABLE is not set"), "{msg}");
    assert!(err("url = \"http://h:1\", auth_token = \"a\", auth_token_env = \"B\"").contains("not both"));
    // The defaults, as documented.
    let p: ServiceParams = serde_json::from_value(serde_json::json!({ "url": "http://h:1" })).unwrap();
    assert_eq!((p.timeout_ms, p.retries, p.backoff_ms, p.connect_timeout_ms, p.max_message_mib), (10_000, 2, 200, 2_000, 16));
    assert!(ServiceReward::new(p).is_ok(), "a service that is not up yet is not an error at start");
}
