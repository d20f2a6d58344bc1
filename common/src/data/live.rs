//! The live dataset: re-scanned every epoch into a frozen [`Snapshot`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::example::{BadReason, Example};
use super::format::ExampleFormat;
use super::reader::{list_files, scan_file};
use super::split::{Split, SplitFractions};
use super::DataError;
use crate::config::DataConfig;

/// Counts per split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitCounts {
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

impl SplitCounts {
    pub fn total(&self) -> usize {
        self.train + self.val + self.test
    }

    pub fn get(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train,
            Split::Val => self.val,
            Split::Test => self.test,
        }
    }

    fn add(&mut self, split: Split) {
        match split {
            Split::Train => self.train += 1,
            Split::Val => self.val += 1,
            Split::Test => self.test += 1,
        }
    }
}

/// A rejected line: `file:line: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub file: PathBuf,
    pub line: usize,
    pub reason: BadReason,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// What one scan found.
#[derive(Debug, Clone, Default)]
pub struct DataReport {
    pub source: PathBuf,
    pub files: Vec<PathBuf>,
    /// Non-blank complete lines read (plus a whole last example without newline).
    pub lines: usize,
    pub blank_lines: usize,
    /// Examples kept, per split.
    pub counts: SplitCounts,
    /// Examples kept, per `type` and split.
    pub by_type: BTreeMap<String, SplitCounts>,
    /// Valid examples dropped because an earlier line had the same messages and response.
    pub duplicates: usize,
    /// Valid examples dropped for being over `max_seq_len` tokens.
    pub too_long: usize,
    pub max_seq_len: usize,
    /// The first `max_reported_bad_lines` bad lines, in reading order.
    pub bad_lines: Vec<BadLine>,
    /// Bad lines counted but not kept in `bad_lines`.
    pub bad_lines_omitted: usize,
    /// Every bad line, by [`BadReason::kind`].
    pub bad_by_reason: BTreeMap<&'static str, usize>,
    /// Last lines without newline that are not yet a whole example (being written).
    pub pending_lines: Vec<(PathBuf, usize)>,
    /// Valid lines per file and [`ExampleFormat`] (duplicates and over-long ones included).
    pub formats: BTreeMap<PathBuf, BTreeMap<ExampleFormat, usize>>,
}

impl DataReport {
    pub fn bad_count(&self) -> usize {
        self.bad_by_reason.values().sum()
    }
}

/// The dataset as of one scan; training uses it for a whole epoch.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub test: Vec<Example>,
    pub report: DataReport,
    /// Counts of the snapshot before this one (None for the first).
    pub previous: Option<SplitCounts>,
}

impl Snapshot {
    pub fn split(&self, split: Split) -> &[Example] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// "3,420 → 3,485 train examples, +65" (or "3,420 train examples" the first time).
    pub fn growth_line(&self) -> String {
        let now = self.report.counts.train;
        match self.previous {
            None => format!("{} train examples", thousands(now)),
            Some(prev) => {
                let delta = now as i64 - prev.train as i64;
                format!(
                    "{} → {} train examples, {delta:+}",
                    thousands(prev.train),
                    thousands(now)
                )
            }
        }
    }
}

/// `3420` → `3,420`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A JSONL file or directory that may grow while training runs.
#[derive(Debug, Clone)]
pub struct LiveDataset {
    source: PathBuf,
    fractions: SplitFractions,
    max_seq_len: usize,
    max_line_bytes: usize,
    max_reported_bad_lines: usize,
    previous: Option<SplitCounts>,
}

impl LiveDataset {
    /// `config.path` is ignored: the source is given explicitly.
    pub fn new(source: &Path, config: &DataConfig) -> Result<Self, DataError> {
        std::fs::metadata(source).map_err(|e| DataError::Io {
            path: source.to_path_buf(),
            source: e,
        })?;
        Ok(Self {
            source: source.to_path_buf(),
            fractions: SplitFractions::new(config.train_fraction, config.val_fraction)?,
            max_seq_len: config.max_seq_len,
            max_line_bytes: config.max_line_bytes,
            max_reported_bad_lines: config.max_reported_bad_lines,
            previous: None,
        })
    }

    /// From `config.path` (required).
    pub fn from_config(config: &DataConfig) -> Result<Self, DataError> {
        let path = config
            .path
            .as_deref()
            .ok_or_else(|| DataError::Config("data.path is not set".into()))?;
        Self::new(path, config)
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Re-reads the source. `count_tokens` gives an example's prompt + response length in the
    /// model's tokens (examples over `max_seq_len` are filtered).
    pub fn snapshot(
        &mut self,
        count_tokens: &dyn Fn(&Example) -> usize,
    ) -> Result<Snapshot, DataError> {
        let mut report = DataReport {
            source: self.source.clone(),
            max_seq_len: self.max_seq_len,
            ..Default::default()
        };
        let mut seen = HashSet::new();
        let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
        report.files = list_files(&self.source)?;
        for file in &report.files {
            let scanned = scan_file(file, self.max_line_bytes)?;
            report.lines += scanned.lines.len();
            report.blank_lines += scanned.blank_lines;
            if let Some(line) = scanned.pending_line {
                report.pending_lines.push((file.clone(), line));
            }
            let formats = report.formats.entry(file.clone()).or_default();
            for (line, result) in scanned.lines {
                let example = match result {
                    Ok((example, format)) => {
                        *formats.entry(format).or_default() += 1;
                        example
                    }
                    Err(reason) => {
                        *report.bad_by_reason.entry(reason.kind()).or_default() += 1;
                        if report.bad_lines.len() < self.max_reported_bad_lines {
                            report.bad_lines.push(BadLine {
                                file: file.clone(),
                                line,
                                reason,
                            });
                        } else {
                            report.bad_lines_omitted += 1;
                        }
                        continue;
                    }
                };
                if !seen.insert(example.content_key()) {
                    report.duplicates += 1;
                    continue;
                }
                if count_tokens(&example) > self.max_seq_len {
                    report.too_long += 1;
                    continue;
                }
                let split = self.fractions.split_of(&example);
                report.counts.add(split);
                report
                    .by_type
                    .entry(example.example_type.clone())
                    .or_default()
                    .add(split);
                match split {
                    Split::Train => train.push(example),
                    Split::Val => val.push(example),
                    Split::Test => test.push(example),
                }
            }
        }
        let previous = self.previous.replace(report.counts);
        Ok(Snapshot {
            train,
            val,
            test,
            report,
            previous,
        })
    }
}
