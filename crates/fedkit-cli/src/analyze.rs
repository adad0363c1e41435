//! `fedkit analyze`: analyses of the models a run kept (`[output] keep_models`,
//! `keep_clients`). Each writes `report.json`, `report.md` and its pictures into `--out`.
//!
//! `cka`: representation similarity (CKA, RBF CKA, CCA, SVCCA, PWCCA, Procrustes) between the
//! layers of the global models of several runs (e.g. seeds) or between the models of several
//! clients of one run, on one probe set drawn from the test data; Kornblith et al.'s
//! layer-identification test and Ding et al.'s grounding test.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fedkit_core::{Activation, Batch, ParamKind, Params, RngStream};
use fedkit_engine::{Engine, model_store};
use fedkit_methods::analysis::grounding::{Sensitivity, Variant, head_accuracy, kept_counts, sensitivity};
use fedkit_methods::analysis::similarity::{Options, identified, layer_matrix};
use fedkit_methods::analysis::{Metric, Representation};
use serde_json::json;

use crate::compare::mean_std;
use crate::heatmap::HeatMap;

/// The analyses.
#[derive(clap::Subcommand)]
pub enum AnalyzeCommand {
    /// Representation similarity between models' layers: linear and RBF CKA, CCA, SVCCA, PWCCA
    /// and Procrustes; layer x layer and model x model heat maps, the layer-identification
    /// test across seeds, and the principal-component deletion (grounding) test.
    Cka(CkaArgs),
    /// Loss curvature of each run's global model (PyHessian): the top Hessian eigenvalues,
    /// the trace (Hutchinson) and the spectral density (stochastic Lanczos quadrature).
    Hessian(HessianArgs),
    /// Activation sparsity over training (lazy_neuron): each ReLU layer's share of zero
    /// activations and of dead units on every global model the run kept.
    Sparsity(SparsityArgs),
    /// Linear regions of an mlp along lines between test samples (linear_regions), on every
    /// global model the run kept.
    #[command(name = "linear_regions", alias = "linear-regions")]
    LinearRegions(RegionArgs),
}

/// `fedkit analyze linear_regions`.
#[derive(clap::Args)]
pub struct RegionArgs {
    /// The run directory (an mlp without normalisation; keep_models = "every:k" for a curve).
    #[arg(long)]
    run: PathBuf,
    /// Lines, each between two test samples drawn with --seed.
    #[arg(long, default_value_t = 20)]
    lines: usize,
    /// Seed of the line draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (default: `analyze-linear-regions` in the run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `fedkit analyze sparsity`.
#[derive(clap::Args)]
pub struct SparsityArgs {
    /// The run directory (its store should keep several rounds: keep_models = "every:k").
    #[arg(long)]
    run: PathBuf,
    /// Probe samples, drawn from the test data.
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Seed of the probe draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (default: `analyze-sparsity` in the run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `fedkit analyze hessian`.
#[derive(clap::Args)]
pub struct HessianArgs {
    /// A run directory (repeatable): each contributes its global model.
    #[arg(long = "run", required = true)]
    runs: Vec<PathBuf>,
    /// The round of the models (default: each run's last stored global model).
    #[arg(long)]
    round: Option<u32>,
    /// Training samples the loss is averaged over (drawn once per run, with --seed).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Top eigenvalues to find.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Power iterations per eigenvalue, and Hutchinson probes, at most.
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Relative change at which the power iteration and Hutchinson's mean stop.
    #[arg(long, default_value_t = 1e-3)]
    tol: f64,
    /// Lanczos steps per spectral-density run (0: no density).
    #[arg(long, default_value_t = 50)]
    slq_steps: usize,
    /// Spectral-density runs averaged.
    #[arg(long, default_value_t = 1)]
    slq_runs: usize,
    /// Seed of the sample draw and the random vectors.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (default: `analyze-hessian` in the first run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `fedkit analyze cka`.
#[derive(clap::Args)]
pub struct CkaArgs {
    /// A run directory (repeatable): each contributes its global model. With --clients, one
    /// run whose clients' models are compared.
    #[arg(long = "run", required = true)]
    runs: Vec<PathBuf>,
    /// The round of the models (default: each run's last stored global model; with --clients,
    /// required: the round whose updates the store keeps).
    #[arg(long)]
    round: Option<u32>,
    /// Compare these clients' models of --round (the global model of the round before plus the
    /// client's stored update), comma-separated.
    #[arg(long, value_delimiter = ',')]
    clients: Vec<u32>,
    /// Metrics, comma-separated: cka, rbf_cka, cca, cca_r2, svcca, pwcca, procrustes, or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    metric: Vec<String>,
    /// The layer of the model x model heat maps (and of the grounding test, which needs
    /// `features`, the output layer's input).
    #[arg(long, default_value = "features")]
    layer: String,
    /// Probe samples, drawn from the test data.
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// RBF CKA's sigma as a fraction of the median distance.
    #[arg(long, default_value_t = 0.5)]
    rbf_sigma: f64,
    /// SVCCA's share of variance kept.
    #[arg(long, default_value_t = 0.99)]
    svcca_share: f64,
    /// Seed of the probe draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (default: `analyze-cka` in the first run's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: AnalyzeCommand) -> Result<()> {
    match cmd {
        AnalyzeCommand::Cka(a) => cka(&a),
        AnalyzeCommand::Hessian(a) => hessian(&a),
        AnalyzeCommand::Sparsity(a) => sparsity(&a),
        AnalyzeCommand::LinearRegions(a) => linear_regions(&a),
    }
}

/// A model to compare: its label, architecture (the engine it was rebuilt in) and weights.
struct Subject {
    label: String,
    run: PathBuf,
    round: u32,
    client: Option<u32>,
    engine: usize,
    params: Params,
}

/// The run in `dir` rebuilt from its `resolved.toml` for reading its stored models.
fn rebuilt(dir: &Path) -> Result<Engine> {
    if !dir.join("resolved.toml").is_file() {
        bail!("{}: not a fedkit run directory (no resolved.toml)", dir.display());
    }
    let mut cfg = fedkit_engine::run::resolved_config(dir)?;
    cfg.init_from = None;
    cfg.model.remove("init");
    Ok(Engine::new(cfg)?)
}

/// The global model of `round` (or the last stored) of the run in `dir`.
fn global_model(dir: &Path, engine: &Engine, round: Option<u32>) -> Result<(u32, Params)> {
    let stored = model_store::stored_rounds(dir);
    let Some(&last) = stored.last() else {
        bail!("{}: the run kept no models (set [output] keep_models and rerun)", dir.display());
    };
    let r = round.unwrap_or(last);
    if !stored.contains(&r) {
        bail!("--round {r}: {} keeps the global models of rounds {:?}", dir.display(), stored);
    }
    Ok((r, model_store::read_global(dir, r, engine.global.layout())?))
}

fn subjects(a: &CkaArgs) -> Result<(Vec<Engine>, Vec<Subject>)> {
    let mut engines = Vec::new();
    let mut subjects = Vec::new();
    if !a.clients.is_empty() {
        let [dir] = a.runs.as_slice() else { bail!("--clients compares the clients of one run: give one --run") };
        let Some(round) = a.round else { bail!("--clients needs --round (the round of the clients' updates)") };
        // a client's model is the global model it started from plus the update the server
        // received (after the client's stages); [compress] changes the global model after the
        // store kept it, so the sum would not be the model the client trained
        let engine = crate::attack::rebuilt(dir, |cfg| {
            if cfg.compress.is_some() {
                bail!(
                    "--clients: with [compress] the clients start from the pruned global model, which the store does not keep"
                );
            }
            Ok(())
        })?;
        if round == 0 {
            bail!("--round 0: clients send updates from round 1 on");
        }
        let layout = engine.global.layout().clone();
        let start = model_store::read_global(dir, round - 1, &layout)?;
        for &c in &a.clients {
            if c as usize >= engine.population() {
                bail!("--clients {c}: the run has clients 0..{}", engine.population());
            }
            if engine.architecture_of(c) != 0 {
                bail!(
                    "--clients {c}: the client trains another architecture (model.per_client); compare clients of [model]"
                );
            }
            let mut params = start.clone();
            let update = model_store::read_update(dir, c, round, &layout)?;
            params.as_mut_slice().iter_mut().zip(update.as_slice()).for_each(|(w, u)| *w += u);
            subjects.push(Subject {
                label: format!("client {c}"),
                run: dir.clone(),
                round,
                client: Some(c),
                engine: 0,
                params,
            });
        }
        engines.push(engine);
    } else {
        for (i, dir) in a.runs.iter().enumerate() {
            let engine = rebuilt(dir)?;
            let (round, params) = global_model(dir, &engine, a.round)?;
            let label = dir.file_name().map_or(format!("run {i}"), |n| n.to_string_lossy().into_owned());
            subjects.push(Subject { label, run: dir.clone(), round, client: None, engine: i, params });
            engines.push(engine);
        }
    }
    if subjects.len() < 2 {
        bail!("give at least two models: two or more --run, or two or more --clients");
    }
    Ok((engines, subjects))
}

/// Why two runs' test sets may differ.
const SEEDED: &str =
    " (synthetic and fcube data are generated from the run's seed: compare seeds on a dataset read from files)";

/// The probe batch: `samples` test samples drawn with `seed`, the same in every run (checked).
fn probe(engines: &[Engine], samples: usize, seed: u64, runs: &[PathBuf]) -> Result<Batch> {
    let test = engines[0].test.without_transforms();
    if test.is_empty() {
        bail!("{}: the run has no test data to probe with", runs[0].display());
    }
    let n = samples.min(test.len());
    if n < 10 {
        bail!("--samples {samples}: at least 10 probe samples are needed (the test data has {})", test.len());
    }
    let mut ids = RngStream::new(seed).choose(test.len(), n);
    ids.sort_unstable();
    let mut batch = Batch::default();
    batch.fill(&test, &ids, &mut RngStream::new(0));
    for (e, dir) in engines.iter().zip(runs).skip(1) {
        let mut other = Batch::default();
        let t = e.test.without_transforms();
        if t.len() != test.len() {
            bail!(
                "{} and {} have different test sets ({} and {} samples): compare runs on the same data{SEEDED}",
                runs[0].display(),
                dir.display(),
                test.len(),
                t.len()
            );
        }
        other.fill(&t, &ids, &mut RngStream::new(0));
        if other.x != batch.x || other.y != batch.y {
            bail!(
                "{} and {} have different test sets: compare runs on the same data{SEEDED}",
                runs[0].display(),
                dir.display()
            );
        }
    }
    Ok(batch)
}

/// The output layer (`weight` `[features, classes]`, `bias`) of a model whose features have
/// `dim` units: the last weight entry of that shape followed by its bias.
fn output_layer(params: &Params, dim: usize, classes: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    let layout = params.layout();
    let e = layout.entries();
    (0..e.len().saturating_sub(1)).rev().find_map(|i| {
        let (w, b) = (&e[i], &e[i + 1]);
        (w.kind == ParamKind::Weight && w.shape == [dim, classes] && b.shape == [classes])
            .then(|| (params.as_slice()[w.range()].to_vec(), params.as_slice()[b.range()].to_vec()))
    })
}

fn metrics(names: &[String]) -> Result<Vec<Metric>> {
    if names.iter().any(|n| n == "all") {
        return Ok(Metric::ALL.to_vec());
    }
    let mut m = Vec::new();
    for n in names {
        let metric = Metric::parse(n)?;
        if !m.contains(&metric) {
            m.push(metric);
        }
    }
    Ok(m)
}

fn cka(a: &CkaArgs) -> Result<()> {
    let started = Instant::now();
    let out = a.out.clone().unwrap_or_else(|| a.runs[0].join("analyze-cka"));
    let metrics = metrics(&a.metric)?;
    if !(a.rbf_sigma > 0.0 && a.rbf_sigma.is_finite()) {
        bail!("--rbf-sigma {}: must be > 0", a.rbf_sigma);
    }
    if !(a.svcca_share > 0.0 && a.svcca_share <= 1.0) {
        bail!("--svcca-share {}: must be in (0, 1]", a.svcca_share);
    }
    let o = Options { rbf_sigma: a.rbf_sigma, svcca_share: a.svcca_share };
    let (engines, subjects) = subjects(a)?;
    let batch = probe(&engines, a.samples, a.seed, &a.runs)?;
    let n = batch.len();
    if n > 4000 {
        eprintln!(
            "note: {n} probe samples: every layer keeps an n x n Gram matrix and eigendecomposition; expect minutes and GBs"
        );
    }
    if batch.positions() > 0 {
        bail!("cka compares one representation per sample; {} has a target per position", engines[0].fed.train.name);
    }

    // every model's activations and representations
    let mut layers: Vec<Vec<String>> = Vec::new();
    let mut reps: Vec<Vec<Representation>> = Vec::new();
    let mut accuracy = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        eprintln!("[{}/{}] {}: activations of {n} probe samples", i + 1, subjects.len(), s.label);
        let mut model = engines[s.engine].architecture();
        let acts: Vec<Activation> = model.activations(&s.params, &batch)?;
        if let Some(bad) = acts.iter().find(|x| x.rows() != n || x.rows() * x.dim != x.values.len()) {
            bail!(
                "{}: layer {} gave {} values for {n} samples of {} units",
                s.label,
                bad.name,
                bad.values.len(),
                bad.dim
            );
        }
        let logits = acts.last().expect("activations end with the logits");
        let right = (0..n)
            .filter(|&k| fedkit_core::argmax(&logits.values[k * logits.dim..(k + 1) * logits.dim]) as u32 == batch.y[k])
            .count();
        accuracy.push(right as f64 / n as f64);
        layers.push(acts.iter().map(|x| x.name.clone()).collect());
        let mut layer_reps = Vec::with_capacity(acts.len());
        for x in &acts {
            layer_reps.push(
                Representation::new(&x.values, n, x.dim).with_context(|| format!("{}, layer {}", s.label, x.name))?,
            );
        }
        reps.push(layer_reps);
    }
    let layer_at: Vec<usize> = layers
        .iter()
        .zip(&subjects)
        .map(|(names, s)| {
            names
                .iter()
                .position(|l| *l == a.layer)
                .with_context(|| format!("--layer {}: {} has layers {}", a.layer, s.label, names.join(", ")))
        })
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    // layer x layer between every ordered pair of models, when they share their layers
    let same_layers = layers.iter().all(|l| *l == layers[0]);
    let m = subjects.len();
    let mut layer_json = serde_json::Map::new();
    let mut ident_json = serde_json::Map::new();
    let mut md_ident = String::new();
    if same_layers {
        let l = layers[0].len();
        for &metric in &metrics {
            eprintln!("{}: layer x layer over {} model pairs", metric.name(), m * (m - 1));
            let mut cells: Vec<Vec<f64>> = vec![Vec::new(); l * l];
            let (mut hit, mut of, mut shares) = (0, 0, Vec::new());
            for i in 0..m {
                for j in (0..m).filter(|&j| j != i) {
                    let mat = layer_matrix(metric, &reps[i], &reps[j], &o)?;
                    let found = identified(&mat, l);
                    shares.push(found as f64 / l as f64);
                    hit += found;
                    of += l;
                    mat.iter().enumerate().for_each(|(k, v)| cells[k].push(*v));
                }
            }
            let stats: Vec<(f64, f64)> = cells.iter().map(|c| mean_std(c)).collect();
            let title = format!(
                "{}: layers of model A (rows) x model B (mean over {} ordered pairs)",
                metric.name(),
                m * (m - 1)
            );
            let shown: Vec<Option<(f64, f64)>> = stats.iter().copied().map(Some).collect();
            HeatMap { title: &title, rows: &layers[0], cols: &layers[0], cells: &shown }
                .write(&out.join(format!("layers-{}", metric.name())))?;
            let rows = |f: fn(&(f64, f64)) -> f64| -> Vec<Vec<f64>> {
                stats.chunks(l).map(|r| r.iter().map(f).collect()).collect()
            };
            layer_json.insert(metric.name().into(), json!({"mean": rows(|s| s.0), "std": rows(|s| s.1)}));
            let (share, spread) = mean_std(&shares);
            ident_json.insert(
                metric.name().into(),
                json!({"identified": hit, "of": of, "share": share, "pair_std": spread, "pair_shares": shares}),
            );
            md_ident.push_str(&format!(
                "| {} | {hit} / {of} | {:.1}% ± {:.1} |\n",
                metric.name(),
                100.0 * share,
                100.0 * spread
            ));
        }
    }

    // model x model at --layer
    let labels: Vec<String> = subjects.iter().map(|s| s.label.clone()).collect();
    let mut model_json = serde_json::Map::new();
    for &metric in &metrics {
        let mut cells = Vec::with_capacity(m * m);
        for i in 0..m {
            for j in 0..m {
                cells.push(metric.similarity(&reps[i][layer_at[i]], &reps[j][layer_at[j]], &o)?);
            }
        }
        let title = format!("{} at layer {}", metric.name(), a.layer);
        let shown: Vec<Option<(f64, f64)>> = cells.iter().map(|&v| Some((v, 0.0))).collect();
        HeatMap { title: &title, rows: &labels, cols: &labels, cells: &shown }
            .write(&out.join(format!("models-{}", metric.name())))?;
        model_json.insert(metric.name().into(), json!(cells.chunks(m).map(|r| r.to_vec()).collect::<Vec<_>>()));
    }

    // Ding et al.'s principal-component deletion test on the features
    let quantised = engines.iter().any(|e| e.cfg.model.contains_key("quant"));
    if quantised && a.layer == "features" {
        eprintln!(
            "note: [model] quant: the output layer's real-valued weights are not the ones the model uses; no grounding test"
        );
    }
    let grounding = if a.layer == "features" && !quantised {
        grounding(&subjects, &reps, &layer_at, &batch, &accuracy, &metrics, &o)?
    } else {
        None
    };

    let models: Vec<_> = subjects
        .iter()
        .zip(&accuracy)
        .zip(&layers)
        .map(|((s, acc), l)| json!({"label": s.label, "run": s.run.display().to_string(), "round": s.round, "client": s.client, "probe_accuracy": acc, "layers": l}))
        .collect();
    let report = json!({
        "analysis": "cka", "samples": n, "seed": a.seed, "layer": a.layer, "options": o,
        "metrics": metrics.iter().map(|m| m.name()).collect::<Vec<_>>(), "models": models,
        "layer_identification": ident_json, "layer_matrices": layer_json, "model_matrix": model_json,
        "grounding": grounding.as_ref().map(|g| &g.json), "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;

    let mut md = format!(
        "# Representation similarity of {m} models\n\n{n} probe samples of the test data (seed {}). Models:\n\n| model | run | round | probe accuracy |\n|---|---|---|---|\n",
        a.seed
    );
    for (s, acc) in subjects.iter().zip(&accuracy) {
        md.push_str(&format!("| {} | {} | {} | {:.3} |\n", s.label, s.run.display(), s.round, acc));
    }
    if same_layers {
        md.push_str(&format!(
            "\n## Layer identification (Kornblith et al.)\n\nFor every ordered pair of models and every layer of the first, \
             is the most similar layer of the second the same one? Layers: {}. Share: mean ± std over the ordered pairs.\n\n| metric | identified | share |\n|---|---|---|\n{md_ident}",
            layers[0].join(", ")
        ));
        for metric in &metrics {
            md.push_str(&format!("\n![{0} between layers](layers-{0}.png)\n", metric.name()));
        }
    } else {
        md.push_str("\nThe models have different layers: no layer x layer comparison.\n");
    }
    md.push_str(&format!("\n## Models compared at layer `{}`\n\n", a.layer));
    for metric in &metrics {
        md.push_str(&format!("![{0} between models](models-{0}.png)\n", metric.name()));
    }
    if let Some(g) = &grounding {
        md.push_str(&g.md);
    }
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("cannot write {}", out.display()))?;
    match ident_json.get("cka") {
        Some(c) => println!(
            "linear CKA identifies {:.1}% of layers; wrote {}",
            100.0 * c["share"].as_f64().unwrap_or(0.0),
            out.display()
        ),
        None => println!("wrote {}", out.display()),
    }
    Ok(())
}

/// The grounding test's report parts.
struct Grounding {
    json: serde_json::Value,
    md: String,
}

fn grounding(
    subjects: &[Subject],
    reps: &[Vec<Representation>],
    layer_at: &[usize],
    batch: &Batch,
    accuracy: &[f64],
    metrics: &[Metric],
    o: &Options,
) -> Result<Option<Grounding>> {
    let classes = batch.classes;
    let mut variants = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        let rep = &reps[i][layer_at[i]];
        let Some((w, b)) = output_layer(&s.params, rep.p(), classes) else {
            eprintln!("note: {}: no linear output layer over the features found; no grounding test", s.label);
            return Ok(None);
        };
        for k in kept_counts(rep.rank) {
            let r = rep.keep_components(k)?;
            let acc = head_accuracy(&r, &w, &b, &batch.y);
            variants.push(Variant { model: i, kept: k, rep: r, accuracy: acc });
        }
    }
    let best = (0..subjects.len()).max_by(|&x, &y| accuracy[x].total_cmp(&accuracy[y]).then(y.cmp(&x))).unwrap_or(0);
    let reference = variants.iter().find(|v| v.model == best).expect("every model has its full variant");
    let mut results: Vec<Sensitivity> = Vec::new();
    for &metric in metrics {
        eprintln!("{}: grounding test over {} variants", metric.name(), variants.len());
        results.push(sensitivity(metric, reference, &variants, o)?);
    }
    let json = json!({
        "layer": "features", "reference": subjects[best].label,
        "variants": variants.iter().map(|v| json!({"model": subjects[v.model].label, "kept": v.kept, "accuracy": v.accuracy})).collect::<Vec<_>>(),
        "metrics": results,
    });
    let mut md = format!(
        "\n## Grounding test (Ding et al.): principal-component deletion\n\nEach model's features with their lowest-variance \
         principal components deleted ({} variants), fed to the model's own output layer, against the reference {} \
         (highest probe accuracy). Sensitivity: Spearman's rho between the metric's distance and the accuracy \
         difference (higher is better); bad share: pairs among the closest 20% by distance yet the 20% most \
         different in accuracy (lower is better).\n\n| metric | Spearman rho | bad share |\n|---|---|---|\n",
        variants.len(),
        subjects[best].label
    );
    for r in &results {
        md.push_str(&format!("| {} | {:.3} | {:.3} |\n", r.metric.name(), r.spearman, r.bad_share));
    }
    Ok(Some(Grounding { json, md }))
}

fn hessian(a: &HessianArgs) -> Result<()> {
    use fedkit_methods::analysis::pyhessian::{density, spectrum, top_eigenvalues, trace};
    let started = Instant::now();
    if a.samples == 0 || a.top == 0 || a.iters == 0 || a.slq_runs == 0 {
        bail!("--samples, --top, --iters and --slq-runs must be at least 1");
    }
    if !(a.tol >= 0.0 && a.tol.is_finite()) {
        bail!("--tol {}: must be >= 0", a.tol);
    }
    let out = a.out.clone().unwrap_or_else(|| a.runs[0].join("analyze-hessian"));
    let (mut rows, mut curves, mut md_rows) = (Vec::new(), Vec::new(), String::new());
    for (i, dir) in a.runs.iter().enumerate() {
        let engine = rebuilt(dir)?;
        let (round, params) = global_model(dir, &engine, a.round)?;
        let label = dir.file_name().map_or(format!("run {i}"), |n| n.to_string_lossy().into_owned());
        let train = fedkit_core::ClientData::whole(engine.fed.train.clone());
        let mut model = engine.architecture();
        let mut rng = RngStream::derive(a.seed, "analyze.hessian", 0, 0);
        let mut h = fedkit_core::HessianVectorProduct::new(model.as_mut(), &params, &train, a.samples, &mut rng)?;
        eprintln!("[{}/{}] {label}: top {} eigenvalues", i + 1, a.runs.len(), a.top);
        let top = top_eigenvalues(&mut h, a.top, a.iters, a.tol, &mut rng)?;
        eprintln!("[{}/{}] {label}: trace", i + 1, a.runs.len());
        let (tr, probes) = trace(&mut h, a.iters, a.tol, &mut rng)?;
        let spec = if a.slq_steps > 0 {
            eprintln!("[{}/{}] {label}: spectral density ({} Lanczos steps)", i + 1, a.runs.len(), a.slq_steps);
            Some(spectrum(&mut h, a.slq_steps, a.slq_runs, &mut rng)?)
        } else {
            None
        };
        if let Some(s) = &spec {
            let (grid, dens) = density(s, 2000);
            let points = grid.iter().zip(&dens).map(|(&x, &y)| (x, (y.max(1e-12)).log10(), 0.0)).collect();
            curves.push(crate::plot::Curve { label: label.clone(), points });
        }
        md_rows.push_str(&format!(
            "| {label} | {round} | {} | {tr:.4} ({probes} probes) |\n",
            top.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", ")
        ));
        rows.push(json!({"label": label, "run": dir.display().to_string(), "round": round, "top_eigenvalues": top,
            "trace": tr, "trace_probes": probes, "spectrum": spec}));
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    if !curves.is_empty() {
        for ext in ["png", "svg"] {
            crate::plot::write(
                &out.join(format!("density.{ext}")),
                &curves,
                "Hessian spectral density (SLQ)",
                "eigenvalue",
                "log10 density",
            )?;
        }
    }
    let report = json!({"analysis": "hessian", "samples": a.samples, "seed": a.seed, "iters": a.iters, "tol": a.tol,
        "slq_steps": a.slq_steps, "slq_runs": a.slq_runs, "models": rows, "seconds": started.elapsed().as_secs_f64()});
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    let md = format!(
        "# Loss curvature (PyHessian)\n\nThe Hessian of the mean training loss over {} training samples (seed {}), by \
         finite-difference Hessian-vector products.\n\n| model | round | top eigenvalues | trace |\n|---|---|---|---|\n{md_rows}{}",
        a.samples,
        a.seed,
        if curves.is_empty() { String::new() } else { "\n![spectral density](density.png)\n".into() }
    );
    std::fs::write(out.join("report.md"), md).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn sparsity(a: &SparsityArgs) -> Result<()> {
    use fedkit_methods::analysis::lazy_neuron::{dead_share, zero_share};
    let out = a.out.clone().unwrap_or_else(|| a.run.join("analyze-sparsity"));
    let engine = rebuilt(&a.run)?;
    let rounds = model_store::stored_rounds(&a.run);
    if rounds.is_empty() {
        bail!("{}: the run kept no models (set [output] keep_models = \"every:k\" and rerun)", a.run.display());
    }
    let engines = [engine];
    let batch = probe(&engines, a.samples, a.seed, std::slice::from_ref(&a.run))?;
    let engine = &engines[0];
    let layout = engine.global.layout().clone();
    let mut model = engine.architecture();
    let (mut layers, mut zeros, mut dead, mut acc) = (Vec::<String>::new(), Vec::new(), Vec::new(), Vec::new());
    for &r in &rounds {
        let params = model_store::read_global(&a.run, r, &layout)?;
        let acts = model.activations(&params, &batch)?;
        let hidden = &acts[..acts.len() - 1];
        layers = hidden.iter().map(|x| x.name.clone()).collect();
        zeros.push(hidden.iter().map(|x| zero_share(&x.values)).collect::<Vec<_>>());
        dead.push(hidden.iter().map(|x| dead_share(&x.values, x.dim)).collect::<Vec<_>>());
        let l = acts.last().expect("activations end with the logits");
        let right = (0..batch.len())
            .filter(|&k| fedkit_core::argmax(&l.values[k * l.dim..(k + 1) * l.dim]) as u32 == batch.labels()[k])
            .count();
        acc.push(right as f64 / batch.len() as f64);
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let curves: Vec<crate::plot::Curve> = layers
        .iter()
        .enumerate()
        .map(|(j, name)| crate::plot::Curve {
            label: name.clone(),
            points: rounds.iter().zip(&zeros).map(|(&r, z)| (r as f64, z[j], 0.0)).collect(),
        })
        .collect();
    for ext in ["png", "svg"] {
        crate::plot::write(
            &out.join(format!("sparsity.{ext}")),
            &curves,
            "Share of zero activations",
            "round",
            "share of zeros",
        )?;
    }
    let report = json!({"analysis": "sparsity", "run": a.run.display().to_string(), "samples": batch.len(), "seed": a.seed,
        "rounds": rounds, "layers": layers, "zero_share": zeros, "dead_share": dead, "probe_accuracy": acc});
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut md = format!(
        "# Activation sparsity of {}\n\nShare of exactly-zero activations per layer on {} test samples (dead units in \
         brackets: zero on every sample).\n\n| round | probe accuracy | {} |\n|---|---|{}\n",
        a.run.display(),
        batch.len(),
        layers.join(" | "),
        "---|".repeat(layers.len())
    );
    for (i, r) in rounds.iter().enumerate() {
        let cells: Vec<String> = zeros[i].iter().zip(&dead[i]).map(|(z, d)| format!("{z:.3} ({d:.3})")).collect();
        md.push_str(&format!("| {r} | {:.3} | {} |\n", acc[i], cells.join(" | ")));
    }
    md.push_str("\n![share of zero activations](sparsity.png)\n");
    std::fs::write(out.join("report.md"), md).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn linear_regions(a: &RegionArgs) -> Result<()> {
    use fedkit_methods::analysis::linear_regions::ReluMlp;
    if a.lines == 0 {
        bail!("--lines must be at least 1");
    }
    let out = a.out.clone().unwrap_or_else(|| a.run.join("analyze-linear-regions"));
    let engine = rebuilt(&a.run)?;
    let rounds = model_store::stored_rounds(&a.run);
    if rounds.is_empty() {
        bail!("{}: the run kept no models (set [output] keep_models = \"every:k\" and rerun)", a.run.display());
    }
    let test = engine.test.without_transforms();
    if test.len() < 2 {
        bail!("{}: linear regions need at least 2 test samples", a.run.display());
    }
    let mut rng = RngStream::derive(a.seed, "analyze.linear_regions", 0, 0);
    let ends: Vec<(Vec<f64>, Vec<f64>)> = (0..a.lines)
        .map(|_| {
            let p = rng.choose(test.len(), 2);
            let f = |i: usize| test.data.features(test.idx[i] as usize).iter().map(|&v| v as f64).collect::<Vec<f64>>();
            (f(p[0]), f(p[1]))
        })
        .collect();
    let layout = engine.global.layout().clone();
    let (mut mean, mut spread, mut per_line) = (Vec::new(), Vec::new(), Vec::new());
    for &r in &rounds {
        let net = ReluMlp::from_params(&model_store::read_global(&a.run, r, &layout)?).with_context(|| {
            format!(
                "{} ([model] {})",
                a.run.display(),
                engine.cfg.model.get("use").map_or("?".into(), |v| v.to_string())
            )
        })?;
        if net.inputs() != ends[0].0.len() {
            bail!("the model reads {} inputs and the test samples have {}", net.inputs(), ends[0].0.len());
        }
        let counts: Vec<f64> = ends.iter().map(|(x, y)| net.regions_on_segment(x, y) as f64).collect();
        let (m, s) = mean_std(&counts);
        eprintln!("round {r}: {m:.1} regions a line");
        mean.push(m);
        spread.push(s);
        per_line.push(counts);
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let curve = crate::plot::Curve {
        label: "regions a line (mean, band: std over lines)".into(),
        points: rounds.iter().zip(mean.iter().zip(&spread)).map(|(&r, (&m, &s))| (r as f64, m, s)).collect(),
    };
    for ext in ["png", "svg"] {
        crate::plot::write(
            &out.join(format!("regions.{ext}")),
            std::slice::from_ref(&curve),
            "Linear regions along lines between test samples",
            "round",
            "regions",
        )?;
    }
    let report = json!({"analysis": "linear_regions", "run": a.run.display().to_string(), "lines": a.lines, "seed": a.seed,
        "rounds": rounds, "regions_mean": mean, "regions_std": spread, "regions": per_line});
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut md = format!(
        "# Linear regions of {}\n\nExact counts along {} lines, each between two test samples (seed {}).\n\n| round | regions a line |\n|---|---|\n",
        a.run.display(),
        a.lines,
        a.seed
    );
    for (i, r) in rounds.iter().enumerate() {
        md.push_str(&format!("| {r} | {:.1} ± {:.1} |\n", mean[i], spread[i]));
    }
    md.push_str("\n![regions](regions.png)\n");
    std::fs::write(out.join("report.md"), md).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
