//! Aligned plain-text tables, and the per-epoch summary printed at the end of a run.

use super::metrics::RunMetrics;

/// A table whose first row is the header; the first `left_cols` columns are left-aligned (labels),
/// the rest right-aligned (numbers).
pub struct TextTable {
    rows: Vec<Vec<String>>,
    left_cols: usize,
}

impl TextTable {
    pub fn new(header: &[&str], left_cols: usize) -> Self {
        Self { rows: vec![header.iter().map(|s| s.to_string()).collect()], left_cols }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (i, row) in self.rows.iter().enumerate() {
            let mut line = String::new();
            for (c, width) in widths.iter().enumerate() {
                let cell = row.get(c).map(String::as_str).unwrap_or("");
                if c > 0 {
                    line.push_str("  ");
                }
                if c < self.left_cols {
                    line.push_str(&format!("{cell:<width$}"));
                } else {
                    line.push_str(&format!("{cell:>width$}"));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if i == 0 {
                let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        out
    }
}

/// `x` with `decimals` places, or `-` when absent or not finite.
pub fn fmt_opt(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

/// A share in [0, 1] as a percentage with one decimal.
pub fn fmt_pct(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{:.1}%", v * 100.0),
        _ => "-".into(),
    }
}

/// The end-of-run summary: one row per epoch with dataset size, losses, reward and format accuracy.
pub fn summary_table(run: &RunMetrics) -> String {
    let mut t = TextTable::new(&[
        "epoch", "phases", "train", "+new", "sft loss", "val (sft)", "val (grpo)", "reward", "format acc", "time",
    ], 2);
    for e in &run.epochs {
        t.row(vec![
            e.epoch.to_string(),
            if e.phases.is_empty() { "-".into() } else { e.phases.clone() },
            e.train_size.map_or("-".into(), |n| n.to_string()),
            e.train_added.map_or("-".into(), |n| n.to_string()),
            fmt_opt(e.sft_loss, 4),
            fmt_opt(e.val_loss_after_sft, 4),
            fmt_opt(e.val_loss_after_grpo, 4),
            fmt_opt(e.reward_mean, 3),
            fmt_pct(e.format_accuracy),
            e.elapsed_s.filter(|s| s.is_finite()).map_or("-".into(), fmt_duration),
        ]);
    }
    format!("{} ({})\n{}", run.name, run.dir.display(), t.render())
}

/// `95s`, `12m05s`, `2h03m`.
pub fn fmt_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=99 => format!("{s}s"),
        100..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::metrics::EpochRecord;

    #[test]
    fn summary_is_aligned_and_marks_missing_values() {
        let run = RunMetrics {
            name: "ASRL".into(),
            dir: "runs/a".into(),
            epochs: vec![
                EpochRecord {
                    epoch: 1,
                    train_size: Some(64),
                    train_added: Some(64),
                    phases: "sft+grpo".into(),
                    sft_loss: Some(2.345678),
                    val_loss_after_sft: Some(2.0),
                    val_loss_after_grpo: Some(1.98765),
                    reward_mean: Some(0.25),
                    format_accuracy: Some(0.125),
                    elapsed_s: Some(130.0),
                    ..Default::default()
                },
                EpochRecord { epoch: 10, phases: "grpo".into(), reward_mean: Some(f64::NAN), ..Default::default() },
            ],
            ..Default::default()
        };
        let text = summary_table(&run);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ASRL (runs/a)");
        assert!(lines[1].starts_with("epoch  phases"), "{text}");
        assert!(lines[3].contains("2.3457") && lines[3].contains("12.5%") && lines[3].contains("2m10s"), "{text}");
        assert!(lines[4].starts_with("10     grpo"), "{text}");
        // Right-aligned columns: every data row ends at the header's width or is trimmed of `-`.
        assert_eq!(lines[3].len(), lines[1].len(), "{text}");
        assert!(lines[4].ends_with('-'), "{text}");
        assert_eq!(lines[4].len(), lines[1].len(), "{text}");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(5.4), "5s");
        assert_eq!(fmt_duration(725.0), "12m05s");
        assert_eq!(fmt_duration(7380.0), "2h03m");
    }
}
