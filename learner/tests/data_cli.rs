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
