//! `fedkit plot RUN_DIR... [--metric test_acc] [--x round|bytes-up|seconds] [--out FILE.png|.svg]`:
//! one curve per run (issue 12's first piece), drawn with `plotters` and a bundled DejaVu Sans
//! (no system fonts). A directory that holds `seed<k>/` runs (a `compare` variant) becomes
//! one curve: the mean over the seeds, with a band of one standard deviation. A `compare`
//! output directory (variants with `seed<k>/` runs) gives one curve per variant. Seeds are
//! averaged point by point (their evaluation rounds are the same).
//!
//! `--x bytes-up` plots against the cumulative uplink in MB (accuracy against bits sent),
//! `seconds` against the cumulative wall time (`timings.jsonl`); `--log-x` takes log10 of x
//! (dropping points at x = 0).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// The x axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XAxis {
    Round,
    BytesUp,
    Seconds,
}

#[derive(Args)]
pub struct PlotArgs {
    /// Run directories, `compare` variant directories (with `seed<k>/`), or `compare` outputs.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The metric on the y axis (a key of metrics.jsonl).
    #[arg(long, default_value = "test_acc")]
    metric: String,
    /// The x axis.
    #[arg(long, value_enum, default_value_t = XAxis::Round)]
    x: XAxis,
    /// log10 of x.
    #[arg(long)]
    log_x: bool,
    /// The image: `.png` or `.svg`.
    #[arg(long, default_value = "plot.png")]
    out: PathBuf,
    /// The title (default: the metric against x).
    #[arg(long)]
    title: Option<String>,
}

/// One curve: its label and, per point, (x, mean y, std y).
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// The (x, y) series of one run directory.
fn series(run: &Path, metric: &str, x: XAxis) -> Result<Vec<(f64, f64)>> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let seconds: Vec<f64> = if x == XAxis::Seconds {
        let t = run.join("timings.jsonl");
        let text =
            std::fs::read_to_string(&t).with_context(|| format!("cannot read {} (for --x seconds)", t.display()))?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["total_s"].as_f64())
            .collect()
    } else {
        Vec::new()
    };
    let (mut bytes, mut out) = (0.0, Vec::new());
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        bytes += v["bytes_up"].as_f64().unwrap_or(0.0);
        let round = v["round"].as_f64().unwrap_or(0.0);
        let xv = match x {
            XAxis::Round => round,
            XAxis::BytesUp => bytes / 1e6,
            XAxis::Seconds => seconds.iter().take(round as usize).sum(),
        };
        if let Some(y) = v[metric].as_f64() {
            out.push((xv, y));
        }
    }
    if out.is_empty() {
        bail!("{}: no `{metric}` in any round (try --metric with a key of that file)", path.display());
    }
    Ok(out)
}

/// The seed runs under `dir` (`seed<k>/metrics.jsonl`), sorted.
fn seed_runs(dir: &Path) -> Vec<PathBuf> {
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed"))
                && p.join("metrics.jsonl").is_file()
        })
        .collect();
    seeds.sort();
    seeds
}

/// The curves of the given paths (see the module documentation).
pub fn curves(paths: &[PathBuf], metric: &str, x: XAxis) -> Result<Vec<Curve>> {
    let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string();
    for p in paths {
        if p.join("metrics.jsonl").is_file() {
            groups.push((name(p), vec![p.clone()]));
        } else if !seed_runs(p).is_empty() {
            groups.push((name(p), seed_runs(p)));
        } else {
            let mut variants: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|v| v.join("metrics.jsonl").is_file() || !seed_runs(v).is_empty())
                .collect();
            variants.sort();
            if variants.is_empty() {
                bail!("{}: neither a run directory (metrics.jsonl) nor a compare output", p.display());
            }
            for v in variants {
                let runs = if v.join("metrics.jsonl").is_file() { vec![v.clone()] } else { seed_runs(&v) };
                groups.push((name(&v), runs));
            }
        }
    }
    groups
        .into_iter()
        .map(|(label, runs)| {
            let all = runs.iter().map(|r| series(r, metric, x)).collect::<Result<Vec<_>>>()?;
            let n = all.iter().map(Vec::len).min().unwrap_or(0);
            let points = (0..n)
                .map(|i| {
                    let k = all.len() as f64;
                    let xm = all.iter().map(|s| s[i].0).sum::<f64>() / k;
                    let ym = all.iter().map(|s| s[i].1).sum::<f64>() / k;
                    let sd = if all.len() > 1 {
                        (all.iter().map(|s| (s[i].1 - ym).powi(2)).sum::<f64>() / (k - 1.0)).sqrt()
                    } else {
                        0.0
                    };
                    (xm, ym, sd)
                })
                .collect();
            Ok(Curve { label, points })
        })
        .collect()
}

fn font() -> Result<()> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"))
            .is_ok()
    });
    if ok { Ok(()) } else { Err(anyhow!("the bundled font failed to load")) }
}

/// A chart with fedkit's frame: the title, margins, axis labels and the mesh.
fn framed<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    (xl, yl): (&str, &str),
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e}");
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(xl)
        .y_desc(yl)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// The legend of `chart`'s labelled series at `at`, then the drawing finished.
fn legend_and_present<'a, DB: DrawingBackend + 'a>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    at: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e}");
    chart
        .configure_series_labels()
        .position(at)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &[Curve],
    title: &str,
    xl: &str,
    yl: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e}");
    root.fill(&WHITE).map_err(err)?;
    let pts = || curves.iter().flat_map(|c| c.points.iter());
    let (mut x0, mut x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) =
        pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1 - p.2), b.max(p.1 + p.2)));
    if x1 <= x0 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    if y1 <= y0 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let pad = 0.05 * (y1 - y0);
    let mut chart = framed(&root, title, (xl, yl), x0..x1, (y0 - pad)..(y1 + pad))?;
    for (i, c) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        if c.points.iter().any(|p| p.2 > 0.0) {
            let band: Vec<(f64, f64)> = c
                .points
                .iter()
                .map(|p| (p.0, p.1 + p.2))
                .chain(c.points.iter().rev().map(|p| (p.0, p.1 - p.2)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.18).filled()))).map_err(err)?;
        }
        chart
            .draw_series(LineSeries::new(c.points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
            .map_err(err)?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    legend_and_present(&root, &mut chart, SeriesLabelPosition::LowerRight)
}

/// Draw `curves` into `out` (`.png` or `.svg`, 900 x 540).
pub fn write(out: &Path, curves: &[Curve], title: &str, xl: &str, yl: &str) -> Result<()> {
    font()?;
    let size = (900, 540);
    match out.extension().and_then(|e| e.to_str()) {
        Some("svg") => draw(SVGBackend::new(out, size).into_drawing_area(), curves, title, xl, yl),
        Some("png") => draw(BitMapBackend::new(out, size).into_drawing_area(), curves, title, xl, yl),
        _ => bail!("--out {}: the image must end in .png or .svg", out.display()),
    }
    .with_context(|| format!("cannot write {}", out.display()))
}

/// `curves` as an SVG document (for pages that inline their plots).
pub fn svg_string(curves: &[Curve], title: &str, xl: &str, yl: &str, size: (u32, u32)) -> Result<String> {
    font()?;
    let mut s = String::new();
    draw(SVGBackend::with_string(&mut s, size).into_drawing_area(), curves, title, xl, yl)?;
    Ok(s)
}

/// Histograms (bins of width 0.05 over [0, 1]) of each series' values, overlaid, as SVG.
pub fn histogram_svg(series: &[(String, Vec<f64>)], title: &str, xl: &str, size: (u32, u32)) -> Result<String> {
    font()?;
    const BINS: usize = 20;
    let counts: Vec<Vec<usize>> = series
        .iter()
        .map(|(_, v)| {
            let mut c = vec![0; BINS];
            for &x in v {
                c[((x.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1)] += 1;
            }
            c
        })
        .collect();
    let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, size).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("drawing the histogram: {e}");
        root.fill(&WHITE).map_err(err)?;
        let mut chart = framed(&root, title, (xl, "clients"), 0.0..1.0, 0.0..top * 1.1)?;
        let w = 1.0 / BINS as f64;
        for (i, ((label, _), c)) in series.iter().zip(&counts).enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(c.iter().enumerate().filter(|(_, n)| **n > 0).map(|(b, &n)| {
                    Rectangle::new([(b as f64 * w, 0.0), ((b + 1) as f64 * w, n as f64)], color.mix(0.45).filled())
                }))
                .map_err(err)?
                .label(label.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.mix(0.45).filled()));
        }
        legend_and_present(&root, &mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    Ok(s)
}

pub fn run(a: PlotArgs) -> Result<()> {
    let mut curves = curves(&a.runs, &a.metric, a.x)?;
    let mut xl = match a.x {
        XAxis::Round => "round".to_string(),
        XAxis::BytesUp => "MB sent by the clients (cumulative)".into(),
        XAxis::Seconds => "seconds (cumulative)".into(),
    };
    if a.log_x {
        // Points at x = 0 (the evaluation before anything was sent) have no logarithm.
        for c in curves.iter_mut() {
            c.points.retain(|p| p.0 > 0.0);
            if c.points.is_empty() {
                bail!("--log-x: curve `{}` has no point with x > 0", c.label);
            }
            c.points.iter_mut().for_each(|p| p.0 = p.0.log10());
        }
        xl = format!("log10 {xl}");
    }
    let title = a.title.unwrap_or_else(|| format!("{} against {}", a.metric, xl));
    write(&a.out, &curves, &title, &xl, &a.metric)?;
    eprintln!("wrote {} ({} curves)", a.out.display(), curves.len());
    Ok(())
}
