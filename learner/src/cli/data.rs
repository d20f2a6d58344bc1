//! `asrl-learner data check`: inspect a dataset (demo data is written by `asrl-tools demo-data`).

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use asrl_common::config::DataConfig;
use asrl_common::data::{approx_token_count, thousands, Example, LiveDataset};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Validate a dataset: counts per type and split, every bad line with its reason.
    /// Exit code 1 when any line is bad, 2 when the path cannot be read.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A JSONL file or a directory of *.jsonl files.
    pub path: PathBuf,
    /// Examples longer than this many tokens (prompt + response) are filtered.
    #[arg(long, default_value_t = DataConfig::default().max_seq_len)]
    pub max_seq_len: usize,
    /// Directory holding tokenizer.json (or the file itself) for exact token counts;
    /// without it lengths are estimated (bytes/3 + 4 per message, on the long side).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Lines longer than this many bytes are bad.
    #[arg(long, default_value_t = DataConfig::default().max_line_bytes)]
    pub max_line_bytes: usize,
}

pub fn run(command: DataCommand) -> anyhow::Result<ExitCode> {
    match command {
        DataCommand::Check(args) => check(&args),
    }
}

/// Token counts: the tokenizer when given, else the estimate.
struct Counter {
    tokenizer: Option<tokenizers::Tokenizer>,
    failures: RefCell<usize>,
    counts: RefCell<Vec<usize>>,
}

impl Counter {
    fn count(&self, e: &Example) -> usize {
        let n = match &self.tokenizer {
            None => approx_token_count(e),
            Some(tok) => {
                let texts = e
                    .messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .chain([e.response.as_str()]);
                let mut total = 0;
                for text in texts {
                    match tok.encode(text, false) {
                        // ChatML-style markup adds about 4 tokens per message.
                        Ok(enc) => total += enc.len() + 4,
                        Err(_) => {
                            *self.failures.borrow_mut() += 1;
                            return approx_token_count(e);
                        }
                    }
                }
                total
            }
        };
        self.counts.borrow_mut().push(n);
        n
    }
}

fn load_tokenizer(path: &Path) -> anyhow::Result<tokenizers::Tokenizer> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    tokenizers::Tokenizer::from_file(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = DataConfig {
        max_seq_len: args.max_seq_len,
        max_line_bytes: args.max_line_bytes,
        ..Default::default()
    };
    let counter = Counter {
        tokenizer: args.tokenizer.as_deref().map(load_tokenizer).transpose()?,
        failures: RefCell::new(0),
        counts: RefCell::new(Vec::new()),
    };
    let snapshot = LiveDataset::new(&args.path, &config)?.snapshot(&|e| counter.count(e))?;
    let r = &snapshot.report;

    let mut out = std::io::stdout().lock();
    let files = r.files.len();
    writeln!(
        out,
        "source: {} ({files} file{})",
        args.path.display(),
        if files == 1 { "" } else { "s" }
    )?;
    match &args.tokenizer {
        Some(t) => writeln!(
            out,
            "token counts: tokenizer {} (+4 per message for chat markup)",
            t.display()
        )?,
        None => writeln!(
            out,
            "token counts: estimated (bytes/3 + 4 per message); pass --tokenizer for exact counts"
        )?,
    }
    if *counter.failures.borrow() > 0 {
        writeln!(
            out,
            "warning: the tokenizer failed on {} examples; their lengths are estimated",
            counter.failures.borrow()
        )?;
    }
    writeln!(
        out,
        "lines: {} read, {} blank; {} kept, {} duplicates, {} over {} tokens, {} bad, {} pending (partial last line)",
        thousands(r.lines),
        r.blank_lines,
        thousands(r.counts.total()),
        r.duplicates,
        r.too_long,
        r.max_seq_len,
        r.bad_count(),
        r.pending_lines.len()
    )?;
    let mut counts = counter.counts.borrow().clone();
    if !counts.is_empty() {
        counts.sort_unstable();
        let at = |q: f64| counts[((counts.len() - 1) as f64 * q).round() as usize];
        writeln!(
            out,
            "tokens per example: median {}, p90 {}, max {}",
            at(0.5),
            at(0.9),
            at(1.0)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>8} {:>8}",
        "type", "train", "val", "test", "total"
    )?;
    for (t, c) in &r.by_type {
        writeln!(
            out,
            "{t:<24} {:>8} {:>8} {:>8} {:>8}",
            c.train,
            c.val,
            c.test,
            c.total()
        )?;
    }
    let c = r.counts;
    writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>8} {:>8}",
        "total",
        c.train,
        c.val,
        c.test,
        c.total()
    )?;
    for (file, line) in &r.pending_lines {
        writeln!(
            out,
            "{}:{line}: no trailing newline yet (being written?), left for the next read",
            file.display()
        )?;
    }
    if r.bad_count() == 0 {
        writeln!(out, "\nbad lines: none")?;
        return Ok(ExitCode::SUCCESS);
    }
    let by_reason: Vec<String> = r
        .bad_by_reason
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    writeln!(
        out,
        "\nbad lines ({}): {}",
        r.bad_count(),
        by_reason.join(", ")
    )?;
    for bad in &r.bad_lines {
        writeln!(out, "{bad}")?;
    }
    if r.bad_lines_omitted > 0 {
        writeln!(out, "... and {} more", r.bad_lines_omitted)?;
    }
    Ok(ExitCode::from(1))
}
