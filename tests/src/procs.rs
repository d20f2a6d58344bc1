//! Real learner and worker processes for the fault tests: a tiny-model config, spawning with
//! logs, a learner client, status polling, and a TCP proxy that cuts connections on cue.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

use crate::{binary, fixture, KillOnDrop};

/// What [`grpo_config`] varies.
pub struct RunShape {
    pub questions: usize,
    pub prompts_per_lease: usize,
    pub max_new_tokens: usize,
    pub heartbeat_ms: u64,
}

/// A GRPO-only, one-epoch run of the tiny Qwen3 fixture on demo questions, leases timed by
/// `shape.heartbeat_ms` (silence limit: three of them; the lease timeout stays the default
/// 600 s); `extra` is appended (it must not repeat a table).
pub fn grpo_config(dir: &Path, addr: &str, shape: &RunShape, extra: &str) -> PathBuf {
    let RunShape { questions, prompts_per_lease, max_new_tokens, heartbeat_ms } = *shape;
    let data = dir.join("data.jsonl");
    if !data.exists() {
        let out = Command::new(binary("asrl-tools"))
            .args(["demo-data", "--count", "24", "--seed", "7", "--out"])
            .arg(&data)
            .output()
            .expect("asrl-tools runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = format!(
        r#"[model]
path = "{model}"
dtype = "f32"
[lora]
r = 4
[sampling]
n = 3
max_new_tokens = {max_new_tokens}
[schedule]
kind = "grpo"
epochs = 1
questions_per_epoch = {questions}
[run]
dir = "{run}"
seed = 3
[learner]
addr = "{addr}"
[data]
path = "{data}"
[optimizer]
lr = 1e-3
[eval]
generate_examples = 2
loss_examples = 2
[leases]
prompts_per_lease = {prompts_per_lease}
heartbeat_interval_ms = {heartbeat_ms}
worker_timeout_ms = {timeout}
no_work_retry_ms = 50
{extra}
"#,
        model = fixture("tiny-qwen3").display(),
        run = dir.join("run").display(),
        data = data.display(),
        timeout = 3 * heartbeat_ms,
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Spawns workspace binary `bin` with `args` in `dir`, stdout and stderr to `dir/log`.
pub fn spawn_logged(dir: &Path, log: &str, bin: &str, args: &[&str], envs: &[(&str, &str)]) -> KillOnDrop {
    let file = std::fs::File::create(dir.join(log)).unwrap();
    let mut cmd = Command::new(binary(bin));
    cmd.args(args)
        .current_dir(dir)
        .env("ASRL_LOG", "info,h2=warn,hyper=warn,tower=warn,tonic=warn,asrl::metrics=warn")
        .env_remove("ASRL_TOKEN")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    KillOnDrop(cmd.spawn().unwrap())
}

/// `asrl-learner train --config CONFIG` plus `args`.
pub fn learner(dir: &Path, config: &Path, log: &str, args: &[&str]) -> KillOnDrop {
    let mut all = vec!["train", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    spawn_logged(dir, log, "asrl-learner", &all, &[])
}

/// `asrl-rollout-worker run --config CONFIG --learner URL --name NAME`.
pub fn worker(dir: &Path, config: &Path, url: &str, name: &str) -> KillOnDrop {
    let args = ["run", "--config", config.to_str().unwrap(), "--learner", url, "--name", name];
    spawn_logged(dir, &format!("{name}.log"), "asrl-rollout-worker", &args, &[])
}

pub fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// A plaintext client of the learner at `addr` once `GetStatus` answers (60 s at most).
pub async fn connect(addr: &str, learner: &mut KillOnDrop, dir: &Path, log: &str) -> LearnerClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = learner.try_wait() {
            panic!("learner exited early ({status}):\n{}", log_of(dir, log));
        }
        if let Ok(mut c) = LearnerClient::connect(format!("http://{addr}")).await {
            if c.get_status(pb::GetStatusRequest {}).await.is_ok() {
                return c.max_decoding_message_size(64 << 20).max_encoding_message_size(128 << 20);
            }
        }
        assert!(Instant::now() < deadline, "learner not up after 60 s:\n{}", log_of(dir, log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `GetStatus` every 20 ms until `until` holds (`None`) or the learner exits (its status).
pub async fn watch(
    client: &mut LearnerClient<Channel>,
    learner: &mut KillOnDrop,
    timeout: Duration,
    mut until: impl FnMut(&pb::LearnerStatus) -> bool,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = learner.try_wait() {
            return Some(status);
        }
        if let Ok(s) = client.get_status(pb::GetStatusRequest {}).await {
            if until(&s.into_inner()) {
                return None;
            }
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records of `run/FILE` (JSON lines).
pub fn records(run: &Path, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join(file))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The completions the trainer saw in each GRPO phase (`trainer.jsonl` phase records).
pub fn grpo_phase_completions(run: &Path) -> Vec<u64> {
    records(run, "trainer.jsonl")
        .iter()
        .filter(|r| r["kind"] == "phase" && r["phase"] == "grpo")
        .map(|r| r["completions"].as_u64().unwrap())
        .collect()
}

/// A loopback TCP proxy to `upstream`. While `cuts_left` > 0, a client→server read of at least
/// `cut_at_bytes` (only a `SubmitGroups` request is that large here) is forwarded whole, the
/// reply is held back for [`CUT_HOLD`] (time for the learner to apply the request) and then both
/// sides are closed: the learner has applied the request, the worker never hears the answer.
pub const CUT_HOLD: Duration = Duration::from_millis(300);

pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    pub cuts: Arc<AtomicUsize>,
}

impl CutProxy {
    pub async fn start(upstream: std::net::SocketAddr, cut_at_bytes: usize, cuts_left: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(AtomicUsize::new(0));
        let counter = cuts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                tokio::spawn(pipe(client, server, cut_at_bytes, cuts_left, counter.clone()));
            }
        });
        Self { addr, cuts }
    }
}

async fn pipe(client: TcpStream, server: TcpStream, cut_at: usize, max_cuts: usize, cuts: Arc<AtomicUsize>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (cut_tx, mut cut_rx) = tokio::sync::watch::channel(false);
    let up = async move {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if n >= cut_at && cuts.load(Ordering::SeqCst) < max_cuts {
                cuts.fetch_add(1, Ordering::SeqCst);
                let _ = sw.flush().await;
                let _ = cut_tx.send(true);
                // Keep forwarding the request for the hold: a submission that arrived in more
                // than one read reaches the learner whole (it is the reply that is lost), so
                // the worker's resend is always a repeat of an applied submission.
                let until = tokio::time::Instant::now() + CUT_HOLD;
                while let Ok(Ok(n)) = tokio::time::timeout_at(until, cr.read(&mut buf)).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                tokio::time::sleep_until(until).await;
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            tokio::select! {
                r = sr.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => if cw.write_all(&buf[..n]).await.is_err() { return },
                },
                // Stop forwarding replies; the connection closes after the hold.
                _ = cut_rx.changed() => {
                    tokio::time::sleep(CUT_HOLD).await;
                    return;
                }
            }
        }
    };
    // Whichever side ends first ends both (dropping the halves closes the sockets).
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Resident memory of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
