//! `fedkit compare CONFIG --algorithms a,b,c [--variant LABEL=KEY=VALUE;KEY=VALUE ...]`: run
//! several methods on the same federation (same config, data, partition and seed) one after the
//! other and write one table: test accuracy at chosen rounds, final and best accuracy, the first
//! round reaching a target accuracy, megabytes sent each way, the worst client's local accuracy
//! and the model's fraction of zeros when they were measured, and the run's wall seconds (the sum of
//! its rounds in `timings.jsonl`, across resumes).
//!
//! Each variant is an ordinary run directory `OUT/<label>/` (resumable); with `--seeds N` each
//! variant runs N times, with seeds seed, seed + 1, ..., into `OUT/<label>/seed<k>/`, and every
//! cell of the table is the mean and sample standard deviation over the seeds (`mean ± std`; the
//! CSV has `<column>_mean` and `<column>_std`). `--last K` adds `mean_last<K>`, the test accuracy
//! averaged over the last K evaluations (a less noisy headline than the final round under label
//! skew), and `sd_last<K>`, its standard deviation over those evaluations (round-to-round
//! instability). `--metric KEY` makes another metric the headline (e.g. `train_loss`, the FedProx
//! paper's), and `--extra KEY,...` adds columns with metrics' last values. Running the same
//! command again skips finished runs and resumes interrupted ones from
//! their saved `resolved.toml` (with `--set rounds=N`, extends them to N rounds), so nothing is
//! lost when a long comparison stops. A run that fails is reported in the table and the others
//! still run.

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

/// What one run (one variant, one seed) gave.
pub struct SeedRun {
    pub seed: u64,
    pub rows: Vec<Map<String, Value>>,
    pub seconds: f64,
    pub error: Option<String>,
}

/// Every seed's run of one variant.
pub struct Outcome {
    pub label: String,
    pub runs: Vec<SeedRun>,
}

/// The run directory of `label`'s `k`-th seed (no seed level with one seed).
fn run_dir(out: &Path, label: &str, k: u32, seeds: u32) -> PathBuf {
    if seeds > 1 { out.join(label).join(format!("seed{k}")) } else { out.join(label) }
}

/// Run every variant for `seeds` seeds (every config checked first), resuming what an earlier
/// call left.
pub fn run_all(
    config: &Path,
    sets: &[String],
    variants: &[Variant],
    seeds: u32,
    out: &Path,
    quiet: bool,
) -> Result<Vec<Outcome>> {
    if seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    // Check every variant's config before the first (possibly long) run starts.
    let mut plan: Vec<(String, PathBuf, RunConfig)> = Vec::new();
    for v in variants {
        let base =
            RunConfig::load_variant(Some(config), sets, &v.sets).with_context(|| format!("variant `{}`", v.label))?;
        for k in 0..seeds {
            let mut c = base.clone();
            c.seed = base.seed + k as u64;
            c.clone().build().map_err(|e| e.in_file(&c.source)).with_context(|| format!("variant `{}`", v.label))?;
            c.source = format!("{} (variant {})", c.source, v.label);
            plan.push((v.label.clone(), run_dir(out, &v.label, k, seeds), c));
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // A run directory left by an earlier call must hold the same experiment.
    for (label, dir, cfg) in &plan {
        if let Ok(old) = fedkit_engine::run::resolved_config(dir) {
            if let Some(what) = differs(cfg, &old)? {
                bail!(
                    "{} holds a run of variant `{label}` with a different {what}: use another --out, or delete that directory to run it again",
                    dir.display()
                )
            }
        }
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut overall = crate::progress::Overall::new(quiet, plan.len(), "variants");
    for (label, dir, cfg) in plan {
        let (rounds, seed) = (cfg.rounds, cfg.seed);
        let t0 = Instant::now();
        let what = if seeds > 1 { format!("{label} (seed {seed})") } else { label.clone() };
        overall.start(&what);
        let res = if finished(&dir, rounds) {
            crate::progress::note(&format!("{what}: already finished in {}", dir.display()));
            Ok(())
        } else if dir.join(fedkit_engine::checkpoint::CHECKPOINT_FILE).exists() {
            crate::progress::note(&format!("{what}: resuming {}", dir.display()));
            fedkit_engine::resume(&dir, Some(rounds))
                .map_err(anyhow::Error::from)
                .and_then(|(mut e, mut o)| crate::drive(&mut e, &mut o, None, quiet, &what).map(|_| ()))
        } else {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
            }
            crate::run_config(cfg, &dir, None, quiet).map(|_| ())
        };
        overall.finish_one();
        let error = res.err().map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            crate::progress::note(&format!("warning: {what} failed: {e}"));
        }
        let rows = read_rows(&dir).unwrap_or_default();
        let seconds = run_seconds(&dir).unwrap_or_else(|| t0.elapsed().as_secs_f64());
        let run = SeedRun { seed, rows, seconds, error };
        match outcomes.last_mut() {
            Some(o) if o.label == label => o.runs.push(run),
            _ => outcomes.push(Outcome { label, runs: vec![run] }),
        }
    }
    overall.finish();
    Ok(outcomes)
}

/// Run every variant and write the table (`comparison.md`, `comparison.csv`) and the test
/// accuracy curves (`comparison.png`, `comparison.svg`: mean and a band over seeds).
#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Path,
    sets: &[String],
    variants: &[Variant],
    seeds: u32,
    out: &Path,
    columns: &Columns,
    quiet: bool,
) -> Result<String> {
    let outcomes = run_all(config, sets, variants, seeds, out, quiet)?;
    let (md, csv) = tables(&outcomes, columns);
    for (name, text) in [("comparison.md", &md), ("comparison.csv", &csv)] {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    // The curves need evaluated rounds; a comparison without them keeps its tables only.
    match crate::plot::curves(&[out.to_path_buf()], "test_acc", crate::plot::XAxis::Round) {
        Ok(curves) => {
            for ext in ["png", "svg"] {
                let p = out.join(format!("comparison.{ext}"));
                crate::plot::write(&p, &curves, "test accuracy", "round", "test_acc")?;
            }
        }
        Err(e) => eprintln!("note: no accuracy plot: {e:#}"),
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

/// Which columns the table has beyond the fixed ones.
#[derive(Clone, Debug, Default)]
pub struct Columns {
    /// The headline metric at these rounds.
    pub at: Vec<u32>,
    /// The first round whose test accuracy reaches this value.
    pub target: Option<f64>,
    /// The headline metric's mean over the last K evaluations (0: no such column).
    pub last: usize,
    /// The headline metric (`test_acc` when empty): the `@round`, final, best and mean-last
    /// columns report it; "best" is the lowest for a metric whose name ends in `loss`.
    pub metric: String,
    /// More metrics, each as its last recorded value.
    pub extra: Vec<String>,
}

impl Columns {
    fn metric(&self) -> &str {
        if self.metric.is_empty() { "test_acc" } else { &self.metric }
    }
    /// Column names for the headline metric: `acc@10`, `final_acc`, ... for `test_acc`;
    /// `train_loss@10`, `final_train_loss`, ... otherwise.
    fn names(&self) -> (String, String, String) {
        match self.metric() {
            "test_acc" => ("acc@".into(), "final_acc".into(), "best_acc".into()),
            m => (format!("{m}@"), format!("final_{m}"), format!("best_{m}")),
        }
    }
}

/// The metrics of one run, by column name (`None`: not measured).
fn run_cells(run: &SeedRun, names: &[String], columns: &Columns) -> Vec<Option<f64>> {
    let metric = columns.metric();
    let (at, final_name, best_name) = columns.names();
    let acc: Vec<(f64, f64)> = run.rows.iter().filter_map(|r| Some((get(r, "round")?, get(r, metric)?))).collect();
    let test: Vec<(f64, f64)> = run.rows.iter().filter_map(|r| Some((get(r, "round")?, get(r, "test_acc")?))).collect();
    let lower_is_better = metric.ends_with("loss");
    names
        .iter()
        .map(|name| match name.as_str() {
            n if n == final_name => acc.last().map(|a| a.1),
            n if n == best_name => acc.iter().map(|a| a.1).reduce(if lower_is_better { f64::min } else { f64::max }),
            "MB_up" | "MB_down" => {
                let k = if name == "MB_up" { "bytes_up" } else { "bytes_down" };
                Some(run.rows.iter().filter_map(|r| get(r, k)).fold(0.0, |a, b| a + b) / 1e6)
            }
            "seconds" => Some(run.seconds),
            n if n.starts_with(&at) => {
                let r: f64 = n[at.len()..].parse().ok()?;
                acc.iter().find(|a| a.0 == r).map(|a| a.1)
            }
            n if n.starts_with("rounds_to_") => {
                let t = columns.target?;
                test.iter().find(|a| a.1 >= t).map(|a| a.0)
            }
            n if n.starts_with("mean_last") => {
                let k = columns.last.min(acc.len());
                (k > 0).then(|| acc[acc.len() - k..].iter().map(|a| a.1).sum::<f64>() / k as f64)
            }
            n if n.starts_with("sd_last") => {
                let k = columns.last.min(acc.len());
                let v: Vec<f64> = acc[acc.len() - k..].iter().map(|a| a.1).collect();
                (k > 1).then(|| mean_std(&v).1)
            }
            k => run.rows.iter().rev().find_map(|r| get(r, k)),
        })
        .collect()
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// The comparison as a Markdown table and as CSV (per column mean and standard deviation over
/// the seeds when there are several).
pub fn tables(outcomes: &[Outcome], columns: &Columns) -> (String, String) {
    let has = |k: &str| {
        outcomes.iter().flat_map(|o| &o.runs).any(|s| s.rows.iter().any(|r| get(r, k).is_some_and(|v| v != 0.0)))
    };
    let (at, final_name, best_name) = columns.names();
    let mut names: Vec<String> = columns.at.iter().map(|r| format!("{at}{r}")).collect();
    names.extend([final_name, best_name]);
    if columns.last > 0 {
        names.push(format!("mean_last{}", columns.last));
        names.push(format!("sd_last{}", columns.last));
    }
    if let Some(t) = columns.target {
        names.push(format!("rounds_to_{t}"));
    }
    names.extend(["MB_up", "MB_down"].map(String::from));
    let optional = ["val_acc", "local_acc_min", "local_acc_mean", "model_zeros", "hessian_top"];
    names.extend(optional.into_iter().filter(|k| has(k) && !columns.extra.iter().any(|e| e == k)).map(String::from));
    names.extend(columns.extra.iter().cloned());
    names.push("seconds".into());
    let seeds = outcomes.iter().map(|o| o.runs.len()).max().unwrap_or(1);

    let decimals = |name: &str| match name {
        "MB_up" | "MB_down" => 2,
        "seconds" => 1,
        n if n.starts_with("rounds_to_") => 0,
        _ => 4,
    };
    let mut md_head = vec!["variant".to_string()];
    let mut csv_head = vec!["variant".to_string()];
    if seeds > 1 {
        md_head.push("seeds".into());
        csv_head.push("seeds".into());
    }
    md_head.extend(names.iter().cloned());
    for n in &names {
        if seeds > 1 {
            csv_head.extend([format!("{n}_mean"), format!("{n}_std")]);
        } else {
            csv_head.push(n.clone());
        }
    }
    md_head.push("status".into());
    csv_head.push("status".into());
    let (mut md_body, mut csv_body): (Vec<Vec<String>>, Vec<Vec<String>>) = (Vec::new(), Vec::new());
    for o in outcomes {
        let cells: Vec<Vec<Option<f64>>> = o.runs.iter().map(|r| run_cells(r, &names, columns)).collect();
        let (mut md_row, mut csv_row) = (vec![o.label.clone()], vec![o.label.clone()]);
        if seeds > 1 {
            let list = o.runs.iter().map(|r| r.seed.to_string()).collect::<Vec<_>>().join(" ");
            md_row.push(list.clone());
            csv_row.push(list);
        }
        for (j, name) in names.iter().enumerate() {
            let vals: Vec<f64> = cells.iter().filter_map(|c| c[j]).collect();
            let d = decimals(name);
            if vals.is_empty() {
                md_row.push("-".into());
                csv_row.extend(std::iter::repeat_n("-".to_string(), if seeds > 1 { 2 } else { 1 }));
            } else if seeds > 1 {
                let (m, s) = mean_std(&vals);
                let partial = if vals.len() < o.runs.len() {
                    format!(" ({}/{})", vals.len(), o.runs.len())
                } else {
                    String::new()
                };
                md_row.push(format!("{m:.d$} ± {s:.d$}{partial}"));
                csv_row.extend([format!("{m:.d$}"), format!("{s:.d$}")]);
            } else {
                md_row.push(format!("{:.d$}", vals[0]));
                csv_row.push(format!("{:.d$}", vals[0]));
            }
        }
        let failed: Vec<String> = o
            .runs
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("seed {}: {}", r.seed, e.lines().next().unwrap_or(""))))
            .collect();
        let status = if failed.is_empty() { "ok".to_string() } else { format!("failed: {}", failed.join("; ")) };
        md_row.push(status.clone());
        csv_row.push(status);
        md_body.push(md_row);
        csv_body.push(csv_row);
    }
    let md_line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut md = md_line(&md_head);
    md.push_str(&md_line(&md_head.iter().map(|_| "---".to_string()).collect::<Vec<_>>()));
    md_body.iter().for_each(|r| md.push_str(&md_line(r)));
    let csv_cell =
        |c: &String| if c.contains([',', '"', '\n']) { format!("\"{}\"", c.replace('"', "\"\"")) } else { c.clone() };
    let mut csv = csv_head.iter().map(csv_cell).collect::<Vec<_>>().join(",") + "\n";
    for r in &csv_body {
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
        let run = |seed: u64, accs: [f64; 3]| SeedRun {
            seed,
            rows: vec![row(1.0, accs[0]), row(2.0, accs[1]), row(3.0, accs[2])],
            seconds: 1.0,
            error: None,
        };
        let columns = Columns { at: vec![2, 9], target: Some(0.75), last: 2, ..Columns::default() };
        let o = Outcome { label: "x".into(), runs: vec![run(0, [0.5, 0.8, 0.7])] };
        let (md, csv) = tables(&[o], &columns);
        assert!(md.contains("| x | 0.8000 | - | 0.7000 | 0.8000 | 0.7500 | 0.0707 | 2 | 3.00 | 0.00 |"), "{md}");
        assert!(
            csv.starts_with(
                "variant,acc@2,acc@9,final_acc,best_acc,mean_last2,sd_last2,rounds_to_0.75,MB_up,MB_down,seconds,status\n"
            ),
            "{csv}"
        );
        // Several seeds: mean ± sample std per cell; a cell some seeds lack says how many had it.
        let o = Outcome { label: "y".into(), runs: vec![run(0, [0.5, 0.8, 0.7]), run(1, [0.5, 0.6, 0.7])] };
        let (md, csv) = tables(&[o], &columns);
        assert!(md.contains("| y | 0 1 | 0.7000 ± 0.1414 | - | 0.7000 ± 0.0000 | 0.7500 ± 0.0707 |"), "{md}");
        assert!(md.contains("| 2 ± 0 (1/2) |"), "rounds to target: only seed 0 reached it at round 2: {md}");
        assert!(csv.lines().next().unwrap().contains("acc@2_mean,acc@2_std"), "{csv}");
        // Another headline metric: a loss's best is its lowest; extra columns show last values.
        let with_loss = |seed: u64| {
            let mut r = run(seed, [0.5, 0.8, 0.7]);
            for (row, l) in r.rows.iter_mut().zip([2.0, 1.0, 1.5]) {
                row.insert("train_loss".into(), l.into());
            }
            r
        };
        let columns =
            Columns { at: vec![2], metric: "train_loss".into(), extra: vec!["test_acc".into()], ..Columns::default() };
        let (md, _) = tables(&[Outcome { label: "z".into(), runs: vec![with_loss(0)] }], &columns);
        assert!(md.starts_with("| variant | train_loss@2 | final_train_loss | best_train_loss | MB_up |"), "{md}");
        assert!(md.contains("| z | 1.0000 | 1.5000 | 1.0000 |") && md.contains("| 0.7000 | 1.0 | ok |"), "{md}");
    }
}
