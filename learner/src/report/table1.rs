//! The analogue of the paper's Table 1 over several runs (one per schedule): validation format
//! accuracy at each epoch and the epochs needed to reach 90%, plus the live-data metric: for each
//! pattern injected while the run was going, the epochs it took to reach 80% on that pattern.

use std::collections::{BTreeMap, BTreeSet};

use super::metrics::RunMetrics;
use super::table::{fmt_pct, TextTable};

#[derive(Debug, Clone, PartialEq)]
pub struct Table1Options {
    /// Format accuracy that counts as "learnt" in the main table (paper: 0.9).
    pub threshold: f64,
    /// Per-pattern accuracy the live-data metric waits for (0.8).
    pub live_threshold: f64,
    /// Patterns to report; empty = every pattern first evaluated after the run's first evaluation.
    pub injected: Vec<String>,
}

impl Default for Table1Options {
    fn default() -> Self {
        Self { threshold: 0.9, live_threshold: 0.8, injected: Vec::new() }
    }
}

/// The first epoch whose accuracy is at least `threshold`, from (epoch, accuracy) pairs.
pub fn first_epoch_reaching(points: impl IntoIterator<Item = (usize, f64)>, threshold: f64) -> Option<usize> {
    points.into_iter().filter(|(_, a)| a.is_finite() && *a >= threshold).map(|(e, _)| e).min()
}

/// How fast one run learnt one injected pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedPattern {
    pub example_type: String,
    /// First epoch with an evaluation of this pattern: when it entered the data.
    pub first_epoch: usize,
    /// Epochs from `first_epoch` (counted as 1) to the first reaching the threshold; `None` if never.
    pub epochs_to_threshold: Option<usize>,
    /// Last measured accuracy on the pattern.
    pub last_accuracy: f64,
}

/// The live-data metric of one run, per injected pattern (sorted by name).
pub fn injected_patterns(run: &RunMetrics, opts: &Table1Options) -> Vec<InjectedPattern> {
    let mut by_type: BTreeMap<&str, Vec<(usize, f64)>> = BTreeMap::new();
    for e in &run.evals {
        by_type.entry(e.example_type.as_str()).or_default().push((e.epoch, e.format_accuracy));
    }
    let Some(run_start) = run.evals.iter().map(|e| e.epoch).min() else { return Vec::new() };
    by_type
        .into_iter()
        .filter_map(|(name, mut points)| {
            points.sort_by_key(|p| p.0);
            let first_epoch = points[0].0;
            let wanted = if opts.injected.is_empty() {
                first_epoch > run_start
            } else {
                opts.injected.iter().any(|t| t == name)
            };
            wanted.then(|| InjectedPattern {
                example_type: name.to_string(),
                first_epoch,
                epochs_to_threshold: first_epoch_reaching(points.iter().copied(), opts.live_threshold)
                    .map(|e| e - first_epoch + 1),
                last_accuracy: points[points.len() - 1].1,
            })
        })
        .collect()
}

/// Both tables as aligned text.
pub fn render_table1(runs: &[RunMetrics], opts: &Table1Options) -> String {
    let epochs: BTreeSet<usize> = runs.iter().flat_map(|r| r.epochs.iter().map(|e| e.epoch)).collect();
    let to_label = format!("epochs to {:.0}%", opts.threshold * 100.0);
    let mut header: Vec<String> = vec!["schedule".into()];
    header.extend(epochs.iter().map(|e| format!("ep {e}")));
    header.push(to_label);
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut main = TextTable::new(&header_refs, 1);
    for run in runs {
        let acc: BTreeMap<usize, Option<f64>> = run.epochs.iter().map(|e| (e.epoch, e.format_accuracy)).collect();
        let mut row = vec![run.name.clone()];
        row.extend(epochs.iter().map(|e| fmt_pct(acc.get(e).copied().flatten())));
        let reached = first_epoch_reaching(acc.iter().filter_map(|(e, a)| a.map(|a| (*e, a))), opts.threshold);
        row.push(match reached {
            Some(e) => e.to_string(),
            None => format!("> {}", run.epochs.last().map_or(0, |e| e.epoch)),
        });
        main.row(row);
    }
    let mut out = format!(
        "Table 1: validation format accuracy by epoch (\"> N\": not reached in N epochs)\n{}",
        main.render()
    );

    let live_label = format!("epochs to {:.0}%", opts.live_threshold * 100.0);
    let mut live = TextTable::new(&["schedule", "pattern", "first epoch", &live_label, "last"], 2);
    let mut any = false;
    for run in runs {
        for p in injected_patterns(run, opts) {
            any = true;
            live.row(vec![
                run.name.clone(),
                p.example_type,
                p.first_epoch.to_string(),
                p.epochs_to_threshold.map_or("never".into(), |n| n.to_string()),
                fmt_pct(Some(p.last_accuracy)),
            ]);
        }
    }
    out.push('\n');
    if any {
        out.push_str(&format!(
            "Live data: epochs until an injected pattern reaches {:.0}% format accuracy (its first epoch counts as 1)\n{}",
            opts.live_threshold * 100.0,
            live.render()
        ));
    } else {
        out.push_str("Live data: no injected pattern found (no `eval` records of a pattern that appeared mid-run)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::metrics::{EpochRecord, EvalRecord};

    fn run(name: &str, accs: &[f64], evals: &[(usize, &str, f64)]) -> RunMetrics {
        RunMetrics {
            name: name.into(),
            epochs: accs
                .iter()
                .enumerate()
                .map(|(i, &a)| EpochRecord { epoch: i + 1, format_accuracy: Some(a), ..Default::default() })
                .collect(),
            evals: evals
                .iter()
                .map(|&(epoch, t, a)| EvalRecord {
                    epoch,
                    example_type: t.into(),
                    n: None,
                    format_accuracy: a,
                    reward_mean: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn epochs_to_threshold() {
        assert_eq!(first_epoch_reaching([(1, 0.5), (2, 0.9), (3, 0.95)], 0.9), Some(2));
        assert_eq!(first_epoch_reaching([(1, 0.5), (2, f64::NAN)], 0.9), None);
    }

    #[test]
    fn injected_patterns_are_detected_and_timed() {
        let evals = [
            (1, "qa", 0.5),
            (2, "qa", 0.9),
            (3, "json", 0.2),
            (4, "json", 0.7),
            (5, "json", 0.85),
            (4, "yaml", 0.1),
            (5, "yaml", 0.3),
        ];
        let r = run("ASRL", &[0.5, 0.9, 0.6, 0.8, 0.9], &evals);
        let p = injected_patterns(&r, &Table1Options::default());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0], InjectedPattern { example_type: "json".into(), first_epoch: 3, epochs_to_threshold: Some(3), last_accuracy: 0.85 });
        assert_eq!(p[1].example_type, "yaml");
        assert_eq!(p[1].epochs_to_threshold, None);
        let only_qa = Table1Options { injected: vec!["qa".into()], ..Default::default() };
        let p = injected_patterns(&r, &only_qa);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].epochs_to_threshold, Some(2));
    }

    #[test]
    fn renders_both_tables() {
        let runs = [
            run("ASRL", &[0.2, 0.6, 0.92, 0.97], &[(1, "qa", 0.2), (3, "json", 0.81)]),
            run("SFT", &[0.1, 0.3, 0.5], &[]),
        ];
        let text = render_table1(&runs, &Table1Options::default());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("schedule") && lines[1].ends_with("epochs to 90%"), "{text}");
        assert!(lines[3].starts_with("ASRL") && lines[3].contains("92.0%") && lines[3].ends_with(" 3"), "{text}");
        assert!(lines[4].starts_with("SFT") && lines[4].ends_with("> 3"), "{text}");
        assert!(lines[4].contains(" - "), "missing epoch 4 shown as -: {text}");
        let live = lines.iter().position(|l| l.starts_with("Live data")).unwrap();
        assert!(lines[live + 3].starts_with("ASRL") && lines[live + 3].contains("json"), "{text}");
        assert!(lines[live + 3].contains("  1  "), "{text}");
        let none = render_table1(&runs[1..], &Table1Options::default());
        assert!(none.contains("no injected pattern"), "{none}");
    }
}
