//! `asrl-learner data check`: inspect a dataset (demo data is written by `asrl-tools demo-data`).

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use asrl_common::config::DataConfig;
use asrl_common::data::{approx_token_count, thousands, DataReport, Example, ExampleEncoder, LiveDataset};
use asrl_common::tokenizer::Tokenizer;
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
    /// Model or tokenizer directory (tokenizer.json, tokenizer_config.json; or the
    /// tokenizer.json itself) for exact token counts, the chat template included, as `train`
    /// counts them; without it lengths are estimated (bytes/3 + 4 per message, on the long side).
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

/// Token counts: with a tokenizer, the length `train` filters by
/// ([`ExampleEncoder::seq_len`]: the chat-templated prompt + response); else the estimate.
struct Counter {
    encoder: Option<ExampleEncoder>,
    /// Examples the tokenizer rejected: counted as too long, as `train` does.
    failures: RefCell<usize>,
    counts: RefCell<Vec<usize>>,
}

impl Counter {
    fn count(&self, e: &Example) -> usize {
        let n = match &self.encoder {
            None => approx_token_count(e),
            Some(encoder) => encoder.seq_len(e),
        };
        if n == usize::MAX {
            *self.failures.borrow_mut() += 1;
        } else {
            self.counts.borrow_mut().push(n);
        }
        n
    }
}

/// The model's tokenizer (with its chat template) from a model or tokenizer directory, or from
/// the directory of a `tokenizer.json` given directly.
fn load_tokenizer(path: &Path) -> anyhow::Result<Tokenizer> {
    let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
    Ok(Tokenizer::from_hf_dir(dir)?)
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = DataConfig {
        max_seq_len: args.max_seq_len,
        max_line_bytes: args.max_line_bytes,
        ..Default::default()
    };
    let counter = Counter {
        encoder: args.tokenizer.as_deref().map(load_tokenizer).transpose()?.map(ExampleEncoder::new),
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
            "token counts: tokenizer {} with its chat template (as `train` counts them)",
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
            "warning: the tokenizer failed on {} examples; they count as too long",
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
    write_formats(&mut out, r)?;
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

/// Which layout each file's valid lines use (`context/response (paper) 60, messages 2`).
fn write_formats(out: &mut impl Write, r: &DataReport) -> std::io::Result<()> {
    writeln!(out, "formats (valid lines per file):")?;
    for file in &r.files {
        let counts = r.formats.get(file).filter(|c| !c.is_empty());
        let text = match counts {
            None => "no valid lines".to_string(),
            Some(c) => c.iter().map(|(f, n)| format!("{f} {}", thousands(*n))).collect::<Vec<_>>().join(", "),
        };
        writeln!(out, "  {}: {text}", file.display())?;
    }
    Ok(())
}
