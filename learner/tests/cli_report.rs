//! `asrl-learner plot` and `asrl-learner report` on synthetic run directories.

use std::path::Path;
use std::process::{Command, Output};

fn learner(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_asrl-learner")).args(args).current_dir(cwd).output().unwrap()
}

fn write_run(dir: &Path, name: &str, accs: &[f64], evals: &[(usize, &str, f64)]) {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).unwrap();
    let mut text = format!("{{\"kind\":\"run\",\"name\":\"{name}\",\"schedule\":\"asrl\"}}\n");
    for (i, a) in accs.iter().enumerate() {
        text += &format!(
            "{{\"kind\":\"epoch\",\"epoch\":{},\"train_size\":64,\"phases\":\"sft+grpo\",\"val_loss_after_sft\":{},\"val_loss_after_grpo\":{},\"reward_mean\":{},\"format_accuracy\":{a}}}\n",
            i + 1,
            2.0 - a,
            1.9 - a,
            a * 0.8
        );
    }
    for (e, t, a) in evals {
        text += &format!("{{\"kind\":\"eval\",\"epoch\":{e},\"type\":\"{t}\",\"format_accuracy\":{a}}}\n");
    }
    text += "{\"kind\":\"step\",\"epo"; // torn last line
    std::fs::write(run.join("metrics.jsonl"), text).unwrap();
}

#[test]
fn plot_writes_files_for_several_runs() {
    let tmp = tempfile::tempdir().unwrap();
    write_run(tmp.path(), "asrl", &[0.3, 0.7, 0.95], &[]);
    write_run(tmp.path(), "sft", &[0.2, 0.4], &[]);
    let out = learner(&["plot", "asrl", "sft", "--out", "figs"], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning:") && stderr.contains("torn"), "{stderr}");
    for stem in ["format_accuracy", "reward_mean", "val_loss"] {
        for ext in ["png", "svg"] {
            assert!(tmp.path().join("figs").join(format!("{stem}.{ext}")).is_file(), "{stem}.{ext}");
        }
    }
    // One run: plots go to RUN_DIR/plots.
    let out = learner(&["plot", "sft"], tmp.path());
    assert!(out.status.success());
    assert!(tmp.path().join("sft/plots/val_loss.png").is_file());
}

#[test]
fn report_prints_table1_and_live_metric() {
    let tmp = tempfile::tempdir().unwrap();
    write_run(tmp.path(), "asrl", &[0.3, 0.7, 0.95], &[(1, "qa", 0.3), (2, "json", 0.5), (3, "json", 0.9)]);
    write_run(tmp.path(), "grpo", &[0.1, 0.2, 0.3], &[(1, "qa", 0.1), (2, "json", 0.1)]);
    let out = learner(&["report", "--summary", "asrl", "grpo"], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Table 1"), "{stdout}");
    let asrl_row = stdout.lines().find(|l| l.starts_with("asrl ") && l.contains("95.0%")).unwrap();
    assert!(asrl_row.trim_end().ends_with(" 3"), "{stdout}");
    let live = stdout.lines().find(|l| l.starts_with("asrl ") && l.contains("json")).unwrap();
    assert!(live.contains("90.0%"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("grpo ") && l.contains("never")), "{stdout}");
    assert!(stdout.contains("val (grpo)"), "summary tables: {stdout}");
}

#[test]
fn bad_input_is_one_error_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = learner(&["report", "missing-run"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: ") && stderr.contains("missing-run"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    std::fs::create_dir(tmp.path().join("bad")).unwrap();
    std::fs::write(tmp.path().join("bad/metrics.jsonl"), "{\"kind\":\"epoch\",\"epoch\":\"one\"}\n{}\n").unwrap();
    let out = learner(&["plot", "bad"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad/metrics.jsonl:1"), "{stderr}");

    let out = learner(&["report", "--threshold", "90", "bad"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threshold"));

    // A run without any plottable value is an error, not an empty success.
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    std::fs::write(tmp.path().join("empty/metrics.jsonl"), "{\"kind\":\"run\",\"name\":\"e\"}\n").unwrap();
    let out = learner(&["plot", "empty"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
}
