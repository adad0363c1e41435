//! `fedkit`: run federated-learning experiments from one config file.

mod analyze;
mod attack;
mod bench;
mod catalog;
mod compare;
mod demo;
mod export;
mod fairness;
mod heatmap;
mod html;
mod matrix;
mod model;
mod plot;
mod png_out;
mod privacy;
mod progress;
mod report;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fedkit_engine::{RunConfig, Summary};

#[derive(Parser)]
#[command(name = "fedkit", version, about = "Federated learning: every method composes in one config file.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment. Without CONFIG: a demo on the embedded synthetic data (FedAvg vs FedProx).
    Run {
        /// The TOML config (see `configs/`).
        config: Option<PathBuf>,
        /// Override a config key, e.g. `--set algorithm.mu=0.1` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory (default: runs/<config>-<time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its last checkpoint (with `--rounds N` to
        /// extend a finished run).
        #[arg(long, conflicts_with_all = ["config", "sets", "out"])]
        resume: Option<PathBuf>,
        /// With --resume: the new total number of rounds.
        #[arg(long, requires = "resume")]
        rounds: Option<u32>,
        /// Stop after this round (the run can be continued with --resume).
        #[arg(long, value_name = "ROUND", value_parser = clap::value_parser!(u32).range(1..))]
        stop_after: Option<u32>,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Centralised training: CONFIG's model, data, loss and `[compress]` with one client that
    /// holds all the training data (each round is `client.epochs` epochs over it). It sets
    /// data.clients = 1 (IID), sampling.per_round = 1, algorithm = fedavg and aggregator = mean
    /// before the --set overrides
    Train {
        /// The TOML config.
        config: PathBuf,
        /// Override a config key (repeatable), as with `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory (default: runs/<config>-<time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run several methods on the same federation and write one comparison table.
    Compare {
        /// The TOML config every variant starts from.
        config: PathBuf,
        /// Algorithms to compare, comma-separated (each replaces the config's [algorithm]).
        #[arg(long, value_delimiter = ',')]
        algorithms: Vec<String>,
        /// A variant `LABEL=KEY=VALUE;KEY=VALUE` (repeatable), e.g.
        /// `prox1=algorithm.use=fedprox;algorithm.mu=1` or `sam=local.use=sam;local.rho=0.05`.
        #[arg(long = "variant", value_name = "LABEL=SETS")]
        variants: Vec<String>,
        /// Override a config key for every variant (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Output directory: one run directory per variant plus comparison.md / comparison.csv
        /// (default: runs/compare-<config>-<time>; rerunning into it resumes).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Report the test accuracy at these rounds.
        #[arg(long, value_delimiter = ',', default_value = "10,25,50")]
        at: Vec<u32>,
        /// Report the first round whose test accuracy reaches this value.
        #[arg(long)]
        target: Option<f64>,
        /// Also report the test accuracy averaged over the last K evaluations.
        #[arg(long, default_value_t = 0)]
        last: usize,
        /// Run every variant with this many seeds (seed, seed + 1, ...) and report mean ± std.
        #[arg(long, default_value_t = 1)]
        seeds: u32,
        /// The headline metric of the @round, final, best and mean-last columns.
        #[arg(long, default_value = "test_acc")]
        metric: String,
        /// More columns: metrics' last recorded values, comma-separated.
        #[arg(long, value_delimiter = ',')]
        extra: Vec<String>,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Tune hyperparameters on a grid, selecting on a validation split (never the test set).
    Sweep {
        /// The TOML config every point starts from.
        config: PathBuf,
        /// The grid: `KEY=V1,V2;KEY2=V3,V4` (the cartesian product of the values).
        #[arg(long)]
        grid: String,
        /// Override a config key for every point (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Seeds per point (seed, seed + 1, ...): the selection uses their mean.
        #[arg(long, default_value_t = 1)]
        seeds: u32,
        /// How the best point is chosen.
        #[arg(long, value_enum, default_value_t = sweep::Select::Validation)]
        select: sweep::Select,
        /// Average the validation (and test) accuracy over this many last evaluations.
        #[arg(long, default_value_t = 3)]
        last: usize,
        /// The test metric reported beside the selection (never used to select).
        #[arg(long, default_value = "test_acc")]
        report: String,
        /// Output directory (default: runs/sweep-<config>-<time>; rerunning into it resumes).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run every attack against every defence (and algorithm) and write the matrix with heat maps.
    Matrix {
        /// The TOML config every cell starts from (its `[threat]` says who attacks).
        config: PathBuf,
        /// Attack presets, comma-separated: none, backdoor, blind, model_replacement,
        /// constrain_and_scale, neurotoxin, dba, edge_case, label_flip, sign_flip, gaussian, alie,
        /// ipm, min_max, min_sum, fang.
        #[arg(long, value_delimiter = ',')]
        attacks: Vec<String>,
        /// A custom attack `LABEL=[{ use = "...", on = "malicious", ... }, ...]` (repeatable).
        #[arg(long = "attack", value_name = "LABEL=PIPELINE")]
        custom_attacks: Vec<String>,
        /// Defences (aggregators), comma-separated, e.g. mean,krum,flame.
        #[arg(long, value_delimiter = ',')]
        defenses: Vec<String>,
        /// A custom defence `LABEL=KEY=VALUE;KEY=VALUE` (repeatable), e.g.
        /// `krum2=aggregator.use=krum;aggregator.f=2`.
        #[arg(long = "defense", value_name = "LABEL=SETS")]
        custom_defenses: Vec<String>,
        /// Algorithms, comma-separated (default: the config's).
        #[arg(long, value_delimiter = ',')]
        algorithms: Vec<String>,
        /// Override a config key for every cell (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Seeds per cell (seed, seed + 1, ...): mean ± std in every cell.
        #[arg(long, default_value_t = 1)]
        seeds: u32,
        /// Output directory (default: runs/matrix-<config>-<time>; rerunning into it resumes).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Certify a finished run's final model by parameter smoothing (CRFL): certified accuracy
    /// against the radius, into RUN/certify.csv and RUN/certify.md.
    Certify {
        /// The run directory (its checkpoint holds the final model).
        run: PathBuf,
        /// Standard deviation of the parameter noise (the smoothing level).
        #[arg(long)]
        sigma: f64,
        /// Noisy models drawn (votes per test input).
        #[arg(long, default_value_t = 100)]
        samples: usize,
        /// Confidence: the certificate holds with probability 1 - alpha.
        #[arg(long, default_value_t = 0.001)]
        alpha: f64,
        /// Certify at most this many test inputs (the first ones).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Radii to report (default: 0, 0.25 sigma, ..., 2 sigma).
        #[arg(long, value_delimiter = ',')]
        radii: Vec<f64>,
    },
    /// Privacy attacks on a finished run's kept models and updates (report.json, report.md,
    /// pictures); `fedkit explain invert_gradients` documents each.
    Attack {
        #[command(subcommand)]
        command: attack::AttackCommand,
    },
    /// Analyses of a finished run's kept models (report.json, report.md, pictures): `cka`
    /// compares representations across runs or clients, `hessian` measures the loss curvature,
    /// `sparsity` the share of zero activations over training, `linear_regions` an mlp's
    /// linear regions along lines.
    Analyze {
        #[command(subcommand)]
        command: analyze::AnalyzeCommand,
    },
    /// List every registered method, model, dataset and partitioner.
    List {
        /// One markdown line per kind (the README's "What exists" block is this output).
        #[arg(long)]
        markdown: bool,
    },
    /// Show a method's documentation: paper, update rule, parameters, example config.
    Explain {
        /// A name from `fedkit list`.
        name: String,
    },
    /// Inspect the federation a config builds.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Export a run's model (safetensors, PyTorch names and shapes; see docs/models.md).
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Summarise run directories in one table (final/best accuracy, loss, bytes, rounds to target).
    Report {
        /// Run directories (each holds a metrics.jsonl), or folders of runs (compare, sweep and
        /// matrix outputs: their runs, up to two levels down).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Report the first round whose test accuracy reaches this value.
        #[arg(long)]
        target: Option<f64>,
        /// Average the test accuracy over this many last evaluations.
        #[arg(long, default_value_t = 10)]
        last: usize,
        /// Also write one self-contained HTML page (curves, configs side by side, timings,
        /// provenance) to this file.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Collaborative fairness (RFFL): the Pearson correlation of every client's standalone
    /// local accuracy (a run of algorithm `local`) and its final local accuracy in RUN.
    Fairness {
        /// The federated run (with `[eval] clients = true`).
        run: PathBuf,
        /// The standalone run of the same federation (`algorithm.use = "local"`).
        #[arg(long)]
        standalone: PathBuf,
        /// Clients to leave out, comma-separated (e.g. the free riders).
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<u64>,
    },
    /// Draw one curve per run (mean and a band over seeds) of a metric against rounds, bytes
    /// sent or seconds, as PNG or SVG.
    Plot(plot::PlotArgs),
    /// Differential-privacy accounting: epsilon of a mechanism, or the noise for a target epsilon.
    Privacy {
        #[command(subcommand)]
        command: privacy::PrivacyCommand,
    },
    /// Measure local-training throughput and round rate (see docs/performance.md).
    Bench {
        /// Shorter measurement (smoke test).
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write a run's model as a safetensors file for PyTorch or NumPy.
    Export {
        /// The run directory.
        run: PathBuf,
        /// That round's global model from the run's model store ([output] keep_models);
        /// default: the final model.
        #[arg(long)]
        round: Option<u32>,
        /// With --round: that client's update of the round ([output] keep_clients).
        #[arg(long)]
        client: Option<u32>,
        /// The file to write (.safetensors).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Per-client sample counts and label histograms.
    Stats {
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Write the federation (features, labels, client index lists) and the initial model as
    /// plain files for other frameworks (see bench/peers/).
    Export {
        config: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    fedkit_engine::run::set_build_commit(env!("FEDKIT_GIT_COMMIT"));
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Run { config: None, sets, out, resume: None, quiet, .. } => demo::run(&sets, out, quiet),
        Command::Run { config: Some(config), sets, out, resume: None, stop_after, quiet, .. } => {
            let cfg = RunConfig::load(Some(&config), &sets)?;
            let dir = out.unwrap_or_else(|| default_out(&config));
            let s = run_config(cfg, &dir, stop_after, quiet)?;
            print_summary(&s);
            Ok(())
        }
        Command::Train { config, sets, out, quiet } => {
            let cfg = RunConfig::load(Some(&config), &centralised(sets))?;
            let dir = out.unwrap_or_else(|| default_out(&config));
            let s = run_config(cfg, &dir, None, quiet)?;
            print_summary(&s);
            Ok(())
        }
        Command::Run { resume: Some(dir), rounds, stop_after, quiet, .. } => {
            let (mut engine, mut out) = fedkit_engine::resume(&dir, rounds)?;
            eprintln!("resuming {} after round {}", dir.display(), engine.round);
            let s = drive(&mut engine, &mut out, stop_after, quiet, "")?;
            print_summary(&s);
            Ok(())
        }
        Command::Compare { config, algorithms, variants, sets, out, at, target, last, seeds, metric, extra, quiet } => {
            let vs = compare::variants(&algorithms, &variants)?;
            let out = out.unwrap_or_else(|| compare::default_out(&config));
            let columns = compare::Columns { at, target, last, metric, extra };
            let table = compare::run(&config, &sets, &vs, seeds, &out, &columns, quiet)?;
            print!("{table}");
            println!("written: {0}/comparison.md, {0}/comparison.csv", out.display());
            Ok(())
        }
        Command::Sweep { config, grid, sets, seeds, select, last, report, out, quiet } => {
            let out = out.unwrap_or_else(|| sweep::default_out(&config));
            let table = sweep::run(&config, &sets, &grid, seeds, select, (last, &report), &out, quiet)?;
            print!("{table}");
            println!("written: {0}/sweep.md, {0}/sweep.csv, {0}/best.toml", out.display());
            Ok(())
        }
        Command::Matrix {
            config,
            attacks,
            custom_attacks,
            defenses,
            custom_defenses,
            algorithms,
            sets,
            seeds,
            out,
            quiet,
        } => {
            let base = RunConfig::load(Some(&config), &sets)?;
            let a = matrix::attacks(&attacks, &custom_attacks, base.sampling.per_round)?;
            let d = matrix::defenses(&defenses, &custom_defenses)?;
            let algorithms: Vec<String> =
                algorithms.iter().map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
            let out = out.unwrap_or_else(|| matrix::default_out(&config));
            let md = matrix::run(&config, &sets, &a, &d, &algorithms, seeds, &out, quiet)?;
            print!("{md}");
            println!("written: {0}/matrix.md, {0}/matrix.csv, {0}/heat_*.svg, {0}/heat_*.png", out.display());
            Ok(())
        }
        Command::Model { command: ModelCommand::Export { run, round, client, out } } => {
            println!("{}", model::export(&run, round, client, &out)?);
            Ok(())
        }
        Command::Attack { command } => attack::run(command),
        Command::Analyze { command } => analyze::run(command),
        Command::Certify { run, sigma, samples, alpha, limit, radii } => {
            let (mut engine, _out) = fedkit_engine::resume(&run, None)?;
            let s = fedkit_engine::certify::Smoothing { sigma, samples, alpha, limit };
            eprintln!(
                "certifying {} after round {}: {samples} noisy models, sigma {sigma}, {} test inputs",
                run.display(),
                engine.round,
                engine.test.len().min(limit)
            );
            let cs = engine.certify(&s)?;
            let radii = if radii.is_empty() { (0..=8).map(|k| k as f64 * 0.25 * sigma).collect() } else { radii };
            let acc = fedkit_engine::certify::certified_accuracy(&cs, &radii);
            let abstained = cs.iter().filter(|c| c.class.is_none()).count() as f64 / cs.len().max(1) as f64;
            let mut md = format!(
                "Parameter smoothing of {} (round {}): sigma {sigma}, {samples} samples, alpha {alpha}, {} test inputs, {:.1}% abstained\n\n| radius | certified_acc |\n|---|---|\n",
                run.display(),
                engine.round,
                cs.len(),
                100.0 * abstained
            );
            let mut csv = String::from("radius,certified_acc\n");
            for (r, a) in radii.iter().zip(&acc) {
                md += &format!("| {r:.5} | {a:.4} |\n");
                csv += &format!("{r},{a:.6}\n");
            }
            for (name, text) in [("certify.md", &md), ("certify.csv", &csv)] {
                let p = run.join(name);
                std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
            }
            print!("{md}");
            Ok(())
        }
        Command::List { markdown } => {
            print!("{}", if markdown { catalog::markdown() } else { catalog::list() });
            Ok(())
        }
        Command::Explain { name } => {
            print!("{}", catalog::explain(&name)?);
            Ok(())
        }
        Command::Data { command: DataCommand::Stats { config, sets } } => {
            let cfg = RunConfig::load(config.as_deref(), &sets)?;
            let fed = fedkit_data::build_federation(&cfg.data, cfg.seed).map_err(|e| e.in_file(&cfg.source))?;
            print!("{}", fedkit_data::stats_table(&fed));
            Ok(())
        }
        Command::Data { command: DataCommand::Export { config, sets, out } } => {
            let cfg = RunConfig::load(config.as_deref(), &sets)?;
            println!("{}", export::export(cfg, &out)?);
            Ok(())
        }
        Command::Report { dirs, target, last, html: page } => {
            let dirs = report::expand_runs(&dirs)?;
            print!("{}", report::table(&dirs, target, last)?);
            if let Some(page) = page {
                eprintln!("{}", html::write(&dirs, &page, target, last)?);
            }
            Ok(())
        }
        Command::Fairness { run, standalone, exclude } => {
            print!("{}", fairness::report(&run, &standalone, &exclude)?);
            Ok(())
        }
        Command::Bench { quick } => bench::run(quick),
        Command::Privacy { command } => privacy::run(command),
        Command::Plot(a) => plot::run(a),
    }
}

/// Build and drive one run in `dir`.
pub fn run_config(cfg: RunConfig, dir: &Path, stop_after: Option<u32>, quiet: bool) -> Result<Summary> {
    let label = cfg.algorithm.get("use").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let (mut engine, mut out) = fedkit_engine::start(cfg, dir)?;
    if !quiet {
        progress::note(&format!(
            "run {}: {} clients, {} per round, {} rounds, {} worker thread(s)",
            dir.display(),
            engine.population(),
            engine.cfg.sampling.per_round.min(engine.population()),
            engine.cfg.rounds,
            engine.threads()
        ));
    }
    drive(&mut engine, &mut out, stop_after, quiet, &label)
}

fn drive(
    engine: &mut fedkit_engine::Engine,
    out: &mut fedkit_engine::RunDir,
    stop_after: Option<u32>,
    quiet: bool,
    label: &str,
) -> Result<Summary> {
    let mut bar = progress::Bar::new(quiet, label);
    let s = fedkit_engine::drive(engine, out, stop_after, &mut |p| bar.update(&p));
    let dir = out.dir.display();
    let s = s.with_context(|| {
        format!(
            "run in {dir} stopped in round {}: the metrics of completed rounds are in {dir}/metrics.jsonl; \
             `fedkit run --resume {dir}` continues from the last checkpoint",
            engine.round + 1
        )
    })?;
    bar.finish();
    Ok(s)
}

/// Peak resident memory of this process in MB (Linux: VmHWM in /proc/self/status).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn print_summary(s: &Summary) {
    let get = |k: &str| s.last.get(k).map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    let rss = peak_rss_mb().map(|m| format!("; peak RSS {m:.0} MB")).unwrap_or_default();
    println!(
        "done: {} rounds in {:.1}s{rss}; test_acc {} (best {}), test_loss {}, train_loss {}\nrun directory: {}",
        s.rounds,
        s.seconds,
        get("test_acc"),
        s.best_test_acc.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
        get("test_loss"),
        get("train_loss"),
        s.dir.display()
    );
}

/// `fedkit train`'s overrides before the user's: one client holding every training sample,
/// drawn every round, with FedAvg (one client: plain training).
fn centralised(sets: Vec<String>) -> Vec<String> {
    let mut all: Vec<String> = [
        "data.clients=1",
        "data.partition={use=\"iid\"}",
        "sampling.per_round=1",
        "sampling.scheme=\"uniform\"",
        "sampling.drop_percent=0.0",
        "algorithm={use=\"fedavg\"}",
        "aggregator={use=\"mean\"}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(sets);
    all
}

/// `runs/<config stem>-<UTC time>`, made unique.
pub fn default_out(config: &Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    unique_dir(&format!("runs/{stem}-{}", utc_stamp()))
}

fn unique_dir(base: &str) -> PathBuf {
    let mut p = PathBuf::from(base);
    let mut i = 2;
    while p.exists() {
        p = PathBuf::from(format!("{base}-{i}"));
        i += 1;
    }
    p
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub fn utc_stamp() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
