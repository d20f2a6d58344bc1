//! `asrl-learner data check|generate`: inspect a dataset, write demo data (once or live).

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use asrl_common::config::DataConfig;
use asrl_common::data::generate::{DemoGenerator, Pattern};
use asrl_common::data::{append_json, approx_token_count, thousands, Example, ExampleEncoder, LiveDataset};
use asrl_common::tokenizer::Tokenizer;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Validate a dataset: counts per type and split, every bad line with its reason.
    /// Exit code 1 when any line is bad, 2 when the path cannot be read.
    Check(CheckArgs),
    /// Write checkable demo examples in the dual-brain format (once, or live at a rate).
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A JSONL file or a directory of *.jsonl files.
    pub path: PathBuf,
    /// Examples longer than this many tokens (prompt + response) are filtered.
    #[arg(long, default_value_t = 2000)]
    pub max_seq_len: usize,
    /// Model or tokenizer directory (tokenizer.json, tokenizer_config.json; or the
    /// tokenizer.json itself) for exact token counts, the chat template included, as `train`
    /// counts them; without it lengths are estimated (bytes/3 + 4 per message, on the long side).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Lines longer than this many bytes are bad.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_line_bytes: usize,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// JSONL file to write (appended to with --append or --live).
    #[arg(long)]
    pub out: PathBuf,
    /// Examples to write (required without --live; with --live, stop after this many).
    #[arg(long)]
    pub count: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Index of the first example of the seed's stream (resume a stream without repeats).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Only one category (simple_qa, reasoning_chain, multi_turn, mixed) or topic
    /// (arithmetic, units, comparison, dates, strings).
    #[arg(long)]
    pub pattern: Option<Pattern>,
    /// Append to an existing file instead of refusing to touch it.
    #[arg(long)]
    pub append: bool,
    /// Keep appending one example at a time at --rate until killed, --duration or --count.
    #[arg(long)]
    pub live: bool,
    /// Live rate: N/h, N/m or N/s.
    #[arg(long, default_value = "200/h")]
    pub rate: Rate,
    /// Live mode stops after this long: 90s, 10m, 2h (plain numbers are seconds).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Examples per unit of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
}

impl Rate {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("rate {s:?}: expected N/h, N/m or N/s with N > 0");
        let (n, unit) = s.split_once('/').ok_or_else(err)?;
        let n: f64 = n.trim().parse().map_err(|_| err())?;
        let seconds = match unit.trim() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            _ => return Err(err()),
        };
        if !(n.is_finite() && n > 0.0) {
            return Err(err());
        }
        Ok(Rate {
            per_second: n / seconds,
        })
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("duration {s:?}: expected e.g. 90s, 10m, 2h");
    let s = s.trim();
    let (number, scale) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1.0),
        Some('m') => (&s[..s.len() - 1], 60.0),
        Some('h') => (&s[..s.len() - 1], 3600.0),
        _ => (s, 1.0),
    };
    let n: f64 = number.parse().map_err(|_| err())?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(n * scale))
}

pub fn run(command: DataCommand) -> anyhow::Result<ExitCode> {
    match command {
        DataCommand::Check(args) => check(&args),
        DataCommand::Generate(args) => generate(&args),
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

fn generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let generator = DemoGenerator::new(args.seed, args.pattern);
    let line_limit = DataConfig::default().max_line_bytes;
    let non_empty = std::fs::metadata(&args.out)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if non_empty && !args.append && !args.live {
        bail!(
            "{} already holds data; pass --append to add to it",
            args.out.display()
        );
    }
    if !args.live {
        let count = args.count.context("--count is required without --live")?;
        const BATCH: u64 = 512;
        let mut index = args.start;
        let end = args.start + count;
        while index < end {
            let batch_end = (index + BATCH).min(end);
            let values: Vec<_> = (index..batch_end)
                .map(|i| generator.example(i).to_json())
                .collect();
            append_json(&args.out, &values, line_limit)?;
            index = batch_end;
        }
        println!(
            "wrote {count} examples to {} (seed {}, indices {}..{end})",
            args.out.display(),
            args.seed,
            args.start
        );
        return Ok(ExitCode::SUCCESS);
    }

    let interval = args.rate.interval();
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "appending to {} at {:.3}/s (seed {}, from index {}){}",
        args.out.display(),
        args.rate.per_second,
        args.seed,
        args.start,
        args.pattern
            .map(|p| format!(", pattern {p}"))
            .unwrap_or_default()
    )?;
    out.flush()?;
    let mut written: u64 = 0;
    loop {
        if args.count.is_some_and(|c| written >= c)
            || args.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        let example = generator.example(args.start + written);
        append_json(&args.out, &[example.to_json()], line_limit)?;
        written += 1;
        // Printed only after the append is durable: a reader of this line may rely on it.
        writeln!(out, "appended {} ({} total)", example.id, written)?;
        out.flush()?;
        // Scheduled from the start so the rate does not drift with append latency.
        let next = started + interval.mul_f64(written as f64);
        let wait_until = match args.duration {
            Some(d) => next.min(started + d),
            None => next,
        };
        std::thread::sleep(wait_until.saturating_duration_since(Instant::now()));
    }
    writeln!(out, "stopped after {written} examples")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations() {
        assert_eq!(
            Rate::from_str("200/h").unwrap().interval(),
            Duration::from_secs(18)
        );
        assert_eq!(
            Rate::from_str("10/m").unwrap().interval(),
            Duration::from_secs(6)
        );
        assert_eq!(
            Rate::from_str("1/s").unwrap().interval(),
            Duration::from_secs(1)
        );
        for bad in ["200", "0/s", "x/s", "5/d", "-1/h"] {
            assert!(Rate::from_str(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("soon").is_err());
    }
}
