//! `fedkit report DIR...`: one table over finished (or running) run directories, read from their
//! `metrics.jsonl`: final and best test accuracy, the mean over the last evaluations, the final
//! training loss, megabytes sent by clients, and the first round reaching a target accuracy.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value};

/// The run directories under `dirs`: a directory with a `metrics.jsonl` is a run; another
/// (a `compare`, `sweep` or `matrix` output, or a variant with `seed<k>/` runs) stands for the
/// runs up to two levels below it, in name order.
pub fn expand_runs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn below(d: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if d.join("metrics.jsonl").is_file() {
            out.push(d.to_path_buf());
            return;
        }
        if depth == 0 {
            return;
        }
        let mut subs: Vec<PathBuf> =
            std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        subs.sort();
        for s in subs {
            below(&s, depth - 1, out);
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        let before = out.len();
        below(d, 2, &mut out);
        if out.len() == before {
            anyhow::bail!("{}: not a run directory (no metrics.jsonl in it or its subfolders)", d.display());
        }
    }
    Ok(out)
}

/// The report's columns, in order.
pub fn headers(last: usize) -> Vec<String> {
    ["run", "rounds", "test_acc", "best_acc", &format!("mean_last{last}"), "train_loss", "MB_up", "to_target"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The metrics of the run in `dir` (`metrics.jsonl`), one map per line.
pub fn metrics(dir: &Path) -> Result<Vec<Map<String, Value>>> {
    let p = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&p).with_context(|| format!("{}: not a run directory", p.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a fedkit metrics file", p.display()))
}

/// One row per run, the cells of [`headers`].
pub fn rows(dirs: &[PathBuf], target: Option<f64>, last: usize) -> Result<Vec<Vec<String>>> {
    dirs.iter()
        .map(|d| {
            let rows = metrics(d)?;
            let get = |r: &Map<String, Value>, k: &str| r.get(k).and_then(Value::as_f64);
            let accs: Vec<(f64, f64)> =
                rows.iter().filter_map(|r| Some((get(r, "round")?, get(r, "test_acc")?))).collect();
            let rounds = rows.iter().filter_map(|r| get(r, "round")).fold(0.0, f64::max);
            let fmt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
            let tail: Vec<f64> = accs.iter().rev().take(last).map(|a| a.1).collect();
            let mean = (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64);
            let loss = rows.iter().rev().find_map(|r| get(r, "train_loss"));
            let mb: f64 = rows.iter().filter_map(|r| get(r, "bytes_up")).sum::<f64>() / 1e6;
            let hit = target
                .and_then(|t| accs.iter().find(|a| a.1 >= t))
                .map(|a| a.0.to_string())
                .unwrap_or_else(|| "-".into());
            Ok(vec![
                d.display().to_string(),
                rounds.to_string(),
                fmt(accs.last().map(|a| a.1)),
                fmt(accs.iter().map(|a| a.1).reduce(f64::max)),
                fmt(mean),
                fmt(loss),
                format!("{mb:.2}"),
                hit,
            ])
        })
        .collect()
}

/// The report table for `dirs`.
pub fn table(dirs: &[PathBuf], target: Option<f64>, last: usize) -> Result<String> {
    let line = |c: &[String]| {
        format!(
            "{:<40} {:>6} {:>9} {:>9} {:>11} {:>11} {:>12} {:>10}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
        )
    };
    let mut out = line(&headers(last));
    for r in rows(dirs, target, last)? {
        out.push_str(&line(&r));
    }
    Ok(out)
}
