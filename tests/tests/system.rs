//! The whole system as users run it: an `asrl-learner train` process and `asrl-rollout-worker run`
//! processes on loopback, a tiny Qwen3 (committed fixture, real tokenizer) and tiny data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use asrl_learner::report::tensorboard::{event_files, read_scalars};
use asrl_tests::{binary, fixture, free_port, grpcurl, python_with, reflection_services, KillOnDrop};
use tonic::transport::Channel;

/// A run config for the tiny model; `extra` is appended (later keys of a table must not repeat).
fn write_config(dir: &Path, addr: &str, epochs: usize, schedule: &str, max_new_tokens: usize, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
path = "{model}"
dtype = "f32"
[lora]
r = 4
alpha = 8.0
[sampling]
n = 3
max_new_tokens = {max_new_tokens}
[schedule]
kind = "{schedule}"
epochs = {epochs}
questions_per_epoch = 4
sft_examples_per_epoch = 8
[run]
dir = "{run}"
seed = 5
[learner]
addr = "{addr}"
[data]
path = "{data}"
[sft]
grad_accum_steps = 2
micro_batch_size = 2
[optimizer]
lr = 1e-3
[eval]
generate_examples = 4
loss_examples = 4
# Rewards that vary between random completions, so GRPO steps really update the adapter.
[[reward.components]]
name = "correctness"
weight = 0.85
[[reward.components]]
name = "format"
weight = 0.15
[[reward.components]]
name = "regex"
weight = 1.0
params = {{ pattern = "[aeiou]{{2}}" }}
{extra}
"#,
        model = fixture("tiny-qwen3").display(),
        run = dir.join("run").display(),
        data = dir.join("data.jsonl").display(),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn generate_data(path: &Path, count: usize, seed: u64) {
    let out = Command::new(binary("asrl-tools"))
        .args(["demo-data", "--count", &count.to_string(), "--seed", &seed.to_string(), "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn spawn(dir: &Path, log: &str, bin: &str, args: &[&str]) -> KillOnDrop {
    let file = std::fs::File::create(dir.join(log)).unwrap();
    let child = Command::new(binary(bin))
        .args(args)
        .current_dir(dir)
        .env("ASRL_LOG", "info,h2=warn,hyper=warn,tower=warn,tonic=warn,asrl::metrics=warn")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

fn learner(dir: &Path, config: &Path, log: &str) -> KillOnDrop {
    spawn(dir, log, "asrl-learner", &["train", "--config", config.to_str().unwrap()])
}

fn worker(dir: &Path, config: &Path, addr: &str, name: &str) -> KillOnDrop {
    let url = format!("http://{addr}");
    spawn(dir, &format!("{name}.log"), "asrl-rollout-worker", &["run", "--config", config.to_str().unwrap(), "--learner", &url, "--name", name])
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

async fn connect(addr: &str, learner: &mut KillOnDrop, dir: &Path, log: &str) -> LearnerClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = learner.try_wait() {
            panic!("learner exited early ({status}):\n{}", log_of(dir, log));
        }
        if let Ok(mut c) = LearnerClient::connect(format!("http://{addr}")).await {
            if c.get_status(pb::GetStatusRequest {}).await.is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "learner not up after 60 s:\n{}", log_of(dir, log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What polling `GetStatus` saw.
#[derive(Default, Debug)]
struct Seen {
    /// Most groups each worker (by name) had completed.
    groups_by_worker: BTreeMap<String, u64>,
    /// Adapter versions workers reported holding.
    worker_versions: BTreeSet<u64>,
    expired_leases: u64,
}

impl Seen {
    fn add(&mut self, s: &pb::LearnerStatus) {
        for w in &s.workers {
            let g = self.groups_by_worker.entry(w.name.clone()).or_default();
            *g = (*g).max(w.groups_completed);
            if w.adapter_version > 0 {
                self.worker_versions.insert(w.adapter_version);
            }
        }
        self.expired_leases = self.expired_leases.max(s.expired_leases);
    }
}

/// Polls status until the learner exits (or `until` holds); the learner's exit status if it exited.
async fn watch(
    client: &mut LearnerClient<Channel>,
    learner: &mut KillOnDrop,
    seen: &mut Seen,
    timeout: Duration,
    mut until: impl FnMut(&pb::LearnerStatus) -> bool,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = learner.try_wait() {
            return Some(status);
        }
        if let Ok(s) = client.get_status(pb::GetStatusRequest {}).await {
            let s = s.into_inner();
            seen.add(&s);
            if until(&s) {
                return None;
            }
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metrics_lines(run: &Path, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join(file))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two epochs-and-a-bit of ASRL: the learner is SIGKILLed during epoch 2 and restarted with the
/// same config; it resumes from the epoch-1 checkpoint. Examples pushed over gRPC during epoch 1
/// are trained on from epoch 2, across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asrl_through_learner_and_two_worker_processes_survives_a_learner_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate_data(&dir.join("data.jsonl"), 60, 3);
    generate_data(&dir.join("extra.jsonl"), 12, 99);
    let addr = format!("127.0.0.1:{}", free_port());
    let config = write_config(dir, &addr, 3, "asrl", 8, "[leases]\nprompts_per_lease = 1\nheartbeat_interval_ms = 200\nno_work_retry_ms = 50\n");
    let run = dir.join("run");

    let mut l1 = learner(dir, &config, "learner1.log");
    let mut client = connect(&addr, &mut l1, dir, "learner1.log").await;
    let _wa = worker(dir, &config, &addr, "worker-a");
    let _wb = worker(dir, &config, &addr, "worker-b");

    // Reflection, through the Rust client on both protocol versions and through grpcurl.
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let (v1, v1alpha) = reflection_services(channel).await;
    for list in [&v1, &v1alpha] {
        assert!(list.iter().any(|s| s == "asrl.v1.Learner"), "{list:?}");
        assert!(list.iter().any(|s| s == "grpc.health.v1.Health"), "{list:?}");
    }
    if let Some(grpcurl) = grpcurl() {
        let out = Command::new(&grpcurl).args(["-plaintext", &addr, "list"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("asrl.v1.Learner"), "grpcurl list: {text}");
        let out = Command::new(&grpcurl).args(["-plaintext", "-d", "{}", &addr, "asrl.v1.Learner/GetStatus"]).output().unwrap();
        assert!(out.status.success(), "grpcurl GetStatus: {}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("grpcurl not installed: reflection checked through the Rust client only");
    }

    // Push examples once epoch 1 has taken its snapshot.
    let mut seen = Seen::default();
    let ended = watch(&mut client, &mut l1, &mut seen, Duration::from_secs(120), |s| s.epoch == 1 && s.phase != "idle").await;
    assert!(ended.is_none(), "learner ended before epoch 1:\n{}", log_of(dir, "learner1.log"));
    let extra = std::fs::read_to_string(dir.join("extra.jsonl")).unwrap();
    let added = client.add_examples(pb::AddExamplesRequest { jsonl: extra }).await.unwrap().into_inner();
    assert_eq!((added.accepted, added.rejected.len()), (12, 0));

    // Kill the learner once epoch 1 is checkpointed and epoch 2 has begun.
    let ended = watch(&mut client, &mut l1, &mut seen, Duration::from_secs(180), |s| s.epoch == 2).await;
    assert!(ended.is_none(), "learner ended before epoch 2:\n{}", log_of(dir, "learner1.log"));
    l1.kill();
    assert!(run.join("checkpoints").read_dir().unwrap().next().is_some(), "no checkpoint before the kill");

    let mut l2 = learner(dir, &config, "learner2.log");
    let mut client = connect(&addr, &mut l2, dir, "learner2.log").await;
    let status = watch(&mut client, &mut l2, &mut seen, Duration::from_secs(300), |_| false).await.unwrap();
    let log2 = log_of(dir, "learner2.log");
    assert!(status.success(), "learner exited with {status}:\n{log2}");
    assert!(log2.contains("resuming the run") && log2.contains("epochs_done=1"), "{log2}");

    // Both workers contributed, and sampled with adapters that kept changing.
    assert_eq!(seen.groups_by_worker.len(), 2, "{seen:?}");
    assert!(seen.groups_by_worker.values().all(|&g| g > 0), "{seen:?}");
    assert!(seen.worker_versions.len() >= 3, "workers held versions {:?}", seen.worker_versions);

    // Each epoch ran both phases and was evaluated; epoch 2 trained on the pushed examples.
    let epochs: BTreeMap<u64, serde_json::Value> = metrics_lines(&run, "metrics.jsonl")
        .into_iter()
        .filter(|r| r["kind"] == "epoch")
        .map(|r| (r["epoch"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(epochs.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for e in epochs.values() {
        assert_eq!(e["phases"], "sft+grpo");
        for key in ["val_loss_after_sft", "val_loss_after_grpo", "format_accuracy", "reward_mean", "sft_loss"] {
            assert!(e[key].is_number(), "{key} missing in {e}");
        }
    }
    let size = |e: u64| epochs[&e]["train_size"].as_u64().unwrap() + epochs[&e]["val_size"].as_u64().unwrap();
    assert!(size(2) > size(1), "pushed examples not in epoch 2: {} vs {}", size(2), size(1));
    assert!(epochs[&2]["train_added"].as_u64().unwrap() > 0);
    let phases: Vec<(u64, String)> = metrics_lines(&run, "metrics.jsonl")
        .into_iter()
        .filter(|r| r["kind"] == "phase")
        .map(|r| (r["epoch"].as_u64().unwrap(), r["phase"].as_str().unwrap().to_string()))
        .collect();
    for epoch in 1..=3 {
        for phase in ["sft", "grpo"] {
            assert!(phases.contains(&(epoch, phase.to_string())), "no {phase} phase in epoch {epoch}: {phases:?}");
        }
    }
    // GRPO applied updates from the workers' groups.
    let grpo_steps = metrics_lines(&run, "metrics.jsonl").iter().filter(|r| r["kind"] == "step" && r["phase"] == "grpo").count();
    assert!(grpo_steps > 0, "no GRPO optimiser step was applied");

    for file in ["final-adapter/adapter_config.json", "final-adapter/adapter_model.safetensors", "plots/format_accuracy.png", "plots/val_loss.svg", "config.toml"] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    assert!(std::fs::read_dir(run.join("checkpoints")).unwrap().count() >= 1);
    check_tensorboard(&run, &metrics_lines(&run, "metrics.jsonl"));
}

/// The TensorBoard events of both learner processes hold the `metrics.jsonl` steps (at their
/// global step) and epochs (at the epoch number); the real `tensorboard` reads them when it is
/// installed.
fn check_tensorboard(run: &Path, records: &[serde_json::Value]) {
    let files = event_files(&run.join("tensorboard")).unwrap();
    assert_eq!(files.len(), 2, "one event file per learner process: {files:?}");
    let points: Vec<_> = files.iter().flat_map(|f| read_scalars(f).unwrap()).collect();
    let steps_of = |tag: &str| points.iter().filter(|p| p.tag == tag).map(|p| p.step as u64).collect::<BTreeSet<_>>();
    for phase in ["sft", "grpo"] {
        let want: BTreeSet<u64> = records
            .iter()
            .filter(|r| r["kind"] == "step" && r["phase"] == phase)
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        let got = steps_of(&format!("{phase}/loss"));
        // The kill may fall between a step's metrics.jsonl line and its event: one step at most.
        assert!(got.is_subset(&want) && want.len() - got.len() <= 1, "{phase}/loss steps {got:?}, metrics.jsonl {want:?}");
    }
    assert_eq!(steps_of("grpo/reward_mean"), steps_of("grpo/loss"));
    for tag in ["grpo/reward_std", "grpo/clip_low_fraction", "grpo/kl_ref", "grpo/reward/format", "sft/grad_norm", "sft/lr"] {
        assert!(!steps_of(tag).is_empty(), "{tag} missing");
    }
    for tag in ["eval/format_accuracy", "eval/reward_mean", "eval/val_loss_after_grpo", "data/train_size", "epoch/sft_loss_mean"] {
        assert_eq!(steps_of(tag), BTreeSet::from([1, 2, 3]), "{tag} epochs");
    }
    // The last epoch's values are the metrics.jsonl ones (as f32).
    let last = records.iter().rev().find(|r| r["kind"] == "epoch").unwrap();
    for (tag, key) in [("data/train_size", "train_size"), ("eval/format_accuracy", "format_accuracy")] {
        let p = points.iter().rev().find(|p| p.tag == tag).unwrap();
        assert_eq!(p.value, last[key].as_f64().unwrap() as f32, "{tag}");
    }
    let Some(py) = python_with(&["tensorboard"]) else { return };
    let script = "import sys\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        acc = EventAccumulator(sys.argv[1]); acc.Reload()\n\
        for tag in sorted(acc.Tags()['scalars']):\n    \
            print(tag, ' '.join(str(e.step) for e in acc.Scalars(tag)))\n";
    let out = Command::new(&py).args(["-c", script]).arg(run.join("tensorboard")).output().unwrap();
    assert!(out.status.success(), "tensorboard's reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |tag: &str| text.lines().find(|l| l.split(' ').next() == Some(tag)).map(str::to_string);
    assert_eq!(line("eval/format_accuracy").as_deref(), Some("eval/format_accuracy 1 2 3"), "{text}");
    assert!(line("sft/loss").is_some() && line("grpo/reward_mean").is_some(), "{text}");
}

/// A worker SIGKILLed while it holds a lease: after the lease deadline its prompts go to the
/// other worker, and the phase completes with every group counted once. The run is the `grpo`
/// schedule (no SFT phase at all) with early stopping on format accuracy and patience 1: a random
/// model never improves on its first epoch's 0%, so the run stops after epoch 2 of 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_lease_is_re_leased_and_every_group_counted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate_data(&dir.join("data.jsonl"), 40, 4);
    let addr = format!("127.0.0.1:{}", free_port());
    // Long completions keep a lease open long enough to catch; GRPO only (no SFT phase).
    let config = write_config(
        dir,
        &addr,
        5,
        "grpo",
        160,
        "[leases]\nprompts_per_lease = 2\nlease_timeout_ms = 1500\nheartbeat_interval_ms = 200\nno_work_retry_ms = 50\n",
    );
    // TensorBoard off: no event files.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("kind = \"grpo\"", "kind = \"grpo\"\npatience = 1\nmonitor = \"format_accuracy\"")
        .replace("seed = 5", "seed = 5\ntensorboard = false");
    std::fs::write(&config, text).unwrap();
    let mut l = learner(dir, &config, "learner.log");
    let mut client = connect(&addr, &mut l, dir, "learner.log").await;
    let mut doomed = worker(dir, &config, &addr, "doomed");
    let mut seen = Seen::default();
    let ended = watch(&mut client, &mut l, &mut seen, Duration::from_secs(120), |s| s.phase == "grpo" && s.prompts_leased > 0).await;
    assert!(ended.is_none(), "learner ended early:\n{}", log_of(dir, "learner.log"));
    doomed.kill();
    let _survivor = worker(dir, &config, &addr, "survivor");
    let status = watch(&mut client, &mut l, &mut seen, Duration::from_secs(300), |_| false).await.unwrap();
    assert!(status.success(), "learner exited with {status}:\n{}", log_of(dir, "learner.log"));

    assert!(seen.expired_leases >= 1, "the killed worker's lease never expired: {seen:?}");
    assert!(seen.groups_by_worker.get("survivor").copied().unwrap_or(0) > 0, "{seen:?}");
    // The trainer saw exactly one group of n=3 completions per question, every phase.
    let grpo_phases: Vec<_> = metrics_lines(&dir.join("run"), "trainer.jsonl")
        .into_iter()
        .filter(|r| r["kind"] == "phase" && r["phase"] == "grpo")
        .collect();
    assert_eq!(grpo_phases.len(), 2, "{grpo_phases:?}");
    for p in &grpo_phases {
        assert_eq!(p["completions"], 4 * 3, "{p}");
    }
    // `grpo` never runs SFT; early stopping ended the run after epoch 2.
    let records = metrics_lines(&dir.join("run"), "metrics.jsonl");
    assert!(!records.iter().any(|r| r["phase"] == "sft"), "an SFT record in a grpo run");
    let epochs: Vec<u64> = records.iter().filter(|r| r["kind"] == "epoch").map(|r| r["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![1, 2]);
    assert!(records.iter().filter(|r| r["kind"] == "epoch").all(|r| r["phases"] == "grpo"));
    assert!(log_of(dir, "learner.log").contains("early stopping"), "{}", log_of(dir, "learner.log"));
    assert!(!dir.join("run/tensorboard").exists(), "run.tensorboard = false still wrote events");
}
