//! `fedkit sweep CONFIG --grid "client.lr=0.01,0.05;algorithm.mu=0,0.01" [--seeds 3]
//! [--select validation|train_loss]`: tune hyperparameters on the same federation.
//!
//! Every point of the grid (the cartesian product of the listed values) runs on the same config,
//! data, partition and seeds, as `fedkit compare` variants `p0`, `p1`, ... in `OUT/` (resumable).
//! The point is selected without looking at the test set:
//! - `validation` (default): each client's training data loses a held-out fraction
//!   (`eval.validation`, set to 0.1 when the config has none) and the best point has the highest
//!   validation accuracy of the global model, averaged over the last `--last` evaluations and over
//!   the seeds;
//! - `validation_balanced`: the same with the balanced (mean per-class) validation accuracy
//!   (`eval.balanced` is switched on), for long-tailed data;
//! - `train_loss`: the lowest final training loss (no held-out data; for optimisation-only
//!   comparisons).
//! It writes `sweep.md` and `sweep.csv` (every point: its settings, the selection metric and the
//! test accuracy, mean ± std over seeds) and `best.toml` (the resolved config of the selected
//! point's first seed). The test accuracy in the table is reported, never used.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::compare::{self, Outcome, Variant, mean_std};

/// How the best point is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Select {
    /// Highest validation accuracy (a split held out of the clients' training data).
    Validation,
    /// Highest balanced (mean per-class) validation accuracy: for long-tailed data, whose
    /// validation split is as imbalanced as the training data.
    ValidationBalanced,
    /// Lowest final training loss.
    TrainLoss,
}

/// The grid `"k1=a,b;k2=c"` as its points: each a list of `key=value` settings.
pub fn grid(spec: &str) -> Result<Vec<Vec<String>>> {
    let mut axes: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, values)) = part.split_once('=') else {
            bail!("--grid `{part}`: expected KEY=V1,V2,... (e.g. client.lr=0.01,0.05;algorithm.mu=0,0.01)")
        };
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        if key.trim().is_empty() || values.is_empty() {
            bail!("--grid `{part}`: expected KEY=V1,V2,... with at least one value")
        }
        if axes.iter().any(|(k, _)| k == key.trim()) {
            bail!("--grid names `{}` twice", key.trim())
        }
        axes.push((key.trim().to_string(), values));
    }
    if axes.is_empty() {
        bail!("--grid is empty: give KEY=V1,V2;KEY2=V3,... ")
    }
    let mut points: Vec<Vec<String>> = vec![Vec::new()];
    for (key, values) in &axes {
        points = points
            .into_iter()
            .flat_map(|p| values.iter().map(move |v| [p.clone(), vec![format!("{key}={v}")]].concat()))
            .collect();
    }
    Ok(points)
}

fn get(r: &Map<String, Value>, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64)
}

/// The selection metric of one run (higher is better): the mean validation accuracy over its
/// last `last` evaluations, or minus its final training loss.
fn score(rows: &[Map<String, Value>], select: Select, last: usize) -> Option<f64> {
    match select {
        Select::Validation | Select::ValidationBalanced => {
            let key = if select == Select::Validation { "val_acc" } else { "val_acc_balanced" };
            let v: Vec<f64> = rows.iter().filter_map(|r| get(r, key)).collect();
            let k = last.max(1).min(v.len());
            (k > 0).then(|| v[v.len() - k..].iter().sum::<f64>() / k as f64)
        }
        Select::TrainLoss => rows.iter().rev().find_map(|r| get(r, "train_loss")).map(|l| -l),
    }
}

/// Run the grid and write the tables; returns the Markdown table.
#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Path,
    sets: &[String],
    spec: &str,
    seeds: u32,
    select: Select,
    (last, report): (usize, &str),
    out: &Path,
    quiet: bool,
) -> Result<String> {
    let points = grid(spec)?;
    let mut base = sets.to_vec();
    if select != Select::TrainLoss {
        let cfg = fedkit_engine::RunConfig::load(Some(config), sets)?;
        if cfg.eval.validation == 0.0 {
            base.push("eval.validation=0.1".into());
        }
        if select == Select::ValidationBalanced {
            base.push("eval.balanced=true".into());
        }
    }
    let variants: Vec<Variant> =
        points.iter().enumerate().map(|(i, p)| Variant { label: format!("p{i}"), sets: p.clone() }).collect();
    let outcomes = compare::run_all(config, &base, &variants, seeds, out, quiet)?;
    let scored: Vec<(f64, f64)> = outcomes.iter().map(|o| summary(o, select, last, report).0).collect();
    let best = scored
        .iter()
        .enumerate()
        .filter(|(_, s)| s.0.is_finite())
        .max_by(|a, b| a.1.0.total_cmp(&b.1.0))
        .map(|(i, _)| i)
        .context("no point of the grid finished with a selection metric")?;
    let metric = match select {
        Select::Validation => format!("val_acc (mean of last {})", last.max(1)),
        Select::ValidationBalanced => format!("val_acc_balanced (mean of last {})", last.max(1)),
        Select::TrainLoss => "final train_loss".into(),
    };
    let mut md = format!(
        "| point | settings | {metric} | test_acc (final) | test_acc (mean of last {}) | seconds | |\n",
        last.max(1)
    );
    md.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    let mut csv =
        "point,settings,select_mean,select_std,test_acc_mean,test_acc_std,test_last_mean,test_last_std,seconds\n"
            .to_string();
    for (i, (o, p)) in outcomes.iter().zip(&points).enumerate() {
        let ((sm, ss), (tm, ts), (lm, ls), secs) = summary(o, select, last, report);
        let sm = if select == Select::TrainLoss { -sm } else { sm };
        let failed: Vec<String> =
            o.runs.iter().filter(|r| r.error.is_some()).map(|r| format!("seed {}", r.seed)).collect();
        let mark = if i == best {
            "**best**".to_string()
        } else if !failed.is_empty() {
            format!("failed: {} (not selectable)", failed.join(", "))
        } else {
            String::new()
        };
        let score = if sm.is_finite() { format!("{sm:.4} ± {ss:.4}") } else { "-".to_string() };
        md.push_str(&format!(
            "| {} | `{}` | {score} | {tm:.4} ± {ts:.4} | {lm:.4} ± {ls:.4} | {secs:.1} | {mark} |\n",
            o.label,
            p.join("; ")
        ));
        csv.push_str(&format!(
            "{},\"{}\",{sm:.6},{ss:.6},{tm:.6},{ts:.6},{lm:.6},{ls:.6},{secs:.1}\n",
            o.label,
            p.join("; ")
        ));
    }
    md.push_str(&format!(
        "\nselected: {} (`{}`), by {metric} over {seeds} seed(s)\n",
        outcomes[best].label,
        points[best].join("; ")
    ));
    for warning in edge_warnings(spec, &points[best]) {
        eprintln!("warning: {warning}");
        md.push_str(&format!("\nwarning: {warning}\n"));
    }
    let best_dir: PathBuf =
        if seeds > 1 { out.join(&outcomes[best].label).join("seed0") } else { out.join(&outcomes[best].label) };
    let resolved = best_dir.join("resolved.toml");
    std::fs::copy(&resolved, out.join("best.toml")).with_context(|| format!("cannot copy {}", resolved.display()))?;
    for (name, text) in [("sweep.md", &md), ("sweep.csv", &csv)] {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(md)
}

/// Mean and std over seeds of: the selection score, the final value of the reported metric
/// (`test_acc` by default) and its mean over the last `last` evaluations; and the mean wall
/// seconds.
fn summary(o: &Outcome, select: Select, last: usize, report: &str) -> ((f64, f64), (f64, f64), (f64, f64), f64) {
    let scores: Vec<f64> = o.runs.iter().filter_map(|r| score(&r.rows, select, last)).collect();
    let accs: Vec<Vec<f64>> = o.runs.iter().map(|r| r.rows.iter().filter_map(|x| get(x, report)).collect()).collect();
    let finals: Vec<f64> = accs.iter().filter_map(|a| a.last().copied()).collect();
    let lasts: Vec<f64> = accs
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| {
            let k = last.max(1).min(a.len());
            a[a.len() - k..].iter().sum::<f64>() / k as f64
        })
        .collect();
    // A point whose runs did not all finish (a failure, e.g. divergence) with the metric cannot
    // be selected.
    let complete = scores.len() == o.runs.len() && !scores.is_empty() && o.runs.iter().all(|r| r.error.is_none());
    let s = if complete { mean_std(&scores) } else { (f64::NAN, f64::NAN) };
    let secs = o.runs.iter().map(|r| r.seconds).sum::<f64>() / o.runs.len().max(1) as f64;
    (s, mean_std(&finals), mean_std(&lasts), secs)
}

/// For every numeric axis of the grid with at least 3 values: a warning when the selected point
/// takes its smallest or largest value (the optimum may lie outside the grid).
pub fn edge_warnings(spec: &str, selected: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, values)) = part.split_once('=') else { continue };
        let nums: Option<Vec<f64>> = values.split(',').map(|v| v.trim().parse::<f64>().ok()).collect();
        let Some(nums) = nums.filter(|n| n.len() >= 3) else { continue };
        let chosen = selected
            .iter()
            .find_map(|s| s.split_once('=').filter(|(k, _)| k.trim() == key.trim()).map(|(_, v)| v.trim().to_string()));
        let Some(v) = chosen.and_then(|v| v.parse::<f64>().ok()) else { continue };
        let (lo, hi) = nums.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
        if v == lo || v == hi {
            let side = if v == lo { "smallest" } else { "largest" };
            out.push(format!(
                "the selected {} = {v} is the {side} value of the grid: the optimum may lie outside it; extend the grid",
                key.trim()
            ));
        }
    }
    out
}

/// `OUT` default: `runs/sweep-<config stem>-<time>`.
pub fn default_out(config: &Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    PathBuf::from(format!("runs/sweep-{stem}-{}", crate::utc_stamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_the_cartesian_product() {
        let g = grid("client.lr=0.01,0.05; algorithm.mu=0,0.01,1").unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], ["client.lr=0.01", "algorithm.mu=0"]);
        assert_eq!(g[5], ["client.lr=0.05", "algorithm.mu=1"]);
        assert!(grid("").is_err());
        assert!(grid("client.lr").is_err());
        assert!(grid("client.lr=").is_err());
        assert!(grid("a=1;a=2").is_err());
    }

    #[test]
    fn a_selection_at_the_edge_of_a_numeric_axis_is_flagged() {
        let spec = "client.lr=0.01,0.1,1.0;algorithm.use=fedavg,fedprox";
        assert_eq!(edge_warnings(spec, &["client.lr=0.1".into(), "algorithm.use=fedavg".into()]).len(), 0);
        let w = edge_warnings(spec, &["client.lr=1.0".into(), "algorithm.use=fedprox".into()]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("client.lr = 1 is the largest"), "{w:?}");
        assert!(edge_warnings("client.lr=0.1,1.0", &["client.lr=1.0".into()]).is_empty(), "two values: no interior");
    }

    #[test]
    fn validation_score_averages_the_last_evaluations() {
        let row = |v: f64| {
            let mut m = Map::new();
            m.insert("val_acc".into(), v.into());
            m.insert("train_loss".into(), (1.0 - v).into());
            m
        };
        let rows = vec![row(0.2), row(0.6), row(0.8)];
        assert_eq!(score(&rows, Select::Validation, 2), Some(0.7));
        assert_eq!(score(&rows, Select::Validation, 10), Some(1.6 / 3.0));
        assert!((score(&rows, Select::TrainLoss, 1).unwrap() + 0.2).abs() < 1e-12);
        assert_eq!(score(&[], Select::Validation, 1), None);
    }
}
