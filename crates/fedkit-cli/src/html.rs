//! `fedkit report RUN_DIR... --html OUT.html`: one self-contained page (inline SVG and CSS, no
//! script, nothing fetched) over run directories:
//! - the final table (as `fedkit report` prints it);
//! - curves: test accuracy and training loss against rounds, test accuracy against MB sent, the
//!   clients' local accuracy (mean and worst) when `[eval] clients` recorded it;
//! - the distribution of the clients' local accuracies at the last evaluation
//!   (`local_eval.jsonl`), as a histogram per run;
//! - wall time per phase (`timings.jsonl`);
//! - the resolved configurations side by side, the keys whose values differ highlighted;
//! - provenance (`provenance.json`: fedkit version, git commit, host, threads, command).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::plot::{self, XAxis};
use crate::report;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn table(headers: &[String], rows: &[Vec<String>], classes: &[&str]) -> String {
    let mut h = String::from("<table><thead><tr>");
    for c in headers {
        h.push_str(&format!("<th>{}</th>", esc(c)));
    }
    h.push_str("</tr></thead><tbody>");
    for (i, r) in rows.iter().enumerate() {
        let class = classes.get(i).filter(|c| !c.is_empty()).map(|c| format!(" class=\"{c}\"")).unwrap_or_default();
        h.push_str(&format!("<tr{class}>"));
        for c in r {
            h.push_str(&format!("<td>{}</td>", esc(c)));
        }
        h.push_str("</tr>");
    }
    h + "</tbody></table>"
}

/// `metric` against `x` for the runs that record it; None when none does.
fn curve_svg(dirs: &[PathBuf], metric: &str, x: XAxis, title: &str, xl: &str) -> Option<String> {
    let has: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| report::metrics(d).is_ok_and(|m| m.iter().any(|r| r.get(metric).is_some_and(Value::is_number))))
        .cloned()
        .collect();
    if has.is_empty() || (x == XAxis::BytesUp && !has.iter().any(|d| total(d, "bytes_up") > 0.0)) {
        return None;
    }
    let curves = plot::curves(&has, metric, x).ok()?;
    plot::svg_string(&curves, title, xl, metric, (700, 400)).ok()
}

fn total(dir: &Path, key: &str) -> f64 {
    report::metrics(dir).map(|m| m.iter().filter_map(|r| r.get(key)?.as_f64()).sum()).unwrap_or(0.0)
}

/// The last line of `dir/local_eval.jsonl`: (round, the clients' local accuracies).
fn last_local_eval(dir: &Path) -> Option<(u64, Vec<f64>)> {
    let text = std::fs::read_to_string(dir.join("local_eval.jsonl")).ok()?;
    let v: Value = serde_json::from_str(text.lines().rfind(|l| !l.trim().is_empty())?).ok()?;
    let acc = v["acc"].as_array()?.iter().filter_map(Value::as_f64).collect();
    Some((v["round"].as_u64()?, acc))
}

/// Per-phase wall seconds summed over the rounds of `dir/timings.jsonl`.
fn timings(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("timings.jsonl")).ok()?;
    let rows: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    if rows.is_empty() {
        return None;
    }
    let sum = |k: &str| rows.iter().filter_map(|r| r[k].as_f64()).sum::<f64>();
    let mut cells = vec![rows.len().to_string()];
    for k in ["clients_s", "aggregate_s", "eval_s", "other_s", "total_s"] {
        cells.push(format!("{:.3}", sum(k)));
    }
    cells.push(format!("{:.4}", sum("total_s") / rows.len() as f64));
    Some(cells)
}

/// A TOML value as one line.
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn configs(dirs: &[PathBuf]) -> Result<(String, usize)> {
    let mut flat = Vec::new();
    for d in dirs {
        let p = d.join("resolved.toml");
        let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let v: toml::Value = toml::from_str(&text).with_context(|| format!("{}: not TOML", p.display()))?;
        let mut m = BTreeMap::new();
        flatten("", &v, &mut m);
        flat.push(m);
    }
    let keys: BTreeSet<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    // The keys that differ first, then the rest, each group in key order.
    let mut lines: Vec<(bool, Vec<String>)> = keys
        .into_iter()
        .map(|k| {
            let vals: Vec<String> = flat.iter().map(|m| m.get(k).cloned().unwrap_or_else(|| "—".into())).collect();
            (vals.iter().any(|v| v != &vals[0]), std::iter::once(k.clone()).chain(vals).collect())
        })
        .collect();
    lines.sort_by_key(|l| !l.0);
    let differ = lines.iter().filter(|l| l.0).count();
    let classes: Vec<&str> = lines.iter().map(|l| if l.0 { "diff" } else { "" }).collect();
    let rows: Vec<Vec<String>> = lines.into_iter().map(|l| l.1).collect();
    let headers: Vec<String> = std::iter::once("key".to_string()).chain(dirs.iter().map(label)).collect();
    Ok((table(&headers, &rows, &classes), differ))
}

fn label(d: &PathBuf) -> String {
    d.display().to_string()
}

fn provenance(dirs: &[PathBuf]) -> String {
    let keys = ["fedkit_version", "git_commit", "host", "os", "threads", "cores", "started_unix", "command"];
    let rows: Vec<Vec<String>> = dirs
        .iter()
        .map(|d| {
            let v: Value = std::fs::read_to_string(d.join("provenance.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            std::iter::once(label(d))
                .chain(keys.iter().map(|k| match &v[*k] {
                    Value::Null => "-".into(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }))
                .collect()
        })
        .collect();
    let headers: Vec<String> = std::iter::once("run").chain(keys).map(String::from).collect();
    table(&headers, &rows, &[])
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1600px}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#f2f2f2}tr.diff td{background:#fff1a8;font-weight:bold}\
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0}.note{color:#666;font-size:.85em}";

/// Write the page for `dirs` into `out`; returns a one-line summary.
pub fn write(dirs: &[PathBuf], out: &Path, target: Option<f64>, last: usize) -> Result<String> {
    let rows = report::rows(dirs, target, last)?;
    let mut h = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>fedkit report</title><style>{STYLE}</style></head><body>\
<h1>fedkit report</h1><p class=\"note\">{} run(s); written by fedkit {} (commit {}).</p>",
        dirs.len(),
        env!("CARGO_PKG_VERSION"),
        env!("FEDKIT_GIT_COMMIT")
    );
    h.push_str("<h2>Final results</h2>");
    h.push_str(&table(&report::headers(last), &rows, &[]));
    h.push_str("<h2>Curves</h2><div class=\"plots\">");
    let mut plots = 0;
    for (metric, x, title, xl) in [
        ("test_acc", XAxis::Round, "test accuracy", "round"),
        ("train_loss", XAxis::Round, "training loss", "round"),
        ("test_acc", XAxis::BytesUp, "test accuracy against uplink", "MB sent by the clients (cumulative)"),
        ("local_acc_mean", XAxis::Round, "clients' local accuracy (mean)", "round"),
        ("local_acc_min", XAxis::Round, "clients' local accuracy (worst client)", "round"),
        ("backdoor_acc", XAxis::Round, "backdoor accuracy", "round"),
    ] {
        if let Some(svg) = curve_svg(dirs, metric, x, title, xl) {
            h.push_str(&format!("<figure class=\"plot\" data-metric=\"{metric}\">{svg}</figure>"));
            plots += 1;
        }
    }
    h.push_str("</div>");
    let local: Vec<(String, u64, Vec<f64>)> =
        dirs.iter().filter_map(|d| last_local_eval(d).map(|(r, a)| (label(d), r, a))).collect();
    if !local.is_empty() {
        h.push_str("<h2>Clients' local accuracy at the last evaluation</h2><div class=\"plots\">");
        let series: Vec<(String, Vec<f64>)> =
            local.iter().map(|(l, r, a)| (format!("{l} (round {r}, {} clients)", a.len()), a.clone())).collect();
        let svg = plot::histogram_svg(&series, "clients' local accuracy", "local accuracy", (700, 400))?;
        h.push_str(&format!("<figure class=\"plot\" data-metric=\"local_eval\">{svg}</figure></div>"));
        plots += 1;
    }
    h.push_str("<h2>Wall time per phase (seconds, summed over rounds)</h2>");
    let trows: Vec<Vec<String>> = dirs
        .iter()
        .map(|d| std::iter::once(label(d)).chain(timings(d).unwrap_or_else(|| vec!["-".into(); 7])).collect::<Vec<_>>())
        .collect();
    let th: Vec<String> =
        ["run", "rounds", "clients", "aggregate", "eval", "other", "total", "per round"].map(String::from).to_vec();
    h.push_str(&table(&th, &trows, &[]));
    let (cfg, differ) = configs(dirs)?;
    h.push_str(&format!(
        "<h2>Configurations</h2><p class=\"note\">{differ} key(s) differ between the runs (highlighted).</p>{cfg}"
    ));
    h.push_str("<h2>Provenance</h2>");
    h.push_str(&provenance(dirs));
    h.push_str("</body></html>\n");
    std::fs::write(out, h).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(format!("wrote {} ({} runs, {plots} plots, {differ} config keys differ)", out.display(), dirs.len()))
}
