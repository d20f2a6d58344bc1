//! The Python reference reward server (examples/reward-service/) scored through the worker's
//! `service` reward component. Needs a Python with grpcio and grpcio-tools (`$PYTHON`, else
//! `python3`); skipped with the reason printed otherwise.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use asrl_common::config::RewardConfig;
use asrl_common::reward::RewardScorer;
use asrl_common::rollout::{ExampleKind, GroupScorer, PromptWork};
use asrl_common::sample::{Completion, FinishReason};
use asrl_tests::{python_with, repo_root, KillOnDrop};

/// Starts `script` (run from examples/reward-service, so `from server import serve` works) on a
/// free port; returns the process and its URL once it listens.
fn start(py: &str, script: &Path, args: &[&str]) -> (KillOnDrop, String) {
    let dir = repo_root().join("examples/reward-service");
    let mut child = Command::new(py)
        .arg(script)
        .args(["--port", "0"])
        .args(args)
        .current_dir(&dir)
        .env("PYTHONPATH", &dir)
        .env_remove("ASRL_REWARD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("reward service listening on ").unwrap_or_else(|| panic!("server said {line:?}"));
    (child, format!("http://{addr}"))
}

fn scorer(url: &str, token: Option<&str>) -> RewardScorer {
    let mut params = serde_json::json!({ "url": url, "retries": 0 });
    if let Some(t) = token {
        params["auth_token"] = t.into();
    }
    let cfg: RewardConfig = serde_json::from_value(serde_json::json!({ "components": [{ "name": "service", "params": params }] })).unwrap();
    RewardScorer::from_config(&cfg).unwrap()
}

fn prompt() -> PromptWork {
    PromptWork {
        prompt_id: "e1-q0".into(),
        prompt_tokens: Arc::from(vec![1u32]),
        prompt_text: "User: What is 2+2?".into(),
        ground_truth: "4".into(),
        kind: ExampleKind::Verifiable,
        example_type: "arith".into(),
    }
}

fn completions(texts: &[&str]) -> Vec<Completion> {
    texts
        .iter()
        .map(|t| Completion { tokens: vec![1], logprobs: vec![-0.1], text: t.to_string(), finish: FinishReason::Eos })
        .collect()
}

#[test]
fn the_python_example_server_scores_groups_for_the_worker() {
    let Some(py) = python_with(&["grpc", "grpc_tools"]) else { return };
    let example = repo_root().join("examples/reward-service/my_reward.py");
    let (_server, url) = start(&py, &example, &["--token", "t0k"]);

    let good = "<|thinking|>\n[LOGIC]2+2=4[/LOGIC]\n<|/thinking|>\n4";
    let s = scorer(&url, Some("t0k"));
    let rewards = s.score_group(&prompt(), &completions(&[good, "5"])).unwrap();
    assert_eq!(rewards[0].components["service.correct"], 1.0);
    assert_eq!(rewards[1].components["service.correct"], 0.0);
    let brevity = -0.001 * good.len() as f64;
    assert!((rewards[0].components["service.brevity"] - brevity).abs() < 1e-12, "{:?}", rewards[0]);
    assert!((rewards[0].total - (1.0 + brevity)).abs() < 1e-12, "{:?}", rewards[0]);
    assert!((rewards[1].total - (-0.001)).abs() < 1e-12, "{:?}", rewards[1]);

    let msg = scorer(&url, Some("nope")).score_group(&prompt(), &completions(&["4"])).unwrap_err().to_string();
    assert!(msg.contains("Unauthenticated") && msg.contains("prompt e1-q0"), "{msg}");
}

/// A user function that returns the wrong number of scores, or raises, fails the prompt with
/// the server's explanation; plain floats are scores without parts.
#[test]
fn python_score_function_errors_reach_the_worker_as_per_prompt_failures() {
    let Some(py) = python_with(&["grpc", "grpc_tools"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("user_reward.py");
    std::fs::write(
        &script,
        "from server import serve\n\
         def score(req):\n\
         \x20   if req.completions[0] == 'raise':\n\
         \x20       raise KeyError('no such answer')\n\
         \x20   if req.completions[0] == 'short':\n\
         \x20       return [0.5]\n\
         \x20   return [len(c) / 10 for c in req.completions]\n\
         serve(score)\n",
    )
    .unwrap();
    let (_server, url) = start(&py, &script, &[]);
    let s = scorer(&url, None);
    let rewards = s.score_group(&prompt(), &completions(&["abcd", "ab"])).unwrap();
    assert_eq!((rewards[0].total, rewards[1].total), (0.4, 0.2));
    assert_eq!(rewards[0].components.keys().collect::<Vec<_>>(), vec!["service"], "floats carry no parts");

    let msg = s.score_group(&prompt(), &completions(&["short", "x"])).unwrap_err().to_string();
    assert!(msg.contains("Internal") && msg.contains("returned 1 scores for 2 completions"), "{msg}");
    let msg = s.score_group(&prompt(), &completions(&["raise"])).unwrap_err().to_string();
    assert!(msg.contains("KeyError") && msg.contains("no such answer"), "{msg}");
}
