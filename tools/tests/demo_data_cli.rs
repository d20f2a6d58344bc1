//! `asrl-tools demo-data` driven as a user would, checked with `asrl-learner data check`,
//! including a SIGKILL right after a live append is acknowledged.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use asrl_common::config::DataConfig;
use asrl_common::data::load;

fn tools_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_asrl-tools"))
}

fn tools(args: &[&str]) -> Output {
    Command::new(tools_bin()).args(args).output().expect("run asrl-tools")
}

fn learner(args: &[&str]) -> Output {
    Command::new(asrl_tests::binary("asrl-learner")).args(args).output().expect("run asrl-learner")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn all_ids(path: &Path) -> Vec<String> {
    let snap = load(path, &DataConfig::default(), &|_| 0).unwrap();
    assert_eq!(snap.report.bad_count(), 0, "{:?}", snap.report.bad_lines);
    snap.train
        .iter()
        .chain(&snap.val)
        .chain(&snap.test)
        .map(|e| e.id.clone().unwrap())
        .collect()
}

#[test]
fn generate_then_check_a_clean_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.jsonl");
    let o = tools(&[
        "demo-data",
        "--out",
        out.to_str().unwrap(),
        "--count",
        "300",
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = learner(&["data", "check", out.to_str().unwrap()]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", text(&o.stderr));
    for needle in [
        "simple_qa",
        "reasoning_chain",
        "multi_turn",
        "mixed",
        "bad lines: none",
        "300 read",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // Same seed, same bytes; refusing to overwrite without --append.
    let again = dir.path().join("again.jsonl");
    tools(&[
        "demo-data",
        "--out",
        again.to_str().unwrap(),
        "--count",
        "300",
        "--seed",
        "5",
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let o = tools(&[
        "demo-data",
        "--out",
        out.to_str().unwrap(),
        "--count",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).starts_with("error: "),
        "{}",
        text(&o.stderr)
    );
    let o = tools(&[
        "demo-data",
        "--out",
        out.to_str().unwrap(),
        "--count",
        "5",
        "--start",
        "300",
        "--seed",
        "5",
        "--append",
    ]);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 305);
}

#[test]
fn unknown_pattern_exits_2() {
    let o = tools(&[
        "demo-data",
        "--out",
        "x.jsonl",
        "--count",
        "1",
        "--pattern",
        "nonsense",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn check_with_the_real_tokenizer_measures_demo_lengths() {
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/qwen3-tokenizer");
    if !tok.join("tokenizer.json").exists() {
        eprintln!(
            "skipped: {} absent (scripts/fetch-assets.sh)",
            tok.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.jsonl");
    tools(&[
        "demo-data",
        "--out",
        out.to_str().unwrap(),
        "--count",
        "1000",
        "--seed",
        "1",
    ]);
    let o = learner(&[
        "data",
        "check",
        out.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--max-seq-len",
        "150",
    ]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", text(&o.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("tokens per example"))
        .expect("token stats");
    eprintln!("{line}");
    let p90: usize = line
        .split("p90 ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(p90 <= 130, "{line}");
}

#[test]
fn live_appends_survive_sigkill_right_after_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live.jsonl");
    let mut child = Command::new(tools_bin())
        .args([
            "demo-data",
            "--out",
            out.to_str().unwrap(),
            "--live",
            "--rate",
            "200/s",
            "--seed",
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < 25 {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(rest) = line.strip_prefix("appended ") {
            acked.push(rest.split_whitespace().next().unwrap().to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let ids = all_ids(&out);
    for id in &acked {
        assert!(ids.contains(id), "acknowledged {id} is missing");
    }
    // Live mode with --pattern and --duration stops by itself.
    let restricted = dir.path().join("dates.jsonl");
    let o = tools(&[
        "demo-data",
        "--out",
        restricted.to_str().unwrap(),
        "--live",
        "--rate",
        "20/s",
        // Long enough for several lines even on a loaded 2-core machine (0.2 s once gave one).
        "--duration",
        "1s",
        "--pattern",
        "dates",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let content = std::fs::read_to_string(&restricted).unwrap();
    assert!(content.lines().count() >= 2);
    assert!(content.lines().all(|l| l.contains("\"topic\":\"dates\"")));
}
