//! `scripts/launch.sh`: one config, a learner and a worker per device, health wait, summary at the
//! end, everything stopped on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asrl_tests::{binary, fixture, free_port, repo_root, KillOnDrop};

fn setup(dir: &Path, epochs: usize) -> PathBuf {
    let data = dir.join("data.jsonl");
    let out = Command::new(binary("asrl-tools"))
        .args(["demo-data", "--count", "40", "--seed", "2", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.join("launch.toml");
    std::fs::write(
        &config,
        format!(
            r#"[model]
path = "{model}"
dtype = "f32"
[lora]
r = 4
[sampling]
n = 2
max_new_tokens = 6
[schedule]
epochs = {epochs}
questions_per_epoch = 2
sft_examples_per_epoch = 4
[run]
dir = "{run}"
[learner]
addr = "127.0.0.1:{port}"
[workers]
devices = ["cpu", "cpu"]
[data]
path = "{data}"
[sft]
grad_accum_steps = 2
[eval]
generate_examples = 2
loss_examples = 2
[leases]
prompts_per_lease = 1
heartbeat_interval_ms = 200
no_work_retry_ms = 50
"#,
            model = fixture("tiny-qwen3").display(),
            run = dir.join("run").display(),
            data = data.display(),
            port = free_port(),
        ),
    )
    .unwrap();
    config
}

fn launch(config: &Path) -> Command {
    let bin_dir = binary("asrl-learner").parent().unwrap().to_path_buf();
    binary("asrl-rollout-worker");
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/launch.sh"))
        .args(["--config", config.to_str().unwrap(), "--bin", bin_dir.to_str().unwrap(), "--", "--fresh"])
        .current_dir(config.parent().unwrap());
    cmd
}

/// Processes whose command line mentions `needle` (our learner and workers carry the config path).
fn processes_with(needle: &str) -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid,args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle) && (l.contains("asrl-learner") || l.contains("asrl-rollout-worker")))
        .map(str::to_string)
        .collect()
}

/// The tails of the run's logs, for failure messages.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["learner.log", "worker-0.log", "worker-1.log"] {
        let text = std::fs::read_to_string(dir.join("run/logs").join(name)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!("--- {name}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
    }
    out
}

/// The whole run to its summary, with one worker SIGKILLed on the way: launch.sh says so,
/// restarts it, and the run still finishes.
#[test]
fn launch_runs_a_learner_and_a_worker_per_device_to_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), 1);
    let out_path = tmp.path().join("launch.out");
    let mut cmd = launch(&config);
    let out = std::fs::File::create(&out_path).unwrap();
    cmd.stdout(Stdio::from(out.try_clone().unwrap())).stderr(Stdio::from(out));
    let mut child = KillOnDrop::group(cmd).unwrap();
    let needle = tmp.path().to_str().unwrap().to_string();
    let stdout = || std::fs::read_to_string(&out_path).unwrap_or_default();

    // Kill worker-1 once both workers run.
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim = loop {
        let procs = processes_with(&needle);
        if let Some(line) = procs.iter().find(|l| l.contains("--name worker-1")) {
            if procs.iter().any(|l| l.contains("--name worker-0")) {
                break line.split_whitespace().next().unwrap().to_string();
            }
        }
        assert!(Instant::now() < deadline, "workers never ran: {procs:?}\n{}", stdout());
        assert!(child.try_wait().is_none(), "launch.sh exited early:\n{}", stdout());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(Command::new("kill").args(["-KILL", &victim]).status().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "launch.sh still running:\n{}\n{}", stdout(), logs(tmp.path()));
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = stdout();
    assert!(status.success(), "launch.sh failed:\n{stdout}\n{}", logs(tmp.path()));
    assert!(stdout.contains("learner healthy on 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("worker-0 on cpu") && stdout.contains("worker-1 on cpu"), "{stdout}");
    assert!(stdout.contains("worker-1 exited (status 137); restarting it in 1 s"), "{stdout}");
    assert!(stdout.contains("worker-1 restarted"), "{stdout}");
    assert!(stdout.contains("format acc") && stdout.contains("run finished after epoch 1"), "{stdout}");
    let logs = tmp.path().join("run/logs");
    for log in ["learner.log", "worker-0.log", "worker-1.log"] {
        assert!(logs.join(log).is_file(), "{log} missing");
    }
    assert!(processes_with(tmp.path().to_str().unwrap()).is_empty(), "processes left running");
}

#[test]
fn stopping_launch_stops_the_learner_and_every_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), 1000);
    let mut cmd = launch(&config);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = KillOnDrop::group(cmd).unwrap();
    let needle = tmp.path().to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while processes_with(&needle).len() < 3 {
        assert!(Instant::now() < deadline, "learner + 2 workers never all ran: {:?}", processes_with(&needle));
        assert!(child.try_wait().is_none(), "launch.sh exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the run get going, then stop the script. SIGTERM goes through the same trap as a
    // terminal's Ctrl-C (SIGINT); SIGINT itself cannot be used here, because a test harness run
    // in the background of a non-interactive shell (as CI may) starts with SIGINT ignored, and
    // bash cannot trap a signal ignored at entry.
    std::thread::sleep(Duration::from_secs(3));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = child.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "launch.sh still running 60 s after SIGTERM; running: {:?}\n{}",
            processes_with(&needle),
            logs(tmp.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(exit.code(), Some(130));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_with(&needle).is_empty() {
        assert!(Instant::now() < deadline, "still running after SIGTERM: {:?}\n{}", processes_with(&needle), logs(tmp.path()));
        std::thread::sleep(Duration::from_millis(200));
    }
}
