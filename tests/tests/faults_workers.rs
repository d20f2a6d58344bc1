//! Fault suite, workers: a rollout worker process SIGKILLed while it holds a lease, with the
//! default 600 s lease timeout. Its prompts are re-leased within three heartbeat intervals and
//! every group is counted exactly once.

use std::time::{Duration, Instant};

use asrl_proto::v1 as pb;
use asrl_tests::free_port;
use asrl_tests::procs::{connect, grpo_config, grpo_phase_completions, learner, log_of, watch, worker, RunShape};

const HEARTBEAT_MS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_lease_is_re_leased_within_three_heartbeats() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr = format!("127.0.0.1:{}", free_port());
    // One lease holds every question, and long completions keep it open long enough to catch.
    let shape = RunShape { questions: 4, prompts_per_lease: 4, max_new_tokens: 200, heartbeat_ms: HEARTBEAT_MS };
    let config = grpo_config(dir, &addr, &shape, "");
    let mut l = learner(dir, &config, "learner.log", &[]);
    let mut client = connect(&addr, &mut l, dir, "learner.log").await;
    let mut doomed = worker(dir, &config, &format!("http://{addr}"), "doomed");
    let ended = watch(&mut client, &mut l, Duration::from_secs(120), |s| s.phase == "grpo" && s.prompts_leased == 4).await;
    assert!(ended.is_none(), "learner ended early:\n{}", log_of(dir, "learner.log"));
    doomed.kill();
    let killed = Instant::now();

    // A probe worker (this test) asks for work until the dead worker's prompts come back.
    let reg = pb::RegisterRequest { name: "probe".into(), device: "cpu".into(), capabilities: vec![], max_sequences: 0 };
    let probe = client.register(reg).await.unwrap().into_inner().worker_id;
    let lease = loop {
        client.heartbeat(pb::HeartbeatRequest { worker_id: probe, ..Default::default() }).await.unwrap();
        let r = client.lease_work(pb::LeaseWorkRequest { worker_id: probe, max_prompts: 0 }).await.unwrap().into_inner();
        if let Some(pb::lease_work_response::Outcome::Lease(lease)) = r.outcome {
            break lease;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "the killed worker's prompts were never re-leased");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let waited = killed.elapsed();
    eprintln!("killed worker's lease re-leased after {} ms (heartbeat {HEARTBEAT_MS} ms)", waited.as_millis());
    // The dead worker's last heartbeat came before the kill, so three intervals after the kill
    // at most, plus the probe's polling.
    assert!(waited <= Duration::from_millis(3 * HEARTBEAT_MS + 300), "re-leased after {waited:?}");
    let s = client.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.expired_leases, 1);
    // Every prompt the dead worker had not delivered comes back: groups it submitted between
    // the status poll that saw its lease and the kill (a fast machine finishes some) are not
    // leased again.
    assert!(!lease.prompts.is_empty(), "nothing came back");
    assert_eq!(lease.prompts.len() as u64 + s.prompts_completed, 4, "re-leased {:?}, status {s:?}", lease.prompts);
    assert!(!s.workers.iter().any(|w| w.name == "doomed"), "the dead worker is dropped: {:?}", s.workers);

    // The probe walks away too (its lease expires the same way); a real worker finishes the
    // run, and the trainer sees each question's group once.
    let _survivor = worker(dir, &config, &format!("http://{addr}"), "survivor");
    let status = watch(&mut client, &mut l, Duration::from_secs(240), |_| false).await.unwrap();
    assert!(status.success(), "learner exited with {status}:\n{}", log_of(dir, "learner.log"));
    assert_eq!(grpo_phase_completions(&dir.join("run")), vec![4 * 3]);
}
