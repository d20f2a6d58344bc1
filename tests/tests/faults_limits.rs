//! Fault suite, resources, against a real learner process: oversized requests of every RPC get
//! their status while the server stays up with bounded memory, and an append that hits a full
//! disk (here the file size limit, `ulimit -f`) is an error that leaves no partial line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use asrl_proto::v1 as pb;
use asrl_tests::procs::{connect, grpo_config, log_of, rss_kib, RunShape};
use asrl_tests::{binary, free_port, KillOnDrop};
use tonic::Code;

/// The file size limit of the learner process, in KiB (bash `ulimit -f` counts 1024-byte blocks).
const FSIZE_KIB: u64 = 256;

/// The learner with SIGXFSZ ignored and a file size limit, so a write past it fails with EFBIG
/// the way a full disk fails with ENOSPC.
fn limited_learner(dir: &Path, config: &Path) -> KillOnDrop {
    let log = std::fs::File::create(dir.join("learner.log")).unwrap();
    let script = format!("trap '' XFSZ; ulimit -f {FSIZE_KIB}; exec \"$0\" train --config \"$1\"");
    let child = Command::new("bash")
        .args(["-c", &script, binary("asrl-learner").to_str().unwrap(), config.to_str().unwrap()])
        .current_dir(dir)
        .env("ASRL_LOG", "info,h2=warn,hyper=warn,tower=warn,tonic=warn")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_a_full_disk_get_error_statuses_and_the_learner_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr = format!("127.0.0.1:{}", free_port());
    let shape = RunShape { questions: 2, prompts_per_lease: 2, max_new_tokens: 8, heartbeat_ms: 500 };
    let config = grpo_config(dir, &addr, &shape, "max_workers = 4\n");
    let mut l = limited_learner(dir, &config);
    let mut c = connect(&addr, &mut l, dir, "learner.log").await;
    let pid = l.id();
    // Let the start-up allocations settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);

    // Register: every field bounded; the registry too.
    let reg = |name: String, device: &str, caps: Vec<String>| pb::RegisterRequest { name, device: device.into(), capabilities: caps, max_sequences: 0 };
    for r in [
        reg("n".repeat(1 << 20), "cpu", vec![]),
        reg("w".into(), &"x".repeat(1 << 20), vec![]),
        reg("w".into(), "cpu", vec!["f".into(); 1 << 20]),
    ] {
        assert_eq!(c.register(r).await.unwrap_err().code(), Code::InvalidArgument);
    }
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(c.register(reg(format!("w{i}"), "cpu", vec![])).await.unwrap().into_inner().worker_id);
    }
    let e = c.register(reg("w5".into(), "cpu", vec![])).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());

    // Every RPC over the 64 MiB message limit (learner.max_message_mib): OUT_OF_RANGE, read no
    // further than the length prefix. Ten of them must not grow the learner's memory.
    let huge = "x".repeat(70 << 20);
    for _ in 0..2 {
        let e = c.add_examples(pb::AddExamplesRequest { jsonl: huge.clone() }).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{}", e.message());
        let e = c.register(reg(huge.clone(), "cpu", vec![])).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange);
        let e = c
            .submit_groups(pb::SubmitGroupsRequest {
                worker_id: ids[0],
                groups: vec![pb::GroupResult { prompt_id: huge.clone(), completions: vec![] }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange);
        let e = c
            .return_prompts(pb::ReturnPromptsRequest {
                worker_id: ids[0],
                lease_id: 1,
                prompts: vec![pb::PromptReturn { prompt_id: huge.clone(), reason: 1, message: String::new() }],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange);
        let e = c
            .heartbeat(pb::HeartbeatRequest { worker_id: ids[0], lease_ids: vec![u64::MAX; 9 << 20], ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange);
    }
    // Within the message limit but over a count limit.
    let e = c.add_examples(pb::AddExamplesRequest { jsonl: "{}\n".repeat(20_000) }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    let e = c.heartbeat(pb::HeartbeatRequest { worker_id: ids[0], lease_ids: vec![1; 1000], ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let rss_after = rss_kib(pid);
    eprintln!("learner RSS {rss_before} KiB before, {rss_after} KiB after 10 oversized requests of 70 MiB");
    assert!(rss_after < rss_before + 64 * 1024, "memory grew from {rss_before} KiB to {rss_after} KiB");

    // A full disk: one small addition fits, a large one does not; the large one is an error
    // status and the file is exactly as before it.
    let data = dir.join("data.jsonl");
    let line = std::fs::read_to_string(&data).unwrap().lines().next().unwrap().to_string();
    let ok = c.add_examples(pb::AddExamplesRequest { jsonl: line.clone() }).await.unwrap().into_inner();
    assert_eq!(ok.accepted, 1);
    let before = std::fs::read(&data).unwrap();
    let lines = (FSIZE_KIB as usize * 1024) / line.len() + 10;
    assert!(lines < 10_000);
    let e = c.add_examples(pb::AddExamplesRequest { jsonl: vec![line.as_str(); lines].join("\n") }).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("nothing appended") && e.message().contains("data.jsonl"), "{}", e.message());
    let after = std::fs::read(&data).unwrap();
    assert_eq!(after.len(), before.len(), "a partial append was left behind");
    assert_eq!(after.last(), Some(&b'\n'));

    // Still up and serving, its rollout phase intact; the registered "workers" never
    // heartbeat, so they are dropped once silent for 3 heartbeats (1.5 s).
    let started = std::time::Instant::now();
    let s = loop {
        let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        if s.workers.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((s.phase.as_str(), s.prompts_pending, s.workers.len()), ("grpo", 2, 0), "{s:?}");
    assert!(l.try_wait().is_none(), "learner died:\n{}", log_of(dir, "learner.log"));
}
