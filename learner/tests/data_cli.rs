//! `asrl-learner data check` driven as a user would (the demo data it checks in
//! tools/tests/demo_data_cli.rs comes from `asrl-tools demo-data`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `asrl-learner` binary of this build. Worktrees sharing one CARGO_TARGET_DIR can replace
/// it with a build lacking `data`; then it is rebuilt once from this crate's sources.
fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_BIN_EXE_asrl-learner"));
        let has_data = |p: &Path| {
            Command::new(p)
                .args(["data", "--help"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !has_data(&path) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target = path
                .parent()
                .and_then(Path::parent)
                .expect("<target>/<profile>/asrl-learner");
            let status = Command::new(cargo)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "-p", "asrl-learner", "--bin", "asrl-learner"])
                .env("CARGO_TARGET_DIR", target)
                .status()
                .expect("run cargo");
            assert!(
                status.success() && has_data(&path),
                "could not rebuild {}",
                path.display()
            );
        }
        path
    })
}

fn learner(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run asrl-learner")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_reports_bad_lines_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    std::fs::write(
        &path,
        "{\"context\":\"User: hi\",\"response\":\"hello\",\"type\":\"greeting\"}\n{oops\n{\"context\":\"q\"}\n",
    )
    .unwrap();
    let o = learner(&["data", "check", path.to_str().unwrap()]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:2: invalid JSON", path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}:3: missing field response", path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid_json 1, missing_field 1"),
        "{stdout}"
    );
    assert!(stdout.contains("greeting"), "{stdout}");

    let o = learner(&["data", "check", "/no/such/dataset.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = text(&o.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("/no/such/dataset.jsonl"),
        "{stderr}"
    );
}

/// A directory mixing the paper's format, `messages` and TRL's two `prompt`/`completion`
/// formats: every line loads, and the report names each file's format.
#[test]
fn check_names_each_files_format() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, lines: &[&str]| std::fs::write(dir.path().join(name), lines.join("\n") + "\n").unwrap();
    write("a_paper.jsonl", &[r#"{"context":"User: 1+1?","response":"2","type":"arith"}"#, r#"{"context":"User: 2+2?","response":"4","type":"arith"}"#]);
    write("b_chat.jsonl", &[r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}],"type":"greeting"}"#]);
    write(
        "c_trl.jsonl",
        &[
            r#"{"prompt":"3+3?","completion":"6","ground_truth":"6","type":"arith"}"#,
            r#"{"prompt":[{"role":"user","content":"4+4?"}],"completion":[{"role":"assistant","content":"8"}],"answer":8,"type":"arith"}"#,
            r#"{"prompt":[{"role":"user","content":"5+5?"}],"completion":[{"role":"assistant","content":"10"}],"type":"arith"}"#,
        ],
    );
    write("d_broken.jsonl", &[r#"{"prompt":"q","completion":["r"]}"#]);
    let o = learner(&["data", "check", dir.path().to_str().unwrap()]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "the broken file's line is bad: {stdout}");
    let line_of = |file: &str| {
        let name = dir.path().join(file).display().to_string();
        stdout.lines().find(|l| l.trim_start().starts_with(&format!("{name}: "))).unwrap_or_else(|| panic!("{file}: {stdout}")).to_string()
    };
    assert!(line_of("a_paper.jsonl").ends_with(": context/response (paper) 2"), "{stdout}");
    assert!(line_of("b_chat.jsonl").ends_with(": messages 1"), "{stdout}");
    assert!(line_of("c_trl.jsonl").ends_with(": prompt/completion 1, prompt/completion (conversational) 2"), "{stdout}");
    assert!(line_of("d_broken.jsonl").ends_with(": no valid lines"), "{stdout}");
    assert!(stdout.contains("d_broken.jsonl:1: field completion: expected a string, as `prompt` is"), "{stdout}");
    let total = stdout.lines().find(|l| l.starts_with("total ")).unwrap();
    assert_eq!(total.split_whitespace().last(), Some("6"), "{stdout}");
}
