//! Fault suite, network and bad peers, against a real learner process: the connection cut while
//! a submission is in flight (an in-test TCP proxy), and a worker that submits absurd rewards.

use std::time::Duration;

use asrl_proto::v1 as pb;
use asrl_tests::free_port;
use asrl_tests::procs::{connect, grpo_config, grpo_phase_completions, learner, log_of, records, watch, worker, CutProxy, RunShape};
use tonic::Code;

/// The proxy forwards each of the first two large requests (submissions) and then cuts the
/// connection before the answer: the worker retries the same submission on the same
/// registration, the learner counts every group once, and the run does not stall. (Heartbeats
/// every second: a loaded 2-core machine can starve a worker for well over 300 ms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_during_submission_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr = format!("127.0.0.1:{}", free_port());
    let shape = RunShape { questions: 4, prompts_per_lease: 2, max_new_tokens: 48, heartbeat_ms: 1000 };
    let config = grpo_config(dir, &addr, &shape, "");
    let mut l = learner(dir, &config, "learner.log", &[]);
    let mut client = connect(&addr, &mut l, dir, "learner.log").await;
    let proxy = CutProxy::start(addr.parse().unwrap(), 1500, 2).await;
    let _w = worker(dir, &config, &format!("http://{}", proxy.addr), "w");

    let mut duplicates = 0;
    let status = watch(&mut client, &mut l, Duration::from_secs(240), |s| {
        duplicates = duplicates.max(s.duplicate_groups);
        false
    })
    .await
    .unwrap();
    let (learner_log, worker_log) = (log_of(dir, "learner.log"), log_of(dir, "w.log"));
    assert!(status.success(), "learner exited with {status}:\n{learner_log}\n--- worker\n{worker_log}");
    assert_eq!(proxy.cuts.load(std::sync::atomic::Ordering::SeqCst), 2, "the proxy never saw a submission to cut");
    assert!(worker_log.contains("retrying"), "{worker_log}");
    assert_eq!(learner_log.matches("worker registered").count(), 1, "the worker registered again:\n{learner_log}");
    assert_eq!(grpo_phase_completions(&dir.join("run")), vec![4 * 3], "every group exactly once");
    // The learner had applied a cut submission before the worker sent it again.
    assert!(duplicates >= 1, "no repeated submission was recognised as such");
    eprintln!("connection cut twice mid-submission; duplicate groups reported by the learner: {duplicates}");
}

/// A (fake) worker submits finite but absurd rewards: the learner answers INVALID_ARGUMENT,
/// counts the groups, re-queues the prompts at once; a real worker then finishes the run with
/// finite metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_rewards_from_a_worker_are_rejected_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr = format!("127.0.0.1:{}", free_port());
    let shape = RunShape { questions: 2, prompts_per_lease: 2, max_new_tokens: 8, heartbeat_ms: 1000 };
    let config = grpo_config(dir, &addr, &shape, "");
    let mut l = learner(dir, &config, "learner.log", &[]);
    let mut client = connect(&addr, &mut l, dir, "learner.log").await;
    let ended = watch(&mut client, &mut l, Duration::from_secs(120), |s| s.phase == "grpo" && s.prompts_pending == 2).await;
    assert!(ended.is_none(), "{}", log_of(dir, "learner.log"));

    let reg = pb::RegisterRequest { name: "liar".into(), device: "cpu".into(), capabilities: vec![], max_sequences: 0 };
    let reply = client.register(reg).await.unwrap().into_inner();
    assert_eq!(reply.max_abs_reward, 1000.0, "the bound is told at registration");
    let liar = reply.worker_id;
    let lease = loop {
        let r = client.lease_work(pb::LeaseWorkRequest { worker_id: liar, max_prompts: 0 }).await.unwrap().into_inner();
        if let Some(pb::lease_work_response::Outcome::Lease(lease)) = r.outcome {
            break lease;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let completion = |reward: f64| pb::CompletionResult {
        token_ids: lease.prompts[0].prompt_token_ids[..2].to_vec(),
        logprobs: vec![-1.0, -2.0],
        finish_reason: pb::FinishReason::Eos as i32,
        rewards: vec![pb::RewardComponent { name: "correctness".into(), score: reward }],
        total_reward: reward,
    };
    let req = pb::SubmitGroupsRequest {
        lease_id: lease.lease_id,
        worker_id: liar,
        adapter_version: lease.adapter_version,
        groups: lease
            .prompts
            .iter()
            .map(|p| pb::GroupResult { prompt_id: p.prompt_id.clone(), completions: vec![completion(1e308), completion(-1e308), completion(0.0)] })
            .collect(),
        timings: None,
    };
    let e = client.submit_groups(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("outside the reward bound ±1000"), "{}", e.message());
    let s = client.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((s.rejected_groups, s.prompts_pending, s.prompts_leased), (2, 2, 0), "{s:?}");
    assert!(s.last_failure.contains("invalid_submission"), "{}", s.last_failure);

    let _honest = worker(dir, &config, &format!("http://{addr}"), "honest");
    let status = watch(&mut client, &mut l, Duration::from_secs(240), |_| false).await.unwrap();
    assert!(status.success(), "learner exited with {status}:\n{}", log_of(dir, "learner.log"));
    let run = dir.join("run");
    assert_eq!(grpo_phase_completions(&run), vec![2 * 3]);
    for r in records(&run, "trainer.jsonl").iter().filter(|r| r["kind"] == "grpo_step") {
        let mean = r["reward_mean"].as_f64().expect("a finite reward mean");
        assert!(mean.abs() <= 1000.0, "{r}");
    }
}
