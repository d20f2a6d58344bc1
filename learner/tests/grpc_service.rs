//! The learner service over real loopback gRPC: reflection, health, auth, leases, validation.

use std::sync::Arc;
use std::time::Duration;

use asrl_common::config::{GrpcClientConfig, GrpcServerConfig, LeaseConfig, SamplingParams};
use asrl_common::rollout::{AdapterVersion, ExampleKind, PromptWork, RolloutGroup};
use asrl_common::transport::{self, fetch_adapter, AuthChannel, RunningServer, TransportError};
use asrl_learner::service::{new_learner, serve_learner, AddExamplesOutcome, ExampleSink, LearnerHandle, ServiceOptions, SinkError};
use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use tonic::Code;

const VOCAB: u32 = 1000;
const GROUP: usize = 3;

fn v(raw: u64) -> AdapterVersion {
    AdapterVersion::new(raw)
}

struct Learner {
    server: RunningServer,
    handle: LearnerHandle,
    rx: crossbeam_channel::Receiver<RolloutGroup>,
}

impl Learner {
    fn client_cfg(&self, token: Option<&str>) -> GrpcClientConfig {
        GrpcClientConfig {
            url: format!("http://{}", self.server.local_addr()),
            auth_token: token.map(str::to_string),
            ..Default::default()
        }
    }

    async fn client(&self, token: Option<&str>) -> LearnerClient<AuthChannel> {
        let cfg = self.client_cfg(token);
        transport::learner_client(transport::connect(&cfg).await.unwrap(), &cfg).unwrap()
    }
}

struct Sink;
impl ExampleSink for Sink {
    fn add_jsonl(&self, jsonl: &str) -> Result<AddExamplesOutcome, SinkError> {
        let mut out = AddExamplesOutcome::default();
        for (i, line) in jsonl.lines().enumerate() {
            if line.starts_with('{') {
                out.accepted += 1;
            } else {
                out.rejected.push((i as u32 + 1, "not a JSON object".into()));
            }
        }
        Ok(out)
    }
    fn dataset_size(&self) -> u64 {
        42
    }
}

fn prompts(n: usize) -> Vec<PromptWork> {
    (0..n)
        .map(|i| PromptWork {
            prompt_id: format!("p{i}"),
            prompt_tokens: Arc::from(vec![5u32, 6, i as u32]),
            prompt_text: format!("prompt {i}"),
            ground_truth: "4".into(),
            kind: ExampleKind::Verifiable,
            example_type: String::new(),
        })
        .collect()
}

async fn start(token: Option<&str>, leases: LeaseConfig, n_prompts: usize) -> Learner {
    let (service, handle, rx) = new_learner(ServiceOptions::new(leases, VOCAB), Some(Arc::new(Sink)));
    handle.publish_adapter(v(1), b"adapter v1".to_vec()).unwrap();
    let sampling = SamplingParams { n: GROUP, max_new_tokens: 8, ..Default::default() };
    handle.start_phase(prompts(n_prompts), sampling).unwrap();
    let cfg = GrpcServerConfig { bind: ([127, 0, 0, 1], 0).into(), auth_token: token.map(str::to_string), ..Default::default() };
    let server = serve_learner(&cfg, service).await.unwrap();
    Learner { server, handle, rx }
}

fn leases(timeout_ms: u64) -> LeaseConfig {
    LeaseConfig { prompts_per_lease: 2, lease_timeout_ms: timeout_ms, max_staleness: 1, ..Default::default() }
}

async fn register(c: &mut LearnerClient<AuthChannel>, name: &str) -> u64 {
    let r = pb::RegisterRequest { name: name.into(), device: "cpu".into(), capabilities: vec![], max_sequences: 0 };
    c.register(r).await.unwrap().into_inner().worker_id
}

async fn lease(c: &mut LearnerClient<AuthChannel>, worker_id: u64) -> Option<pb::Lease> {
    let r = c.lease_work(pb::LeaseWorkRequest { worker_id, max_prompts: 0 }).await.unwrap().into_inner();
    match r.outcome.unwrap() {
        pb::lease_work_response::Outcome::Lease(l) => Some(l),
        pb::lease_work_response::Outcome::NoWork(_) => None,
    }
}

fn completion(len: usize) -> pb::CompletionResult {
    pb::CompletionResult {
        token_ids: (0..len as u32).collect(),
        logprobs: vec![-0.5; len],
        finish_reason: pb::FinishReason::Eos as i32,
        rewards: vec![pb::RewardComponent { name: "format".into(), score: 1.0 }],
        total_reward: 1.0,
    }
}

fn submission(worker_id: u64, lease: &pb::Lease) -> pb::SubmitGroupsRequest {
    pb::SubmitGroupsRequest {
        lease_id: lease.lease_id,
        worker_id,
        adapter_version: lease.adapter_version,
        groups: lease
            .prompts
            .iter()
            .map(|p| pb::GroupResult { prompt_id: p.prompt_id.clone(), completions: (0..GROUP).map(|_| completion(4)).collect() })
            .collect(),
        timings: Some(pb::Timings { generation_seconds: 0.5, generated_tokens: 24 }),
    }
}

#[tokio::test]
async fn reflection_lists_services_on_v1_and_v1alpha() {
    let l = start(None, leases(60_000), 1).await;
    let channel = transport::connect(&l.client_cfg(None)).await.unwrap();

    let (v1_names, va_names) = asrl_tests::reflection_services(channel).await;
    for names in [&v1_names, &va_names] {
        for want in ["asrl.v1.Learner", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
    }
    l.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_reports_serving() {
    let l = start(None, leases(60_000), 1).await;
    let channel = transport::connect(&l.client_cfg(None)).await.unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "asrl.v1.Learner"] {
        let r = h.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status(), tonic_health::pb::health_check_response::ServingStatus::Serving, "{service:?}");
    }
    l.server.mark_not_serving().await;
    let r = h.check(tonic_health::pb::HealthCheckRequest { service: "asrl.v1.Learner".into() }).await.unwrap().into_inner();
    assert_eq!(r.status(), tonic_health::pb::health_check_response::ServingStatus::NotServing);
}

#[tokio::test]
async fn auth_token_is_required_when_configured() {
    let l = start(Some("s3cret"), leases(60_000), 1).await;
    for token in [None, Some("wrong"), Some("s3cre")] {
        let err = l.client(token).await.get_status(pb::GetStatusRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}");
    }
    // Health and reflection are behind the token too.
    let channel = transport::connect(&l.client_cfg(None)).await.unwrap();
    let err = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let status = l.client(Some("s3cret")).await.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.adapter_version, 1);
}

#[tokio::test]
async fn non_loopback_bind_needs_token_or_explicit_opt_out() {
    let (service, _h, _rx) = new_learner(ServiceOptions::new(LeaseConfig::default(), VOCAB), None);
    let cfg = GrpcServerConfig { bind: ([0, 0, 0, 0], 0).into(), ..Default::default() };
    match serve_learner(&cfg, service.clone()).await {
        Err(TransportError::Config(m)) => assert!(m.contains("without an auth token"), "{m}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("non-loopback bind without a token must be refused"),
    }
    let with_token = GrpcServerConfig { auth_token: Some("t".into()), ..cfg.clone() };
    serve_learner(&with_token, service.clone()).await.unwrap().shutdown().await.unwrap();
    let opted_out = GrpcServerConfig { insecure_no_auth: true, ..cfg };
    serve_learner(&opted_out, service).await.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn lease_expiry_relets_and_late_duplicate_counts_once() {
    let l = start(None, leases(300), 2).await;
    let mut c = l.client(None).await;
    // b registers after a's lease: a lone worker gets the whole phase (a fair share of 2).
    let a = register(&mut c, "a").await;
    let la = lease(&mut c, a).await.unwrap();
    let b = register(&mut c, "b").await;
    assert_eq!(la.prompts.len(), 2);
    assert!(lease(&mut c, b).await.is_none(), "everything is leased to a");

    tokio::time::sleep(Duration::from_millis(400)).await;
    // a is still registered, so b's leases hold its fair share: one prompt each.
    let lb = lease(&mut c, b).await.expect("a's expired prompts are re-leased");
    let lb2 = lease(&mut c, b).await.expect("a's expired prompts are re-leased");
    let mut ids: Vec<_> = lb.prompts.iter().chain(&lb2.prompts).map(|p| p.prompt_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["p0", "p1"]);

    for l in [&lb, &lb2] {
        let rb = c.submit_groups(submission(b, l)).await.unwrap().into_inner();
        assert_eq!((rb.accepted, rb.duplicates, rb.stale), (1, 0, 0));
    }
    let ra = c.submit_groups(submission(a, &la)).await.unwrap().into_inner();
    assert_eq!((ra.accepted, ra.duplicates, ra.stale), (0, 2, 0));
    let rb2 = c.submit_groups(submission(b, &lb)).await.unwrap().into_inner();
    assert_eq!((rb2.accepted, rb2.duplicates), (0, 1), "a retried submission is not counted again");

    let groups: Vec<_> = l.rx.try_iter().collect();
    assert_eq!(groups.len(), 2);
    assert!(groups.iter().all(|g| g.worker_id == b && g.completions.len() == GROUP && g.adapter_version == v(1)));
    // Each group carries the prompt tokens the learner leased (the worker does not echo them).
    for g in &groups {
        let leased = lb.prompts.iter().chain(&lb2.prompts).find(|p| p.prompt_id == g.prompt_id).unwrap();
        assert_eq!(&*g.prompt_tokens, &leased.prompt_token_ids[..]);
    }

    let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((s.prompts_completed, s.duplicate_groups, s.expired_leases, s.prompts_pending), (2, 3, 1, 0));
    assert_eq!(s.dataset_size, 42);
    let wb = s.workers.iter().find(|w| w.worker_id == b).unwrap();
    assert_eq!(wb.groups_completed, 2);
    assert!((wb.tokens_per_second - 48.0).abs() < 1e-9, "{}", wb.tokens_per_second);
}

#[tokio::test]
async fn stale_results_are_dropped_and_requeued() {
    let l = start(None, leases(60_000), 2).await;
    let mut c = l.client(None).await;
    let w = register(&mut c, "w").await;
    let old = lease(&mut c, w).await.unwrap();
    assert_eq!(old.adapter_version, 1);
    l.handle.publish_adapter(v(2), b"v2".to_vec()).unwrap();
    l.handle.publish_adapter(v(3), b"v3".to_vec()).unwrap();
    let r = c.submit_groups(submission(w, &old)).await.unwrap().into_inner();
    assert_eq!((r.accepted, r.stale), (0, 2));
    assert!(l.rx.try_recv().is_err());
    let fresh = lease(&mut c, w).await.expect("stale prompts are re-queued");
    assert_eq!(fresh.adapter_version, 3);
    let r = c.submit_groups(submission(w, &fresh)).await.unwrap().into_inner();
    assert_eq!(r.accepted, 2);
    let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((s.stale_groups, s.prompts_completed), (2, 2));
}

#[tokio::test]
async fn bad_requests_get_precise_statuses_and_change_nothing() {
    let l = start(None, leases(60_000), 2).await;
    let mut c = l.client(None).await;
    let w = register(&mut c, "w").await;
    let ls = lease(&mut c, w).await.unwrap();
    let other = register(&mut c, "other").await;

    let expect = |r: Result<tonic::Response<pb::SubmitGroupsResponse>, tonic::Status>, code: Code, needle: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(e.message().contains(needle), "{needle:?} not in {:?}", e.message());
    };

    let hb = c.heartbeat(pb::HeartbeatRequest { worker_id: 777, ..Default::default() }).await.unwrap_err();
    assert_eq!(hb.code(), Code::NotFound);
    let lw = c.lease_work(pb::LeaseWorkRequest { worker_id: 777, max_prompts: 0 }).await.unwrap_err();
    assert_eq!(lw.code(), Code::NotFound);
    let reg = c.register(pb::RegisterRequest { name: "x".into(), device: "tpu".into(), capabilities: vec![], max_sequences: 0 }).await.unwrap_err();
    assert_eq!(reg.code(), Code::InvalidArgument);

    let mut r = submission(w, &ls);
    r.worker_id = 777;
    expect(c.submit_groups(r).await, Code::NotFound, "worker_id 777");
    let mut r = submission(w, &ls);
    r.lease_id = 999_999;
    expect(c.submit_groups(r).await, Code::NotFound, "lease 999999");
    let mut r = submission(w, &ls);
    r.worker_id = other;
    expect(c.submit_groups(r).await, Code::PermissionDenied, "belongs to worker");
    let mut r = submission(w, &ls);
    r.adapter_version = 5;
    expect(c.submit_groups(r).await, Code::FailedPrecondition, "adapter version");
    let mut r = submission(w, &ls);
    r.groups[0].completions[1].logprobs.pop();
    expect(c.submit_groups(r).await, Code::InvalidArgument, "groups[0].completions[1].logprobs");
    let mut r = submission(w, &ls);
    r.groups[1].completions[0].token_ids[2] = VOCAB;
    expect(c.submit_groups(r).await, Code::InvalidArgument, "groups[1].completions[0].token_ids[2]");
    let mut r = submission(w, &ls);
    r.groups[0].completions[2].logprobs[0] = f32::NAN;
    expect(c.submit_groups(r).await, Code::InvalidArgument, "groups[0].completions[2].logprobs[0]");
    let mut r = submission(w, &ls);
    r.groups[0].completions[0].logprobs[1] = 0.5;
    expect(c.submit_groups(r).await, Code::InvalidArgument, "logprobs[1]");
    let mut r = submission(w, &ls);
    r.groups[0].completions[0].total_reward = f64::INFINITY;
    expect(c.submit_groups(r).await, Code::InvalidArgument, "groups[0].completions[0].total_reward");
    let mut r = submission(w, &ls);
    r.groups[0].completions[0].rewards[0].score = f64::NAN;
    expect(c.submit_groups(r).await, Code::InvalidArgument, "rewards[0].score");
    let mut r = submission(w, &ls);
    r.groups[0].completions.pop();
    expect(c.submit_groups(r).await, Code::InvalidArgument, "groups[0].completions");
    let mut r = submission(w, &ls);
    r.groups[1].prompt_id = "nope".into();
    expect(c.submit_groups(r).await, Code::InvalidArgument, "groups[1].prompt_id");
    let mut r = submission(w, &ls);
    r.groups[1].prompt_id = r.groups[0].prompt_id.clone();
    expect(c.submit_groups(r).await, Code::InvalidArgument, "appears twice");
    let mut r = submission(w, &ls);
    r.groups[0].completions[0] = completion(9);
    expect(c.submit_groups(r).await, Code::InvalidArgument, "max_new_tokens");
    let mut r = submission(w, &ls);
    r.groups[0].completions[0].finish_reason = 0;
    expect(c.submit_groups(r).await, Code::InvalidArgument, "finish_reason");
    let mut r = submission(w, &ls);
    r.timings.as_mut().unwrap().generation_seconds = f64::NAN;
    expect(c.submit_groups(r).await, Code::InvalidArgument, "timings.generation_seconds");

    // Larger than the server's 16 MiB decode limit (the client is allowed to send it): tonic
    // 0.14 answers OUT_OF_RANGE "decoded message length too large".
    let cfg = GrpcClientConfig { max_message_bytes: 64 << 20, ..l.client_cfg(None) };
    let mut big = transport::learner_client(transport::connect(&cfg).await.unwrap(), &cfg).unwrap();
    let mut r = submission(w, &ls);
    r.groups[0].completions[0].token_ids = vec![999; 9_000_000]; // 2-byte varints: 18 MB
    expect(big.submit_groups(r).await, Code::OutOfRange, "too large");

    let fa = c.fetch_adapter(pb::FetchAdapterRequest { worker_id: w, version: 9 }).await.unwrap_err();
    assert_eq!(fa.code(), Code::NotFound);
    let ae = c.add_examples(pb::AddExamplesRequest { jsonl: "  ".into() }).await.unwrap_err();
    assert_eq!(ae.code(), Code::InvalidArgument);

    // Nothing reached the trainer. The first invalid answer re-queued the lease's prompts
    // (counted once each, not per rejection); a valid answer still counts, once.
    assert!(l.rx.try_recv().is_err());
    let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((s.prompts_pending, s.prompts_leased, s.abandoned_prompts), (2, 0, 0), "{s:?}");
    assert!(s.rejected_groups >= 2 && s.last_failure.contains("invalid_submission"), "{s:?}");
    let ok = c.submit_groups(submission(w, &ls)).await.unwrap().into_inner();
    assert_eq!(ok.accepted, 2);
    assert_eq!(l.rx.try_iter().count(), 2);
}

#[tokio::test]
async fn adapter_download_and_add_examples() {
    let l = start(None, leases(60_000), 1).await;
    let mut c = l.client(None).await;
    let w = register(&mut c, "w").await;
    let bytes: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i % 253) as u8).collect();
    l.handle.publish_adapter(v(2), bytes.clone()).unwrap();
    let got = fetch_adapter(&mut c, w, v(2), Duration::from_secs(10)).await.unwrap();
    assert_eq!((got.version, &got.bytes[..]), (v(2), &bytes[..]));
    let latest = fetch_adapter(&mut c, w, AdapterVersion::NONE, Duration::from_secs(10)).await.unwrap();
    assert_eq!(latest.version, v(2));
    let old = fetch_adapter(&mut c, w, v(1), Duration::from_secs(10)).await.unwrap();
    assert_eq!(&old.bytes[..], b"adapter v1");
    assert!(l.handle.publish_adapter(v(2), vec![]).is_err(), "versions must increase");

    let r = c.add_examples(pb::AddExamplesRequest { jsonl: "{\"a\":1}\nbad\n{}".into() }).await.unwrap().into_inner();
    assert_eq!(r.accepted, 2);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].line, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls() {
    let Some(grpcurl) = asrl_tests::grpcurl() else {
        eprintln!("skipping: grpcurl not found (set GRPCURL or put it on PATH)");
        return;
    };
    let l = start(None, leases(60_000), 3).await;
    let addr = l.server.local_addr().to_string();
    let run = move |args: Vec<&str>| {
        let out = std::process::Command::new(&grpcurl).args(&args).output().expect("grpcurl runs");
        assert!(out.status.success(), "grpcurl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (a2, a3, a4) = (addr.clone(), addr.clone(), addr.clone());
    let (list, describe, status) = tokio::task::spawn_blocking(move || {
        (
            run(vec!["-plaintext", &a2, "list"]),
            run(vec!["-plaintext", &a3, "describe", "asrl.v1.Learner"]),
            run(vec!["-plaintext", "-d", "{}", &a4, "asrl.v1.Learner/GetStatus"]),
        )
    })
    .await
    .unwrap();
    assert!(list.contains("asrl.v1.Learner") && list.contains("grpc.health.v1.Health"), "{list}");
    assert!(describe.contains("rpc SubmitGroups") && describe.contains("stream .asrl.v1.AdapterChunk"), "{describe}");
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["adapterVersion"], "1", "{status}");
    assert_eq!(json["promptsPending"], "3", "{status}");
}

#[tokio::test]
async fn add_examples_over_grpc_are_in_the_live_file_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.jsonl");
    let sink = Arc::new(asrl_learner::service::LiveFileSink::new(live.clone(), 1 << 20, 0));
    let (service, _handle, _rx) = new_learner(ServiceOptions::new(leases(60_000), VOCAB), Some(sink));
    let cfg = GrpcServerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let server = serve_learner(&cfg, service).await.unwrap();
    let ccfg = GrpcClientConfig { url: format!("http://{}", server.local_addr()), ..Default::default() };
    let mut c = transport::learner_client(transport::connect(&ccfg).await.unwrap(), &ccfg).unwrap();

    let good = r#"{"context":"User: 3+4?","response":"<|thinking|>\n[LOGIC]3+4=7[/LOGIC]\n[INTUITION]small[/INTUITION]\n<|/thinking|>\n7","type":"math"}"#;
    let r = c
        .add_examples(pb::AddExamplesRequest { jsonl: format!("{good}\n{{\"context\":\"User: no response\"}}\n") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted, 1);
    assert_eq!(r.rejected.iter().map(|x| x.line).collect::<Vec<_>>(), vec![2]);
    // Acknowledged means already on disk: read it back without any further call.
    let text = std::fs::read_to_string(&live).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("3+4=7"), "{text}");
    server.shutdown().await.unwrap();
}
