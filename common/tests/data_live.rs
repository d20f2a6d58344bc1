//! The live dataset end to end on real files: bad lines, partial lines, duplicates, filtering,
//! split stability under growth, durable appends under concurrent reads.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use asrl_common::config::DataConfig;
use asrl_common::data::{
    append_examples, append_json, load, parse_value, DataError, Example, LiveDataset,
};
use serde_json::json;

fn no_limit(_: &Example) -> usize {
    0
}

fn good(i: usize) -> String {
    json!({"context": format!("User: question {i}"), "response": format!("<|thinking|>\n[LOGIC]step {i}[/LOGIC]\n[INTUITION]hunch[/INTUITION]\n<|/thinking|>\n{i}"), "type": if i.is_multiple_of(2) { "even" } else { "odd" }}).to_string()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn every_bad_line_is_reported_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    let cfg = DataConfig {
        max_line_bytes: 300,
        ..Default::default()
    };
    let long = json!({"context": "q", "response": "x".repeat(400)}).to_string();
    let mut bytes = Vec::new();
    let lines: Vec<Vec<u8>> = vec![
        good(0).into_bytes(),                                      // 1 ok
        b"{not json".to_vec(),                                     // 2 invalid_json
        b"{\"context\":\"\xc3\x28\",\"response\":\"r\"}".to_vec(), // 3 invalid_utf8
        br#"{"response":"r"}"#.to_vec(),                           // 4 missing_field
        br#"{"context":"q","response":42}"#.to_vec(),              // 5 wrong_type
        br#"{"context":"q","response":"   "}"#.to_vec(),           // 6 empty_response
        long.into_bytes(),                                         // 7 line_too_long
        b"".to_vec(),                                              // 8 blank
        br#""just a string""#.to_vec(),                            // 9 not_an_object
        good(1).into_bytes(),                                      // 10 ok
    ];
    for l in &lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    write(&path, &bytes);
    let snap = load(&path, &cfg, &no_limit).unwrap();
    let r = &snap.report;
    assert_eq!(r.counts.total(), 2);
    assert_eq!(r.bad_count(), 7);
    assert_eq!(r.blank_lines, 1);
    let got: Vec<(usize, &str)> = r
        .bad_lines
        .iter()
        .map(|b| (b.line, b.reason.kind()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "invalid_json"),
            (3, "invalid_utf8"),
            (4, "missing_field"),
            (5, "wrong_type"),
            (6, "empty_response"),
            (7, "line_too_long"),
            (9, "not_an_object"),
        ]
    );
    for kind in [
        "invalid_json",
        "invalid_utf8",
        "missing_field",
        "wrong_type",
        "empty_response",
        "line_too_long",
        "not_an_object",
    ] {
        assert_eq!(r.bad_by_reason[kind], 1, "{kind}");
    }
    let shown = r.bad_lines[1].to_string();
    assert!(
        shown.starts_with(&format!("{}:3: invalid UTF-8", path.display())),
        "{shown}"
    );
    assert_eq!(r.by_type["even"].total() + r.by_type["odd"].total(), 2);

    // The report keeps at most max_reported_bad_lines but counts them all.
    let cfg = DataConfig {
        max_line_bytes: 300,
        max_reported_bad_lines: 3,
        ..Default::default()
    };
    let r = load(&path, &cfg, &no_limit).unwrap().report;
    assert_eq!(
        (r.bad_lines.len(), r.bad_lines_omitted, r.bad_count()),
        (3, 4, 7)
    );
}

#[test]
fn a_partial_last_line_is_left_for_the_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.jsonl");
    let line = good(2);
    let (head, tail) = line.split_at(line.len() / 2);
    write(&path, format!("{}\n{head}", good(1)).as_bytes());
    let mut live = LiveDataset::new(&path, &DataConfig::default()).unwrap();
    let s1 = live.snapshot(&no_limit).unwrap();
    assert_eq!(s1.report.counts.total(), 1);
    assert_eq!(s1.report.bad_count(), 0);
    assert_eq!(s1.report.pending_lines, vec![(path.clone(), 2)]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(format!("{tail}\n").as_bytes()).unwrap();
    let s2 = live.snapshot(&no_limit).unwrap();
    assert_eq!(s2.report.counts.total(), 2);
    assert!(s2.report.pending_lines.is_empty());
    assert_eq!(s2.report.bad_count(), 0);
}

#[test]
fn duplicates_are_dropped_and_counted_and_too_long_filtered() {
    let dir = tempfile::tempdir().unwrap();
    // A directory: files read in name order, non-JSONL and hidden files ignored.
    write(
        &dir.path().join("b.jsonl"),
        format!("{}\n{}\n", good(1), good(3)).as_bytes(),
    );
    write(
        &dir.path().join("a.jsonl"),
        format!("{}\n{}\n{}\n", good(1), good(2), good(1)).as_bytes(),
    );
    write(&dir.path().join("notes.txt"), b"not data\n");
    write(&dir.path().join(".hidden.jsonl"), b"garbage\n");
    // Same content with a different id and type is still a duplicate.
    let mut v: serde_json::Value = serde_json::from_str(&good(2)).unwrap();
    v["id"] = json!("other");
    v["type"] = json!("other");
    write(&dir.path().join("c.jsonl"), format!("{v}\n").as_bytes());
    let snap = load(dir.path(), &DataConfig::default(), &no_limit).unwrap();
    let r = &snap.report;
    assert_eq!(r.files.len(), 3);
    assert_eq!(r.counts.total(), 3);
    assert_eq!(r.duplicates, 3);
    assert_eq!(r.bad_count(), 0);

    // Token filter: the counter says example 3 is long.
    let cfg = DataConfig {
        max_seq_len: 100,
        ..Default::default()
    };
    let counter = |e: &Example| if e.response.ends_with('3') { 101 } else { 100 };
    let snap = load(dir.path(), &cfg, &counter).unwrap();
    assert_eq!((snap.report.counts.total(), snap.report.too_long), (2, 1));
}

#[test]
fn unreadable_sources_are_errors_naming_the_path() {
    let err = LiveDataset::new(
        Path::new("/definitely/not/here.jsonl"),
        &DataConfig::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/definitely/not/here.jsonl"),
        "{err}"
    );
    let cfg = DataConfig {
        train_fraction: 0.95,
        val_fraction: 0.1,
        ..Default::default()
    };
    assert!(matches!(
        LiveDataset::new(Path::new("."), &cfg),
        Err(DataError::Config(_))
    ));
    assert!(matches!(
        LiveDataset::from_config(&DataConfig::default()),
        Err(DataError::Config(_))
    ));
}

#[test]
fn append_validates_everything_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("live.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let values = vec![
        serde_json::from_str(&good(1)).unwrap(),
        json!({"context": "q", "response": ""}),
        serde_json::from_str(&good(2)).unwrap(),
    ];
    match append_json(&path, &values, 1 << 20) {
        Err(DataError::InvalidExample { index: 1, reason }) => {
            assert_eq!(reason.kind(), "empty_response")
        }
        other => panic!("expected example 1 rejected, got {other:?}"),
    }
    assert!(!path.exists(), "a rejected call must not write");
    assert!(matches!(
        append_json(
            &path,
            &[json!({"context": "q", "response": "r".repeat(200)})],
            100
        ),
        Err(DataError::InvalidExample { index: 0, .. })
    ));

    // Parsed examples round-trip through append.
    let ex = parse_value(&serde_json::from_str(&good(5)).unwrap()).unwrap();
    let receipt = append_examples(&path, std::slice::from_ref(&ex), 1 << 20).unwrap();
    assert_eq!(receipt.appended, 1);
    let snap = load(&path, &DataConfig::default(), &no_limit).unwrap();
    let all: Vec<_> = snap
        .train
        .iter()
        .chain(&snap.val)
        .chain(&snap.test)
        .collect();
    assert_eq!(all, [&ex]);
}

#[test]
fn append_after_a_torn_line_does_not_glue_onto_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.jsonl");
    write(
        &path,
        format!("{}\n{{\"context\":\"torn", good(1)).as_bytes(),
    );
    append_json(&path, &[serde_json::from_str(&good(2)).unwrap()], 1 << 20).unwrap();
    let r = load(&path, &DataConfig::default(), &no_limit)
        .unwrap()
        .report;
    assert_eq!(r.counts.total(), 2);
    // The torn line is now a complete bad line: reported, not silent.
    assert_eq!(r.bad_lines.len(), 1);
    assert_eq!(
        (r.bad_lines[0].line, r.bad_lines[0].reason.kind()),
        (2, "invalid_json")
    );
}

#[test]
fn concurrent_appends_and_reads_never_yield_a_torn_example() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.jsonl");
    // Large lines make a reader catch a write in progress.
    let big = |w: usize, i: usize| json!({"id": format!("w{w}-{i}"), "context": format!("User: {}", "q".repeat(20_000)), "response": format!("{w}:{i}:{}", "r".repeat(30_000))});
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in (0..40).step_by(2) {
                    append_json(&path, &[big(w, i), big(w, i + 1)], 1 << 20).unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let mut snapshots = 0;
            let mut last = 0;
            while !done.load(Ordering::SeqCst) {
                if !path.exists() {
                    continue;
                }
                let snap = load(&path, &DataConfig::default(), &no_limit).unwrap();
                assert_eq!(snap.report.bad_count(), 0, "{:?}", snap.report.bad_lines);
                let all = snap.train.iter().chain(&snap.val).chain(&snap.test);
                for e in all {
                    let (w, i) = e.id.as_deref().unwrap()[1..].split_once('-').unwrap();
                    assert_eq!(e.response, format!("{w}:{i}:{}", "r".repeat(30_000)));
                }
                assert!(snap.report.counts.total() >= last);
                last = snap.report.counts.total();
                snapshots += 1;
            }
            snapshots
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    let snap = load(&path, &DataConfig::default(), &no_limit).unwrap();
    assert_eq!(snap.report.counts.total(), 120);
    assert_eq!(snap.report.bad_count(), 0);
    assert!(snap.report.pending_lines.is_empty());
}
