//! `asrl-tools demo-data`: write checkable demo examples in the dual-brain format, once or
//! live at a rate (what used to be `asrl-learner data generate`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use asrl_common::config::DataConfig;
use asrl_common::data::append_json;
use clap::Args;

use super::{DemoGenerator, Pattern};

#[derive(Debug, Args)]
pub struct DemoDataArgs {
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

/// Writes `--count` examples at once, or appends them live at `--rate`.
pub fn run(args: &DemoDataArgs) -> anyhow::Result<ExitCode> {
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
