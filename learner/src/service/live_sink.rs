//! `AddExamples` into the live dataset file: validated, appended and fsynced before the call is
//! acknowledged, so nothing acknowledged is ever lost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use asrl_common::data::{append_examples, parse_line, DataError, Example};

use super::{AddExamplesOutcome, ExampleSink, SinkError};

pub struct LiveFileSink {
    path: PathBuf,
    max_line_bytes: usize,
    added: AtomicU64,
    base_size: AtomicU64,
    // Serialises appends from concurrent RPCs (the file lock also guards other processes).
    write: Mutex<()>,
}

impl LiveFileSink {
    /// `base_size`: examples already in the dataset, reported by `dataset_size` plus additions.
    pub fn new(path: PathBuf, max_line_bytes: usize, base_size: u64) -> Self {
        Self { path, max_line_bytes, added: AtomicU64::new(0), base_size: AtomicU64::new(base_size), write: Mutex::new(()) }
    }

    /// The learner re-read the dataset and found `examples`: they include every addition so far.
    pub fn note_snapshot(&self, examples: u64) {
        self.base_size.store(examples, Ordering::SeqCst);
        self.added.store(0, Ordering::SeqCst);
    }
}

impl ExampleSink for LiveFileSink {
    fn add_jsonl(&self, jsonl: &str) -> Result<AddExamplesOutcome, SinkError> {
        let mut valid: Vec<Example> = Vec::new();
        let mut outcome = AddExamplesOutcome::default();
        for (i, line) in jsonl.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line.as_bytes(), self.max_line_bytes) {
                Ok(example) => valid.push(example),
                Err(reason) => outcome.rejected.push((i as u32 + 1, reason.to_string())),
            }
        }
        if valid.is_empty() {
            return Ok(outcome);
        }
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        match append_examples(&self.path, &valid, self.max_line_bytes) {
            Ok(receipt) => {
                outcome.accepted = receipt.appended as u32;
                self.added.fetch_add(receipt.appended as u64, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "AddExamples append failed; nothing appended");
                return Err(SinkError { no_space: is_out_of_space(&e), message: e.to_string() });
            }
        }
        Ok(outcome)
    }

    fn dataset_size(&self) -> u64 {
        self.base_size.load(Ordering::SeqCst) + self.added.load(Ordering::SeqCst)
    }
}

fn is_out_of_space(e: &DataError) -> bool {
    use std::io::ErrorKind;
    match e {
        DataError::Io { source, .. } => {
            matches!(source.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_lines_are_durable_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.jsonl");
        let sink = LiveFileSink::new(path.clone(), 1 << 20, 10);
        let good = r#"{"context":"User: 1+1?","response":"<|thinking|>\n[LOGIC]1+1=2[/LOGIC]\n[INTUITION]easy[/INTUITION]\n<|/thinking|>\n2","type":"math"}"#;
        let out = sink.add_jsonl(&format!("{good}\n{{not json\n{{\"context\":\"User: x\"}}\n")).unwrap();
        assert_eq!(out.accepted, 1);
        assert_eq!(out.rejected.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(sink.dataset_size(), 11);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("1+1=2"));
    }

    #[test]
    fn an_append_failure_is_an_error_not_a_rejected_line() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: opening it for append fails.
        let path = dir.path().join("live.jsonl");
        std::fs::create_dir(&path).unwrap();
        let sink = LiveFileSink::new(path.clone(), 1 << 20, 0);
        let good = r#"{"context":"User: 1+1?","response":"2","type":"math"}"#;
        let err = sink.add_jsonl(good).unwrap_err();
        assert!(err.message.contains("live.jsonl"), "{}", err.message);
        assert!(!err.no_space);
        assert_eq!(sink.dataset_size(), 0, "nothing counted as added");
    }
}
