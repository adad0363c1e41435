//! `fedkit compare CONFIG --algorithms a,b,c [--variant LABEL=KEY=VALUE;KEY=VALUE ...]`: run
//! several methods on the same federation (same config, data, partition and seed) one after the
//! other and write one table: test accuracy at chosen rounds, final and best accuracy, the first
//! round reaching a target accuracy, megabytes sent each way, the worst client's local accuracy
//! and the model's fraction of zeros when they were measured, and the run's wall seconds (the sum of
//! its rounds in `timings.jsonl`, across resumes).
//!
//! Each variant is an ordinary run directory `OUT/<label>/` (resumable). Running the same
//! command again skips finished variants and resumes interrupted ones from their saved
//! `resolved.toml` (with `--set rounds=N`, extends them to N rounds), so nothing is lost when a
//! long comparison stops. A variant that fails is reported in the table and the others still run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fedkit_engine::RunConfig;
use serde_json::{Map, Value};

/// One method to compare: a label and its `--set` overrides.
pub struct Variant {
    pub label: String,
    pub sets: Vec<String>,
}

/// Parse `--algorithms a,b` and `--variant LABEL=KEY=VALUE;KEY=VALUE` into variants.
pub fn variants(algorithms: &[String], specs: &[String]) -> Result<Vec<Variant>> {
    let mut out: Vec<Variant> = algorithms
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| Variant { label: a.to_string(), sets: vec![format!("algorithm.use={a}")] })
        .collect();
    for s in specs {
        let Some((label, rest)) = s.split_once('=') else {
            bail!(
                "--variant `{s}`: expected LABEL=KEY=VALUE;KEY=VALUE (e.g. prox1=algorithm.use=fedprox;algorithm.mu=1)"
            )
        };
        let sets: Vec<String> = rest.split(';').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
        if label.trim().is_empty() || sets.iter().any(|x| !x.contains('=')) {
            bail!(
                "--variant `{s}`: expected LABEL=KEY=VALUE;KEY=VALUE (e.g. prox1=algorithm.use=fedprox;algorithm.mu=1)"
            )
        }
        out.push(Variant { label: label.trim().to_string(), sets });
    }
    if out.is_empty() {
        bail!("nothing to compare: give --algorithms a,b,... and/or --variant LABEL=KEY=VALUE;...")
    }
    let mut labels: Vec<&str> = out.iter().map(|v| v.label.as_str()).collect();
    labels.sort_unstable();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        bail!("two variants are labelled `{}`: labels name the run directories and must differ", w[0])
    }
    if let Some(v) = out.iter().find(|v| v.label.contains(['/', '\\']) || v.label.starts_with('.')) {
        bail!("variant label `{}` cannot be a directory name: use letters, digits, - and _", v.label)
    }
    Ok(out)
}

/// What one variant's run gave.
struct Outcome {
    label: String,
    rows: Vec<Map<String, Value>>,
    seconds: f64,
    error: Option<String>,
}

/// Run every variant (config checked for all of them first) and write the table.
pub fn run(
    config: &Path,
    sets: &[String],
    variants: &[Variant],
    out: &Path,
    at: &[u32],
    target: Option<f64>,
    quiet: bool,
) -> Result<String> {
    // Check every variant's config before the first (possibly long) run starts.
    let cfgs: Vec<RunConfig> = variants
        .iter()
        .map(|v| {
            let mut c = RunConfig::load_variant(Some(config), sets, &v.sets)
                .with_context(|| format!("variant `{}`", v.label))?;
            c.clone().build().map_err(|e| e.in_file(&c.source)).with_context(|| format!("variant `{}`", v.label))?;
            c.source = format!("{} (variant {})", c.source, v.label);
            Ok(c)
        })
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // A run directory left by an earlier call must hold the same experiment.
    for (v, cfg) in variants.iter().zip(&cfgs) {
        let dir = out.join(&v.label);
        if let Ok(old) = fedkit_engine::run::resolved_config(&dir) {
            if let Some(what) = differs(cfg, &old)? {
                bail!(
                    "{} holds a run of variant `{}` with a different {what}: use another --out, or delete that directory to run it again",
                    dir.display(),
                    v.label
                )
            }
        }
    }
    let mut outcomes = Vec::new();
    for (v, cfg) in variants.iter().zip(cfgs) {
        let dir = out.join(&v.label);
        let rounds = cfg.rounds;
        let t0 = Instant::now();
        let res = if finished(&dir, rounds) {
            eprintln!("{}: already finished in {}", v.label, dir.display());
            Ok(())
        } else if dir.join(fedkit_engine::checkpoint::CHECKPOINT_FILE).exists() {
            eprintln!("{}: resuming {}", v.label, dir.display());
            fedkit_engine::resume(&dir, Some(rounds))
                .map_err(anyhow::Error::from)
                .and_then(|(mut e, mut o)| crate::drive(&mut e, &mut o, None, quiet, &v.label).map(|_| ()))
        } else {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
            }
            crate::run_config(cfg, &dir, None, quiet).map(|_| ())
        };
        let error = res.err().map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            eprintln!("warning: variant `{}` failed: {e}", v.label);
        }
        let rows = read_rows(&dir).unwrap_or_default();
        let seconds = run_seconds(&dir).unwrap_or_else(|| t0.elapsed().as_secs_f64());
        outcomes.push(Outcome { label: v.label.clone(), rows, seconds, error });
    }
    let (md, csv) = tables(&outcomes, at, target);
    for (name, text) in [("comparison.md", &md), ("comparison.csv", &csv)] {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(md)
}

/// The first section in which `new` (a variant's config) and `old` (a run directory's
/// resolved.toml) describe different experiments, ignoring `rounds` (more rounds extend a run),
/// run-time settings (threads, checkpoints) and defaults that resolution fills in
/// (the method tables are compared on the keys the variant sets).
fn differs(new: &RunConfig, old: &RunConfig) -> Result<Option<String>> {
    let table = |c: &RunConfig| -> Result<toml::Table> { Ok(toml::from_str(&c.to_toml()?)?) };
    let (n, o) = (table(new)?, table(old)?);
    let keys = [
        "seed",
        "data",
        "model",
        "client",
        "sampling",
        "eval",
        "threat",
        "algorithm",
        "aggregator",
        "local",
        "pipeline",
    ];
    for key in keys {
        if !covered(n.get(key), o.get(key)) {
            return Ok(Some(format!("`{key}`")));
        }
    }
    Ok(None)
}

/// True when every value `new` sets is the same in `old` (tables recursively; `old` may hold
/// more keys: the defaults its resolution filled in).
fn covered(new: Option<&toml::Value>, old: Option<&toml::Value>) -> bool {
    match (new, old) {
        (None, _) => true,
        (Some(toml::Value::Table(n)), Some(toml::Value::Table(o))) => n.iter().all(|(k, v)| covered(Some(v), o.get(k))),
        // `mu = 1` in a variant is `mu = 1.0` once resolved.
        (Some(toml::Value::Integer(n)), Some(toml::Value::Float(o))) => *n as f64 == *o,
        (Some(toml::Value::Array(n)), Some(toml::Value::Array(o))) => {
            n.len() == o.len() && n.iter().zip(o).all(|(a, b)| covered(Some(a), Some(b)))
        }
        (Some(n), Some(o)) => n == o,
        (Some(_), None) => false,
    }
}

fn finished(dir: &Path, rounds: u32) -> bool {
    read_rows(dir)
        .is_ok_and(|rows| rows.last().and_then(|r| r.get("round")).and_then(Value::as_f64) == Some(rounds as f64))
}

/// Wall seconds of the run's rounds (its `timings.jsonl`, across resumes).
fn run_seconds(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("timings.jsonl")).ok()?;
    let rows: Vec<Map<String, Value>> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (!rows.is_empty()).then(|| rows.iter().filter_map(|r| get(r, "total_s")).sum())
}

/// The rows of `dir/metrics.jsonl`.
pub fn read_rows(dir: &Path) -> Result<Vec<Map<String, Value>>> {
    let p = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&p).with_context(|| format!("{}: not a run directory", p.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a fedkit metrics file", p.display()))
}

fn get(r: &Map<String, Value>, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64)
}

/// The comparison as a Markdown table and as CSV.
fn tables(outcomes: &[Outcome], at: &[u32], target: Option<f64>) -> (String, String) {
    let has = |k: &str| outcomes.iter().any(|o| o.rows.iter().any(|r| get(r, k).is_some_and(|v| v != 0.0)));
    let mut head: Vec<String> = vec!["variant".into()];
    head.extend(at.iter().map(|r| format!("acc@{r}")));
    head.extend(["final_acc", "best_acc"].map(String::from));
    if let Some(t) = target {
        head.push(format!("rounds_to_{t}"));
    }
    head.extend(["MB_up", "MB_down"].map(String::from));
    let optional: Vec<&str> =
        ["local_acc_min", "local_acc_mean", "model_zeros", "hessian_top"].into_iter().filter(|k| has(k)).collect();
    head.extend(optional.iter().map(|k| k.to_string()));
    head.extend(["seconds", "status"].map(String::from));

    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    let mut body: Vec<Vec<String>> = Vec::new();
    for o in outcomes {
        let acc: Vec<(f64, f64)> =
            o.rows.iter().filter_map(|r| Some((get(r, "round")?, get(r, "test_acc")?))).collect();
        let mut row = vec![o.label.clone()];
        row.extend(at.iter().map(|&r| fmt(acc.iter().find(|a| a.0 == r as f64).map(|a| a.1))));
        row.push(fmt(acc.last().map(|a| a.1)));
        row.push(fmt(acc.iter().map(|a| a.1).reduce(f64::max)));
        if let Some(t) = target {
            row.push(acc.iter().find(|a| a.1 >= t).map(|a| a.0.to_string()).unwrap_or_else(|| "-".into()));
        }
        for k in ["bytes_up", "bytes_down"] {
            row.push(format!("{:.2}", o.rows.iter().filter_map(|r| get(r, k)).fold(0.0, |a, b| a + b) / 1e6));
        }
        for k in &optional {
            row.push(fmt(o.rows.iter().rev().find_map(|r| get(r, k))));
        }
        row.push(format!("{:.1}", o.seconds));
        row.push(match &o.error {
            None => "ok".into(),
            Some(e) => format!("failed: {}", e.lines().next().unwrap_or("")),
        });
        body.push(row);
    }
    let md_row = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut md = md_row(&head);
    md.push_str(&md_row(&head.iter().map(|_| "---".to_string()).collect::<Vec<_>>()));
    body.iter().for_each(|r| md.push_str(&md_row(r)));
    let csv_cell =
        |c: &String| if c.contains([',', '"', '\n']) { format!("\"{}\"", c.replace('"', "\"\"")) } else { c.clone() };
    let mut csv = head.iter().map(csv_cell).collect::<Vec<_>>().join(",") + "\n";
    for r in &body {
        csv.push_str(&(r.iter().map(csv_cell).collect::<Vec<_>>().join(",") + "\n"));
    }
    (md, csv)
}

/// `OUT` default: `runs/compare-<config stem>-<time>`.
pub fn default_out(config: &Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    PathBuf::from(format!("runs/compare-{stem}-{}", crate::utc_stamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_and_reject_bad_specs() {
        let v = variants(&["fedavg, fedprox".into()], &["p1=algorithm.use=fedprox;algorithm.mu=1".into()]).unwrap();
        let labels: Vec<&str> = v.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(labels, ["fedavg", "fedprox", "p1"]);
        assert_eq!(v[2].sets, ["algorithm.use=fedprox", "algorithm.mu=1"]);
        assert!(variants(&[], &[]).is_err());
        assert!(variants(&["a,a".into()], &[]).is_err(), "duplicate labels");
        assert!(variants(&[], &["nolabel".into()]).is_err());
        assert!(variants(&[], &["x=algorithm.use".into()]).is_err());
        assert!(variants(&[], &["../x=rounds=2".into()]).is_err());
    }

    #[test]
    fn table_reads_accuracy_at_rounds_and_target() {
        let row = |r: f64, a: f64| {
            let mut m = Map::new();
            m.insert("round".into(), r.into());
            m.insert("test_acc".into(), a.into());
            m.insert("bytes_up".into(), 1e6.into());
            m
        };
        let o = Outcome {
            label: "x".into(),
            rows: vec![row(1.0, 0.5), row(2.0, 0.8), row(3.0, 0.7)],
            seconds: 1.0,
            error: None,
        };
        let (md, csv) = tables(&[o], &[2, 9], Some(0.75));
        assert!(md.contains("| x | 0.8000 | - | 0.7000 | 0.8000 | 2 | 3.00 | 0.00 |"), "{md}");
        assert!(
            csv.starts_with("variant,acc@2,acc@9,final_acc,best_acc,rounds_to_0.75,MB_up,MB_down,seconds,status\n")
        );
    }
}
