//! `fedkit matrix CONFIG --attacks a,b --defenses x,y [--algorithms ...] [--seeds N]`: every
//! attack against every defence (and algorithm) on the same federation and seeds.
//!
//! Each cell is a `fedkit compare` variant (one run directory `OUT/<attack>__<defence>[__<algo>]`,
//! resumable; with `--seeds N`, N runs). An attack is a preset (below) or `--attack
//! LABEL=PIPELINE` with PIPELINE an inline TOML array of stages; its stages come before the
//! config's own `[[pipeline]]`. A defence is an aggregator name (`aggregator.use`) or `--defense
//! LABEL=KEY=VALUE;KEY=VALUE`. The config's `[threat]` says who attacks (`none` runs the same
//! threat model with no attack: the clean baseline of every defence).
//!
//! It writes `matrix.csv` (one row a cell: final `test_acc` and `backdoor_acc`, mean and standard
//! deviation over seeds, and the mean detection rates `detect_tpr` / `detect_fpr` of filtering
//! defences), `matrix.md` (one grid per metric) and heat maps `heat_<metric>[_<algo>].svg` and
//! `.png` of both metrics.
//!
//! Attack presets (the backdoor ones use target class 7; boosting assumes `sampling.per_round`
//! clients a round): `none`; `backdoor` (pixel trigger on half the attacker's data);
//! `model_replacement` and `constrain_and_scale` (backdoor data plus the boost / the anomaly
//! term); `neurotoxin` (backdoor data plus the projection); `blind` (the MGDA two-task loss on
//! clean data); `dba`; `edge_case`; and the
//! untargeted `label_flip`, `sign_flip`, `gaussian`, `alie`, `ipm`, `min_max`, `min_sum`, `fang`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fedkit_engine::RunConfig;
use serde_json::{Map, Value};

use crate::compare::{self, Outcome, Variant, mean_std};
use crate::heatmap::HeatMap;

/// The untargeted attacks, each one stage on the malicious clients.
const UNTARGETED: [&str; 8] = ["label_flip", "sign_flip", "gaussian", "alie", "ipm", "min_max", "min_sum", "fang"];
/// Every preset name.
pub const PRESETS: [&str; 16] = [
    "none",
    "backdoor",
    "blind",
    "model_replacement",
    "constrain_and_scale",
    "neurotoxin",
    "dba",
    "edge_case",
    "label_flip",
    "sign_flip",
    "gaussian",
    "alie",
    "ipm",
    "min_max",
    "min_sum",
    "fang",
];

/// The stages of preset `name` (inline TOML tables), for `cohort` clients a round.
fn preset(name: &str, cohort: usize) -> Option<Vec<String>> {
    let bd = r#"{ use = "backdoor", on = "malicious", target = 7 }"#.to_string();
    let on_bad = |s: &str| format!(r#"{{ use = "{s}", on = "malicious" }}"#);
    Some(match name {
        "none" => vec![],
        "backdoor" => vec![bd],
        "blind" => vec![r#"{ use = "blind", on = "malicious", target = 7 }"#.into()],
        "model_replacement" => {
            vec![bd, format!(r#"{{ use = "model_replacement", on = "malicious", cohort = {cohort} }}"#)]
        }
        "constrain_and_scale" => {
            vec![bd, format!(r#"{{ use = "constrain_and_scale", on = "malicious", cohort = {cohort} }}"#)]
        }
        "neurotoxin" => vec![bd, on_bad("neurotoxin")],
        "dba" => vec![r#"{ use = "dba", on = "malicious", target = 7 }"#.into()],
        "edge_case" => vec![r#"{ use = "edge_case", target = 7 }"#.into()],
        s if UNTARGETED.contains(&s) => vec![on_bad(s)],
        _ => return None,
    })
}

/// One axis entry: a label and what it sets.
#[derive(Clone, Debug)]
pub struct Axis {
    pub label: String,
    /// Attacks: inline TOML tables (stages); defences and algorithms: `KEY=VALUE` settings.
    pub items: Vec<String>,
}

fn check_label(label: &str, what: &str) -> Result<()> {
    if label.is_empty()
        || label.contains("__")
        || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        bail!(
            "{what} label `{label}`: use letters, digits, '_', '-' and '.' (and no `__`, which separates a cell's parts)"
        )
    }
    Ok(())
}

/// The attack axis: presets from `--attacks` and custom `--attack LABEL=[...]`.
pub fn attacks(names: &[String], custom: &[String], cohort: usize) -> Result<Vec<Axis>> {
    let mut out = Vec::new();
    for n in names.iter().flat_map(|a| a.split(',')).map(str::trim).filter(|a| !a.is_empty()) {
        let Some(items) = preset(n, cohort) else {
            bail!(
                "--attacks: unknown attack `{n}`; presets: {} (or define one with --attack LABEL=[...])",
                PRESETS.join(", ")
            )
        };
        out.push(Axis { label: n.to_string(), items });
    }
    for c in custom {
        let Some((label, pipeline)) = c.split_once('=') else {
            bail!("--attack `{c}`: expected LABEL=[{{ use = \"...\", on = \"malicious\" }}, ...]")
        };
        let label = label.trim();
        check_label(label, "--attack")?;
        let parsed: toml::Table = toml::from_str(&format!("p = {pipeline}"))
            .with_context(|| format!("--attack `{label}`: the pipeline must be an inline TOML array of tables"))?;
        let Some(toml::Value::Array(stages)) = parsed.get("p") else {
            bail!(
                "--attack `{label}`: the pipeline must be an inline TOML array of tables, e.g. [{{ use = \"sign_flip\", on = \"malicious\" }}]"
            )
        };
        let mut items = Vec::new();
        for s in stages {
            let toml::Value::Table(t) = s else { bail!("--attack `{label}`: every pipeline entry must be a table") };
            items.push(toml::Value::Table(t.clone()).to_string());
        }
        out.push(Axis { label: label.to_string(), items });
    }
    Ok(out)
}

/// The defence axis: aggregator names from `--defenses` and custom `--defense LABEL=SETS`.
pub fn defenses(names: &[String], custom: &[String]) -> Result<Vec<Axis>> {
    let mut out: Vec<Axis> = names
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| Axis { label: a.to_string(), items: vec![format!("aggregator.use={a}")] })
        .collect();
    if !custom.is_empty() {
        for v in compare::variants(&[], custom)? {
            check_label(&v.label, "--defense")?;
            out.push(Axis { label: v.label, items: v.sets });
        }
    }
    Ok(out)
}

/// The cells, row-major: attack, defence, algorithm; each a compare variant.
fn cells(attacks: &[Axis], defenses: &[Axis], algorithms: &[String], base: &RunConfig) -> Vec<Variant> {
    let own: Vec<String> = base.pipeline.iter().map(|t| toml::Value::Table(t.clone()).to_string()).collect();
    let algos: Vec<Option<&String>> =
        if algorithms.is_empty() { vec![None] } else { algorithms.iter().map(Some).collect() };
    let mut out = Vec::new();
    for a in attacks {
        for d in defenses {
            for algo in &algos {
                let stages: Vec<String> = a.items.iter().chain(&own).cloned().collect();
                let mut sets = vec![format!("pipeline=[{}]", stages.join(", "))];
                sets.extend(d.items.iter().cloned());
                let mut label = format!("{}__{}", a.label, d.label);
                if let Some(algo) = algo {
                    sets.push(format!("algorithm.use={algo}"));
                    label = format!("{label}__{algo}");
                }
                out.push(Variant { label, sets });
            }
        }
    }
    out
}

/// What a cell's seeds gave: per metric (mean, std) over the seeds that recorded it.
struct CellResult {
    test_acc: Option<(f64, f64)>,
    backdoor_acc: Option<(f64, f64)>,
    detect_tpr: Option<f64>,
    detect_fpr: Option<f64>,
    status: String,
}

fn last_of(rows: &[Map<String, Value>], key: &str) -> Option<f64> {
    rows.iter().rev().find_map(|r| r.get(key).and_then(Value::as_f64))
}

fn mean_of(rows: &[Map<String, Value>], key: &str) -> Option<f64> {
    let v: Vec<f64> = rows.iter().filter_map(|r| r.get(key).and_then(Value::as_f64)).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn summarise(o: &Outcome) -> CellResult {
    let over = |f: &dyn Fn(&[Map<String, Value>]) -> Option<f64>| -> Option<(f64, f64)> {
        let v: Vec<f64> = o.runs.iter().filter_map(|r| f(&r.rows)).collect();
        (!v.is_empty()).then(|| mean_std(&v))
    };
    let failed: Vec<String> = o
        .runs
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("seed {}: {}", r.seed, e.lines().next().unwrap_or(""))))
        .collect();
    CellResult {
        test_acc: over(&|r| last_of(r, "test_acc")),
        backdoor_acc: over(&|r| last_of(r, "backdoor_acc")),
        detect_tpr: over(&|r| mean_of(r, "detect_tpr")).map(|m| m.0),
        detect_fpr: over(&|r| mean_of(r, "detect_fpr")).map(|m| m.0),
        status: if failed.is_empty() { "ok".into() } else { format!("failed: {}", failed.join("; ")) },
    }
}

/// Run the matrix and write its tables and heat maps; returns `matrix.md`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Path,
    sets: &[String],
    attacks_axis: &[Axis],
    defenses_axis: &[Axis],
    algorithms: &[String],
    seeds: u32,
    out: &Path,
    quiet: bool,
) -> Result<String> {
    if attacks_axis.is_empty() || defenses_axis.is_empty() {
        bail!("the matrix needs at least one attack (--attacks) and one defence (--defenses)")
    }
    let base = RunConfig::load(Some(config), sets)?;
    let variants = cells(attacks_axis, defenses_axis, algorithms, &base);
    let outcomes = compare::run_all(config, sets, &variants, seeds, out, quiet)?;
    let results: Vec<CellResult> = outcomes.iter().map(summarise).collect();
    let algos: Vec<String> = if algorithms.is_empty() { vec![String::new()] } else { algorithms.to_vec() };

    let fmt = |v: Option<(f64, f64)>| match v {
        Some((m, s)) if seeds > 1 => format!("{m:.4} ± {s:.4}"),
        Some((m, _)) => format!("{m:.4}"),
        None => "-".into(),
    };
    let num = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
    let mut csv = String::from(
        "attack,defense,algorithm,seeds,test_acc_mean,test_acc_std,backdoor_acc_mean,backdoor_acc_std,detect_tpr,detect_fpr,status\n",
    );
    let index = |a: usize, d: usize, g: usize| (a * defenses_axis.len() + d) * algos.len() + g;
    for (a, at) in attacks_axis.iter().enumerate() {
        for (d, de) in defenses_axis.iter().enumerate() {
            for (g, algo) in algos.iter().enumerate() {
                let r = &results[index(a, d, g)];
                let pair = |v: Option<(f64, f64)>| v.map_or("-,-".to_string(), |(m, s)| format!("{m:.4},{s:.4}"));
                csv += &format!(
                    "{},{},{},{seeds},{},{},{},{},\"{}\"\n",
                    at.label,
                    de.label,
                    algo,
                    pair(r.test_acc),
                    pair(r.backdoor_acc),
                    num(r.detect_tpr),
                    num(r.detect_fpr),
                    r.status.replace('"', "'")
                );
            }
        }
    }
    let rows: Vec<String> = attacks_axis.iter().map(|a| a.label.clone()).collect();
    let cols: Vec<String> = defenses_axis.iter().map(|d| d.label.clone()).collect();
    let spread = if seeds > 1 { format!("mean ± std over {seeds} seeds") } else { "one seed".into() };
    let mut md = String::new();
    type Pick = fn(&CellResult) -> Option<(f64, f64)>;
    let metrics: [(&str, &str, Pick); 2] = [
        ("backdoor_acc", "backdoor accuracy (attack success) at the last evaluation", |r| r.backdoor_acc),
        ("test_acc", "main-task test accuracy at the last evaluation", |r| r.test_acc),
    ];
    for (g, algo) in algos.iter().enumerate() {
        for (key, what, pick) in metrics {
            let of = if algo.is_empty() { String::new() } else { format!(", algorithm {algo}") };
            md += &format!(
                "### {key}: {what}{of} ({spread})\n\n| attack \\ defence | {} |\n|---|{}\n",
                cols.join(" | "),
                "---|".repeat(cols.len())
            );
            let mut grid = Vec::new();
            for (a, at) in rows.iter().enumerate() {
                let line: Vec<String> = (0..cols.len()).map(|d| fmt(pick(&results[index(a, d, g)]))).collect();
                md += &format!("| {at} | {} |\n", line.join(" | "));
                grid.extend((0..cols.len()).map(|d| pick(&results[index(a, d, g)])));
            }
            md += "\n";
            let stem = if algo.is_empty() { format!("heat_{key}") } else { format!("heat_{key}_{algo}") };
            let title = format!("{key} ({spread}){of}");
            HeatMap { title: &title, rows: &rows, cols: &cols, cells: &grid }.write(&out.join(stem))?;
        }
    }
    let failures: Vec<String> = outcomes
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.status != "ok")
        .map(|(o, r)| format!("- {}: {}", o.label, r.status))
        .collect();
    if !failures.is_empty() {
        md += &format!("Failed cells:\n{}\n", failures.join("\n"));
    }
    for (name, text) in [("matrix.md", &md), ("matrix.csv", &csv)] {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(md)
}

/// `OUT` default: `runs/matrix-<config stem>-<time>`.
pub fn default_out(config: &Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    PathBuf::from(format!("runs/matrix-{stem}-{}", crate::utc_stamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_presets_and_custom_entries() {
        let a = attacks(&["none,model_replacement".into()], &["bd3=[{ use = \"backdoor\", target = 3 }]".into()], 10)
            .unwrap();
        assert_eq!(a.iter().map(|x| x.label.as_str()).collect::<Vec<_>>(), ["none", "model_replacement", "bd3"]);
        assert!(a[0].items.is_empty());
        assert!(a[1].items[1].contains("cohort = 10"));
        assert!(a[2].items[0].contains("target = 3"));
        assert!(attacks(&["nope".into()], &[], 10).unwrap_err().to_string().contains("presets: none, backdoor"));
        assert!(attacks(&[], &["x=not toml".into()], 10).is_err());
        assert!(attacks(&[], &["a__b=[]".into()], 10).is_err(), "`__` separates cell parts");
        let d = defenses(&["mean,krum".into()], &["krum2=aggregator.use=krum;aggregator.f=2".into()]).unwrap();
        assert_eq!(d[2].items, ["aggregator.use=krum", "aggregator.f=2"]);
        // Every preset builds.
        assert!(PRESETS.iter().all(|p| preset(p, 10).is_some()));
    }

    #[test]
    fn cells_put_the_attack_before_the_configs_own_stages() {
        let mut base = RunConfig::default();
        base.pipeline = vec![toml::from_str("use = \"clip\"\nmax_norm = 1.0").unwrap()];
        let a = attacks(&["sign_flip".into()], &[], 10).unwrap();
        let d = defenses(&["median".into()], &[]).unwrap();
        let c = cells(&a, &d, &["fedprox".into()], &base);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].label, "sign_flip__median__fedprox");
        let p = &c[0].sets[0];
        assert!(p.find("sign_flip").unwrap() < p.find("clip").unwrap(), "{p}");
        assert_eq!(&c[0].sets[1..], ["aggregator.use=median", "algorithm.use=fedprox"]);
    }
}
