//! Crash consistency of `asrl-learner train`: the learner process is `kill -9`ed at points a
//! seeded RNG picks from its progress output, or aborted inside a checkpoint write
//! (`ASRL_CRASH_AT`), or its newest checkpoint is damaged; the rerun of the same command must
//! complete with every epoch recorded once and nothing trained twice or lost.
//!
//! SFT is deterministic on the CPU, so an SFT run resumed from any checkpoint must end with the
//! uninterrupted run's adapter, byte for byte, and the same step records. GRPO depends on what
//! the workers sample, so there the check is by count: each epoch's GRPO phase trained on one
//! group per question, and examples acknowledged by `AddExamples` before the kill are all in
//! the data and in the next epoch's snapshot.
//!
//! Each fault prints one `fault:` line (what, where, checkpoint resumed from, steps redone, time
//! to recover).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asrl_common::config::AsrlConfig;
use asrl_common::data::{parse_line, ExampleEncoder, LiveDataset};
use asrl_common::tokenizer::Tokenizer;
use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use asrl_tests::{binary, fixture, free_port, KillOnDrop};

/// splitmix64: the fault points of a seed, reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn write_config(dir: &Path, addr: &str, data: &Path, body: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
path = "{model}"
dtype = "f32"
[lora]
r = 4
alpha = 8.0
[run]
dir = "{run}"
seed = 7
[learner]
addr = "{addr}"
[data]
path = "{data}"
[optimizer]
lr = 1e-3
[leases]
prompts_per_lease = 1
heartbeat_interval_ms = 200
no_work_retry_ms = 50
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
{body}
"#,
        model = fixture("tiny-qwen3").display(),
        run = dir.join("run").display(),
        data = data.display(),
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

fn spawn(dir: &Path, log: &str, bin: &str, args: &[&str], env: &[(&str, String)]) -> KillOnDrop {
    let file = std::fs::File::create(dir.join(log)).unwrap();
    let mut cmd = Command::new(binary(bin));
    cmd.args(args)
        .current_dir(dir)
        .env("ASRL_LOG", "info,h2=warn,hyper=warn,tower=warn,tonic=warn,asrl::metrics=warn")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    for (k, v) in env {
        cmd.env(k, v);
    }
    KillOnDrop(cmd.spawn().unwrap())
}

fn learner(dir: &Path, config: &Path, run: &Path, log: &str, env: &[(&str, String)]) -> KillOnDrop {
    let args = ["train", "--config", config.to_str().unwrap(), "--run-dir", run.to_str().unwrap()];
    spawn(dir, log, "asrl-learner", &args, env)
}

fn worker(dir: &Path, config: &Path, addr: &str, name: &str) -> KillOnDrop {
    let url = format!("http://{addr}");
    spawn(dir, &format!("{name}.log"), "asrl-rollout-worker", &["run", "--config", config.to_str().unwrap(), "--learner", &url, "--name", name], &[])
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Optimiser-step lines of the learner's log ("SFT step", "GRPO step"; not "GRPO step skipped").
fn step_lines(log: &str, which: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| which.iter().any(|w| l.contains(&format!("{w} step "))) && !l.contains("skipped"))
        .map(str::to_string)
        .collect()
}

/// `key=<number>` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Waits until the log has `k` step lines of `which` (then SIGKILLs the learner and returns the
/// last line's global step) or the learner exits (`None`).
fn kill_after_steps(l: &mut KillOnDrop, dir: &Path, log: &str, which: &[&str], k: usize, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = step_lines(&log_of(dir, log), which);
        if lines.len() >= k {
            l.kill();
            return field(&lines[k - 1], "step");
        }
        if l.try_wait().is_some() {
            return None;
        }
        assert!(Instant::now() < deadline, "{k} step lines not seen in {timeout:?}:\n{}", log_of(dir, log));
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_exit(l: &mut KillOnDrop, dir: &Path, log: &str, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = l.try_wait() {
            return s;
        }
        assert!(Instant::now() < deadline, "learner still running after {timeout:?}:\n{}", log_of(dir, log));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn records(run: &Path, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join(file)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Epoch numbers of the `epoch` records, in file order.
fn epochs(run: &Path) -> Vec<u64> {
    records(run, "metrics.jsonl").iter().filter(|r| r["kind"] == "epoch").map(|r| r["epoch"].as_u64().unwrap()).collect()
}

/// (epoch, phase, global step, loss bits) of every `step` record, in file order.
fn steps(run: &Path) -> Vec<(u64, String, u64, u64)> {
    records(run, "metrics.jsonl")
        .iter()
        .filter(|r| r["kind"] == "step")
        .map(|r| {
            (
                r["epoch"].as_u64().unwrap(),
                r["phase"].as_str().unwrap().to_string(),
                r["step"].as_u64().unwrap(),
                r["loss"].as_f64().map_or(u64::MAX, f64::to_bits),
            )
        })
        .collect()
}

/// Every tensor of a safetensors file as f32 bit patterns, by name (the header's key order is
/// not fixed, so the files are compared by content, exactly).
fn tensor_bits(path: &Path) -> BTreeMap<String, Vec<u32>> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1().unwrap();
            (name, v.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

/// The newest checkpoint directory of a run.
fn newest_checkpoint(run: &Path) -> PathBuf {
    let mut all: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-"))
        .collect();
    all.sort();
    all.pop().expect("a checkpoint")
}

/// Reruns the learner to the end; (global step it resumed from, seconds until its first step).
fn rerun(dir: &Path, config: &Path, run: &Path, log: &str, which: &[&str]) -> (u64, f64) {
    let started = Instant::now();
    let mut l = learner(dir, config, run, log, &[]);
    let mut recovered = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if recovered.is_none() && !step_lines(&log_of(dir, log), which).is_empty() {
            recovered = Some(started.elapsed().as_secs_f64());
        }
        if let Some(s) = l.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "rerun still going after 300 s:\n{}", log_of(dir, log));
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = log_of(dir, log);
    assert!(status.success(), "the rerun exited with {status}:\n{text}");
    let from = match text.lines().find(|l| l.contains("resuming the run")) {
        Some(resumed) => field(resumed, "step").unwrap(),
        // Killed before the first checkpoint: the run starts over, its old metrics set aside.
        None => {
            assert!(text.contains("has no checkpoint to resume"), "neither resumed nor started over:\n{text}");
            0
        }
    };
    (from, recovered.unwrap_or_else(|| started.elapsed().as_secs_f64()))
}

/// SFT (schedule `sft`, 2 epochs of 3 optimiser steps, a checkpoint every 2 steps, so the
/// end of epoch 2 rewrites the checkpoint of step 6 in place): killed after a random step,
/// aborted at each point of a checkpoint or adapter replacement, or resumed past a damaged
/// newest checkpoint — each rerun ends with the uninterrupted run's adapter and step records.
#[test]
fn sft_killed_anywhere_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data.jsonl");
    generate_data(&data, 40, 21);
    let addr = format!("127.0.0.1:{}", free_port());
    let body = "[schedule]\nkind = \"sft\"\nepochs = 2\nsft_examples_per_epoch = 6\n\
                [sft]\nmicro_batch_size = 2\ngrad_accum_steps = 1\n\
                [checkpoint]\nevery_steps = 2\nkeep_last = 2\n\
                [sampling]\nn = 1\nmax_new_tokens = 4\n[eval]\ngenerate_examples = 2\nloss_examples = 4\n";
    let config = write_config(dir, &addr, &data, body);
    let _w = worker(dir, &config, &addr, "worker");

    let reference = dir.join("reference");
    let mut l = learner(dir, &config, &reference, "reference.log", &[]);
    let status = wait_exit(&mut l, dir, "reference.log", Duration::from_secs(300));
    assert!(status.success(), "{}", log_of(dir, "reference.log"));
    let adapter = |run: &Path| tensor_bits(&run.join("final-adapter/adapter_model.safetensors"));
    let want_adapter = adapter(&reference);
    let want_steps = steps(&reference);
    assert_eq!(want_steps.len(), 6, "{want_steps:?}");
    assert_eq!(epochs(&reference), [1, 2]);

    // Seeds 1-2: kill -9 after a random step; 3-6: abort at each point of a replacement (which
    // hit of it is random); 7: kill -9 late, then damage the newest checkpoint.
    let points = ["replace_dir:filled", "replace_dir:synced", "replace_dir:swapped", "checkpoint:saved"];
    const CORRUPT: u64 = 7;
    for seed in 1..=CORRUPT {
        let mut rng = Rng(seed);
        let run = dir.join(format!("run-{seed}"));
        let (log1, log2) = (format!("killed-{seed}.log"), format!("rerun-{seed}.log"));
        let fault = if let 3..=6 = seed {
            let name = points[(seed - 3) as usize];
            // `swapped` is hit only by same-name replacements: surely once, at the end of epoch 2.
            let nth = if name == "replace_dir:swapped" { 1 } else { 1 + rng.below(3) };
            let point = format!("{name}#{nth}");
            let mut l = learner(dir, &config, &run, &log1, &[("ASRL_CRASH_AT", point.clone())]);
            let status = wait_exit(&mut l, dir, &log1, Duration::from_secs(300));
            assert!(
                !status.success() && log_of(dir, &log1).contains("ASRL_CRASH_AT: aborting"),
                "seed {seed}: {point} never hit:\n{}",
                log_of(dir, &log1)
            );
            let at = step_lines(&log_of(dir, &log1), &["SFT"]).last().and_then(|l| field(l, "step")).unwrap_or(0);
            format!("abort at {point} (after SFT step {at})")
        } else {
            // The damaged-checkpoint case needs two checkpoints (steps 2 and 3) to fall back on.
            let k = if seed == CORRUPT { 4 + rng.below(3) } else { 1 + rng.below(6) } as usize;
            let mut l = learner(dir, &config, &run, &log1, &[]);
            let killed = kill_after_steps(&mut l, dir, &log1, &["SFT"], k, Duration::from_secs(300));
            let at = killed.unwrap_or_else(|| panic!("seed {seed}: the run ended before step line {k}"));
            if seed == CORRUPT {
                let newest = newest_checkpoint(&run);
                let weights = newest.join("adapter/adapter_model.safetensors");
                let mut bytes = std::fs::read(&weights).unwrap();
                let i = bytes.len() - 1 - rng.below(64) as usize;
                bytes[i] ^= 0x20;
                std::fs::write(&weights, bytes).unwrap();
                format!("kill -9 after SFT step {at}, then a flipped bit in {}", newest.file_name().unwrap().to_string_lossy())
            } else {
                format!("kill -9 after SFT step {at}")
            }
        };
        let (from, secs) = rerun(dir, &config, &run, &log2, &["SFT"]);
        let text = log_of(dir, &log2);
        if seed == CORRUPT {
            assert!(text.contains("checkpoint unreadable: falling back"), "no fallback:\n{text}");
            assert!(std::fs::read_dir(run.join("checkpoints")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("corrupt-")));
        }
        let killed_at = step_lines(&log_of(dir, &log1), &["SFT"]).last().and_then(|l| field(l, "step")).unwrap_or(0);
        eprintln!(
            "fault: {fault}: resumed from step {from}, {} optimiser step(s) redone, first step {secs:.1} s after the restart",
            killed_at.saturating_sub(from)
        );
        assert_eq!(epochs(&run), [1, 2], "seed {seed}: each epoch recorded once");
        assert_eq!(steps(&run), want_steps, "seed {seed}: step records differ from the uninterrupted run's");
        assert!(adapter(&run) == want_adapter, "seed {seed} ({fault}): the final adapter differs from the uninterrupted run's");
        let phases = records(&run, "trainer.jsonl").iter().filter(|r| r["kind"] == "phase").count();
        assert_eq!(phases, 2, "seed {seed}: one SFT phase record per epoch in trainer.jsonl");
    }
}

/// The `asrl` schedule with a worker: killed after a random GRPO step (several seeds), with
/// examples pushed over `AddExamples` during epoch 1 just before. The rerun completes; each
/// epoch is recorded once; each GRPO phase trained on exactly one group per question (none lost
/// to the kill, none trained twice); every acknowledged example is in the data file, kept out of
/// the resumed epoch 1 and in epoch 2's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpo_killed_mid_phase_loses_no_acknowledged_example_and_trains_each_question_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let extra_path = dir.join("extra.jsonl");
    generate_data(&dir.join("base.jsonl"), 40, 31);
    generate_data(&extra_path, 12, 99);
    let extra = std::fs::read_to_string(&extra_path).unwrap();
    let (questions, n) = (6u64, 3u64);
    for seed in [11u64, 14] {
        let mut rng = Rng(seed);
        let sub = dir.join(format!("seed-{seed}"));
        std::fs::create_dir_all(&sub).unwrap();
        let data = sub.join("data.jsonl");
        std::fs::copy(dir.join("base.jsonl"), &data).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let body = format!(
            "[schedule]\nkind = \"asrl\"\nepochs = 2\nsft_examples_per_epoch = 4\nquestions_per_epoch = {questions}\n\
             [sft]\nmicro_batch_size = 2\ngrad_accum_steps = 1\n[grpo]\ngroups_per_step = 1\n\
             [checkpoint]\nevery_steps = 2\n[sampling]\nn = {n}\nmax_new_tokens = 8\n\
             [eval]\ngenerate_examples = 2\nloss_examples = 4\n"
        );
        let config = write_config(&sub, &addr, &data, &body);
        let run = sub.join("run");
        let mut l = learner(&sub, &config, &run, "killed.log", &[]);
        let _w = worker(&sub, &config, &addr, "worker");

        // Push examples once epoch 1 has its snapshot (its SFT phase has stepped).
        wait_for_steps(&mut l, &sub, "killed.log", &["SFT"], 1).await;
        let mut client = LearnerClient::connect(format!("http://{addr}")).await.unwrap();
        let added = client.add_examples(pb::AddExamplesRequest { jsonl: extra.clone() }).await.unwrap().into_inner();
        assert_eq!((added.accepted, added.rejected.len()), (12, 0));

        // After the 3rd or 5th GRPO update (global steps 5 or 7 when none is skipped): the
        // checkpoint before it lies inside the GRPO phase, so the rerun resumes a GRPO cursor.
        let k = 3 + 2 * rng.below(2) as usize;
        let at = kill_after_steps(&mut l, &sub, "killed.log", &["GRPO"], k, Duration::from_secs(300))
            .unwrap_or_else(|| panic!("seed {seed}: the run ended before GRPO step line {k}:\n{}", log_of(&sub, "killed.log")));
        let killed_epoch = step_lines(&log_of(&sub, "killed.log"), &["GRPO"]).get(k - 1).and_then(|l| field(l, "epoch")).unwrap();
        // Every acknowledged example is on disk after the kill.
        let on_disk: BTreeSet<[u8; 32]> = std::fs::read_to_string(&data)
            .unwrap()
            .lines()
            .filter_map(|l| parse_line(l.as_bytes(), 1 << 20).ok())
            .map(|e| e.content_key())
            .collect();
        let pushed: Vec<[u8; 32]> = extra.lines().map(|l| parse_line(l.as_bytes(), 1 << 20).unwrap().content_key()).collect();
        assert!(pushed.iter().all(|k| on_disk.contains(k)), "seed {seed}: an acknowledged example is missing after the kill");

        let (from, secs) = rerun(&sub, &config, &run, "rerun.log", &["SFT", "GRPO"]);
        let rerun_log = log_of(&sub, "rerun.log");
        let resumed_at = rerun_log.lines().find_map(|l| l.split_once(" resumed at ").map(|(_, r)| r.split(':').next().unwrap_or(r)));
        eprintln!(
            "fault: kill -9 after GRPO step {at} (epoch {killed_epoch}): resumed from step {from} ({}), {} optimiser step(s) and their groups redone, first step {secs:.1} s after the restart",
            resumed_at.unwrap_or("an epoch boundary"),
            at.saturating_sub(from)
        );
        assert_eq!(epochs(&run), [1, 2], "seed {seed}: each epoch recorded once");
        let global: Vec<u64> = steps(&run).iter().map(|s| s.2).collect();
        assert!(global.windows(2).all(|w| w[0] < w[1]), "seed {seed}: step records repeat or go back: {global:?}");
        let grpo: Vec<serde_json::Value> = records(&run, "trainer.jsonl")
            .into_iter()
            .filter(|r| r["kind"] == "phase" && r["phase"] == "grpo")
            .collect();
        assert_eq!(grpo.len(), 2, "seed {seed}: one GRPO phase record per epoch: {grpo:?}");
        for p in &grpo {
            assert_eq!(p["completions"], questions * n, "seed {seed}: each question's group trained on exactly once: {p}");
        }

        // Epoch 1 kept its own snapshot; epoch 2 has every acknowledged example.
        let cfg = AsrlConfig::load(&config).unwrap();
        let encoder = ExampleEncoder::new(Tokenizer::from_hf_dir(&fixture("tiny-qwen3")).unwrap());
        let now = LiveDataset::new(&data, &cfg.data).unwrap().snapshot(&|e| encoder.seq_len(e)).unwrap();
        let sizes: Vec<u64> = records(&run, "metrics.jsonl")
            .iter()
            .filter(|r| r["kind"] == "epoch")
            .map(|r| r["train_size"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes[1], now.train.len() as u64, "seed {seed}: epoch 2 trained on every acknowledged example");
        assert!(sizes[0] < sizes[1], "seed {seed}: the pushed examples waited for epoch 2: {sizes:?}");
    }
}

/// Waits for `k` step lines without killing (the learner must still be running).
async fn wait_for_steps(l: &mut KillOnDrop, dir: &Path, log: &str, which: &[&str], k: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while step_lines(&log_of(dir, log), which).len() < k {
        assert!(l.try_wait().is_none(), "learner exited early:\n{}", log_of(dir, log));
        assert!(Instant::now() < deadline, "no step after 120 s:\n{}", log_of(dir, log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
