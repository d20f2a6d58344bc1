//! Per-epoch curves of one or several runs (one line per run, with a legend), as PNG and SVG.
//!
//! Text is rendered with an embedded ASCII subset of DejaVu Sans (plotters' `ab_glyph` feature), so
//! plots draw the same on a machine without any system fonts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::metrics::{EpochRecord, RunMetrics};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("embedded plot font cannot be loaded")]
    Font,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

/// One chart of the run outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    FormatAccuracy,
    Reward,
    ValLoss,
}

impl Chart {
    pub const ALL: [Chart; 3] = [Chart::FormatAccuracy, Chart::Reward, Chart::ValLoss];

    /// File name without extension.
    pub fn file_stem(self) -> &'static str {
        match self {
            Chart::FormatAccuracy => "format_accuracy",
            Chart::Reward => "reward_mean",
            Chart::ValLoss => "val_loss",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Chart::FormatAccuracy => "Format accuracy (validation)",
            Chart::Reward => "Mean reward (validation)",
            Chart::ValLoss => "Validation loss (solid: after GRPO, dashed: after SFT)",
        }
    }

    fn y_label(self) -> &'static str {
        match self {
            Chart::FormatAccuracy => "format accuracy (%)",
            Chart::Reward => "mean reward",
            Chart::ValLoss => "loss",
        }
    }
}

/// A line on a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// Index into the palette: lines of the same run share a colour.
    pub color: usize,
    pub dashed: bool,
    /// (epoch, value), finite values only.
    pub points: Vec<(u32, f64)>,
}

/// Colour-blind-friendly (Tableau 10) line colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn points(run: &RunMetrics, f: impl Fn(&EpochRecord) -> Option<f64>) -> Vec<(u32, f64)> {
    run.epochs
        .iter()
        .filter_map(|e| f(e).filter(|v| v.is_finite()).map(|v| (e.epoch as u32, v)))
        .collect()
}

/// The lines of `chart`, one per run (val loss: one per run and phase); empty lines are left out.
pub fn chart_series(chart: Chart, runs: &[RunMetrics]) -> Vec<Series> {
    let mut out = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let line = |label: String, dashed, pts| Series { label, color: i, dashed, points: pts };
        match chart {
            Chart::FormatAccuracy => {
                out.push(line(run.name.clone(), false, points(run, |e| e.format_accuracy.map(|a| a * 100.0))))
            }
            Chart::Reward => out.push(line(run.name.clone(), false, points(run, |e| e.reward_mean))),
            Chart::ValLoss => {
                out.push(line(format!("{} (GRPO)", run.name), false, points(run, |e| e.val_loss_after_grpo)));
                out.push(line(format!("{} (SFT)", run.name), true, points(run, |e| e.val_loss_after_sft)));
            }
        }
    }
    out.retain(|s| !s.points.is_empty());
    out
}

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// Draws every chart that has data into `out_dir` as `<chart>.png` and `<chart>.svg`; returns the
/// files written. Charts without any data point are skipped.
pub fn plot_runs(runs: &[RunMetrics], out_dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    register_font()?;
    std::fs::create_dir_all(out_dir).map_err(|source| PlotError::Io { path: out_dir.to_path_buf(), source })?;
    let mut written = Vec::new();
    for chart in Chart::ALL {
        let series = chart_series(chart, runs);
        if series.is_empty() {
            continue;
        }
        let png = out_dir.join(format!("{}.png", chart.file_stem()));
        let svg = out_dir.join(format!("{}.svg", chart.file_stem()));
        let draw_err = |path: &Path, message: String| PlotError::Draw { path: path.to_path_buf(), message };
        {
            let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
            draw(&root, chart, &series).map_err(|e| draw_err(&png, e.to_string()))?;
            root.present().map_err(|e| draw_err(&png, e.to_string()))?;
        }
        {
            let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
            draw(&root, chart, &series).map_err(|e| draw_err(&svg, e.to_string()))?;
            root.present().map_err(|e| draw_err(&svg, e.to_string()))?;
        }
        written.push(png);
        written.push(svg);
    }
    Ok(written)
}

const SIZE: (u32, u32) = (960, 600);

fn y_range(chart: Chart, series: &[Series]) -> (f64, f64) {
    if chart == Chart::FormatAccuracy {
        return (0.0, 100.0);
    }
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.08).max(1e-3 * hi.abs().max(1.0));
    (lo - pad, hi + pad)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: Chart,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let max_epoch = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).max().unwrap_or(1).max(2);
    let (y_lo, y_hi) = y_range(chart, series);
    let mut ctx = ChartBuilder::on(root)
        .caption(chart.title(), ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(1u32..max_epoch, y_lo..y_hi)?;
    ctx.configure_mesh()
        .x_desc("epoch")
        .y_desc(chart.y_label())
        .x_labels((max_epoch as usize).min(20))
        .y_label_formatter(&|v| if chart == Chart::FormatAccuracy { format!("{v:.0}") } else { format!("{v:.2}") })
        .max_light_lines(4)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for s in series {
        let color = PALETTE[s.color % PALETTE.len()];
        let style = color.stroke_width(2);
        let pts = s.points.clone();
        let anno = if s.dashed {
            ctx.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))?
        } else {
            ctx.draw_series(LineSeries::new(pts.clone(), style))?
        };
        // Legend sample: two segments, with a gap for dashed lines.
        let (gap_from, gap_to) = if s.dashed { (9, 15) } else { (12, 12) };
        anno.label(s.label.clone()).legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (gap_from, 0)], style)
                + PathElement::new(vec![(gap_to, 0), (24, 0)], style)
        });
        let marker = if s.dashed { color.stroke_width(2) } else { color.filled() };
        ctx.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, marker)))?;
    }
    let position = match chart {
        Chart::ValLoss => SeriesLabelPosition::UpperRight,
        _ => SeriesLabelPosition::LowerRight,
    };
    ctx.configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, accs: &[f64]) -> RunMetrics {
        RunMetrics {
            name: name.into(),
            epochs: accs
                .iter()
                .enumerate()
                .map(|(i, &a)| EpochRecord {
                    epoch: i + 1,
                    format_accuracy: Some(a),
                    reward_mean: Some(a * 0.9),
                    val_loss_after_sft: Some(2.0 - a),
                    val_loss_after_grpo: (i % 2 == 0).then_some(1.9 - a),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn series_skip_missing_values_and_share_colours_per_run() {
        let runs = [run("a", &[0.1, 0.5, f64::NAN]), RunMetrics { name: "empty".into(), ..Default::default() }];
        let acc = chart_series(Chart::FormatAccuracy, &runs);
        assert_eq!(acc.len(), 1);
        assert_eq!(acc[0].points, vec![(1, 10.0), (2, 50.0)]);
        let loss = chart_series(Chart::ValLoss, &runs);
        assert_eq!(loss.len(), 2);
        assert_eq!(loss[0].points, vec![(1, 1.9 - 0.1)], "after-GRPO loss on odd epochs, NaN dropped");
        assert!(loss[1].dashed && loss[1].color == loss[0].color);
    }

    #[test]
    fn writes_png_and_svg_with_legend_text() {
        let dir = tempfile::tempdir().unwrap();
        let runs = [run("ASRL", &[0.1, 0.4, 0.8, 0.95]), run("SFT only", &[0.05, 0.2, 0.3])];
        let files = plot_runs(&runs, dir.path()).unwrap();
        assert_eq!(files.len(), 6);
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() > 1000, "{}", f.display());
        }
        let png = std::fs::read(dir.path().join("format_accuracy.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(dir.path().join("format_accuracy.svg")).unwrap();
        assert!(svg.contains("ASRL") && svg.contains("SFT only") && svg.contains("epoch"));
        // No data at all: nothing is drawn.
        let none = plot_runs(&[RunMetrics::default()], &dir.path().join("none")).unwrap();
        assert!(none.is_empty());
    }
}
