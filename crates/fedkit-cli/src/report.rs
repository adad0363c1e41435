//! `fedkit report DIR...`: one table over finished (or running) run directories, read from their
//! `metrics.jsonl`: final and best test accuracy, the mean over the last rounds, the final
//! training loss, bytes sent, and the first round reaching a target accuracy.

use std::path::PathBuf;

use anyhow::{Context, Result};

fn parse_line(line: &str) -> Vec<(String, f64)> {
    let body = line.trim().trim_start_matches('{').trim_end_matches('}');
    body.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((k.trim().trim_matches('"').to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The report table for `dirs`.
pub fn table(dirs: &[PathBuf], target: Option<f64>, last: usize) -> Result<String> {
    let mut out = format!(
        "{:<40} {:>6} {:>9} {:>9} {:>11} {:>11} {:>12} {:>10}\n",
        "run",
        "rounds",
        "test_acc",
        "best_acc",
        format!("mean_last{last}"),
        "train_loss",
        "MB_up",
        "to_target"
    );
    for d in dirs {
        let p = d.join("metrics.jsonl");
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: not a run directory", p.display()))?;
        let rows: Vec<Vec<(String, f64)>> = text.lines().filter(|l| !l.trim().is_empty()).map(parse_line).collect();
        let get = |r: &Vec<(String, f64)>, k: &str| r.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        let accs: Vec<(f64, f64)> = rows.iter().filter_map(|r| Some((get(r, "round")?, get(r, "test_acc")?))).collect();
        let rounds = rows.iter().filter_map(|r| get(r, "round")).fold(0.0, f64::max);
        let fmt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let tail: Vec<f64> = accs.iter().rev().take(last).map(|a| a.1).collect();
        let mean = (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64);
        let loss = rows.iter().rev().find_map(|r| get(r, "train_loss"));
        let mb: f64 = rows.iter().filter_map(|r| get(r, "bytes_up")).sum::<f64>() / 1e6;
        let hit = target
            .and_then(|t| accs.iter().find(|a| a.1 >= t))
            .map(|a| format!("{}", a.0))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<40} {:>6} {:>9} {:>9} {:>11} {:>11} {:>12.2} {:>10}\n",
            d.display(),
            rounds,
            fmt(accs.last().map(|a| a.1)),
            fmt(accs.iter().map(|a| a.1).reduce(f64::max)),
            fmt(mean),
            fmt(loss),
            mb,
            hit
        ));
    }
    Ok(out)
}
