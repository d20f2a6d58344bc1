//! `scripts/gpu-check.sh` rehearsed on CPU (`--device cpu --quick`) with the debug binaries:
//! the same script the GPU machine runs, at toy sizes. Without torch + transformers + peft in
//! `$PYTHON` the torch comparisons are skipped with the reason; with them they must pass.

use std::path::Path;
use std::process::Command;

use asrl_tests::{binary, python_with, repo_root};
use serde_json::Value;

const PARTS: [&str; 5] = ["setup", "parity", "rollout", "train", "run"];

/// Runs the check; returns its exit code and the parsed report.json.
fn gpu_check(out: &Path, extra: &[&str]) -> (i32, Value) {
    let bin = binary("asrl-tools").parent().unwrap().to_path_buf();
    binary("asrl-learner");
    binary("asrl-rollout-worker");
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/gpu-check.sh"))
        .args(["--device", "cpu", "--quick", "--bin"])
        .arg(&bin)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("OUT")
        .status()
        .unwrap();
    let report = out.join("report.json");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{}: {e}", report.display()));
    (status.code().unwrap_or(-1), serde_json::from_str(&text).expect("report.json parses"))
}

fn status<'a>(report: &'a Value, part: &str) -> &'a str {
    report["parts"][part]["status"].as_str().unwrap_or_else(|| panic!("part {part} has no status: {report:#}"))
}

#[test]
fn the_cpu_rehearsal_runs_every_part_and_reports_it() {
    if python_with(&["json"]).is_none() {
        return;
    }
    let torch = python_with(&["torch", "transformers", "peft"]).is_some();
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = gpu_check(dir.path(), &[]);
    for part in PARTS {
        status(&report, part);
    }
    assert!(dir.path().join("report.md").is_file());
    assert!(dir.path().join("logs.tar.gz").is_file());
    for part in ["setup", "rollout", "train", "run"] {
        assert_eq!(status(&report, part), "pass", "{part}: {:#}", report["parts"][part]);
    }
    let rollout = &report["parts"]["rollout"]["metrics"];
    assert!(rollout["asrl"]["tokens_per_s"].as_f64().unwrap() > 0.0, "{rollout:#}");
    let train = &report["parts"]["train"]["metrics"];
    assert!(train["asrl"]["sft"]["tokens_per_s"].as_f64().unwrap() > 0.0, "{train:#}");
    let run = &report["parts"]["run"];
    assert!(run["summary"].as_str().unwrap().contains("epoch budget reached"), "{run:#}");
    // Every parity case ran on our side.
    let parity = &report["parts"]["parity"];
    for case in ["tiny-qwen3-f32", "tiny-llama-f32", "tiny-qwen3-bf16", "qwen3-mini-f32", "qwen3-mini-bf16"] {
        assert_eq!(parity["metrics"]["asrl"][case]["exit"], 0, "{case}: {parity:#}");
    }
    if torch {
        assert_eq!(status(&report, "parity"), "pass", "{parity:#}");
        let checks = parity["checks"].as_array().unwrap();
        // 5 cases x (3 log-prob checks + gradients) + greedy for the three f32 cases.
        assert_eq!(checks.len(), 23, "{parity:#}");
        assert!(checks.iter().all(|c| c["status"] == "pass"), "{parity:#}");
        assert!(rollout["torch"]["tokens_per_s"].as_f64().unwrap() > 0.0, "{rollout:#}");
        assert!(rollout["asrl_over_torch"].as_f64().is_some(), "{rollout:#}");
        assert!(train["torch"]["grpo"]["tokens_per_s"].as_f64().unwrap() > 0.0, "{train:#}");
        assert_eq!(report["status"], "pass");
        assert_eq!(code, 0);
    } else {
        assert_eq!(status(&report, "parity"), "skipped", "{parity:#}");
        let reason = parity["reason"].as_str().unwrap();
        assert!(reason.contains("torch not usable"), "{reason}");
        assert!(train["torch_skipped"].as_str().is_some(), "{train:#}");
        assert!(rollout["torch_skipped"].as_str().is_some(), "{rollout:#}");
        eprintln!("torch comparisons skipped: {reason}");
        assert_eq!(code, 0, "skipped parts do not fail the check");
    }
}

#[test]
fn a_part_past_its_budget_is_recorded_and_the_next_still_runs() {
    if python_with(&["json"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Parity's five model loads take longer than one second even on the tiny models.
    let (code, report) = gpu_check(dir.path(), &["--parts", "parity,run", "--budget", "parity=1"]);
    assert_eq!(status(&report, "parity"), "timeout", "{report:#}");
    assert!(report["parts"]["parity"]["reason"].as_str().unwrap().contains("budget of 1 s"));
    assert_eq!(status(&report, "run"), "pass", "{report:#}");
    assert_eq!(status(&report, "rollout"), "not_selected");
    assert_eq!(report["status"], "fail");
    assert_eq!(code, 1);
}

#[test]
fn bad_usage_exits_2_with_one_error_line() {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/gpu-check.sh"))
        .args(["--parts", "parity,bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: --parts: unknown part bogus"), "{err}");
}
