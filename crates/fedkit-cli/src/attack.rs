//! `fedkit attack NAME --run DIR ...`: privacy attacks on what a real run sent. The run must keep
//! its models (`[output] keep_models = "every:1"`, `keep_clients = [ids]`); the attack rebuilds
//! the run's federation from `resolved.toml` to score itself against the client's true data,
//! which the attacker never reads. Each writes `report.json`, `report.md` and its pictures into
//! `--out` (default `RUN/attack-<name>-r<round>-c<client>`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::compare::mean_std;
use anyhow::{Context, Result, bail};
use fedkit_core::{Batch, ClientData, RngStream};
use fedkit_engine::{Engine, model_store};
use fedkit_methods::privacy_attacks::film::{EMBEDDING, bag_of_words, beam_search};
use fedkit_methods::privacy_attacks::image_metrics::{image_shape, match_by_mse, mse, psnr, ssim};
use fedkit_methods::privacy_attacks::invert_gradients::{
    InvertGradients, LabelSource, Observed, analytic_first_layer, recover_labels,
};
use fedkit_methods::privacy_attacks::membership::{auc, lira_online, logit_confidence, roc, tpr_at};
use fedkit_methods::privacy_attacks::text_metrics::{bag_precision_recall, rouge_l, rouge_n};

/// The attacks.
#[derive(clap::Subcommand)]
pub enum AttackCommand {
    /// Reconstruct a client's training images from the update it sent (invert_gradients:
    /// cosine gradient matching with a TV prior, iDLG labels, analytic FC inversion).
    #[command(alias = "invert_gradients")]
    Invert(InvertArgs),
    /// Replay an insider's GAN (gan_leakage: a generator trained against the shared model to
    /// produce a class the insider does not hold) from the run's stored global models.
    #[command(alias = "gan_leakage")]
    Gan(GanArgs),
    /// Recover a client's images from their InstaHide or Mixup encodings alone, without the
    /// key (instahide_attack: Carlini et al.'s attack, scaled to 2 cores), and with the mixing
    /// known; against the mean-image baseline.
    #[command(alias = "instahide_attack")]
    Instahide(InstahideArgs),
    /// Recover the text of a client's batch from its language-model update (film: the bag of
    /// words from the embedding rows that moved, ordered by beam search under the model).
    Film(FilmArgs),
    /// Membership inference on a run's final model: the loss threshold and LiRA with shadow
    /// models trained by the run's own federated training (ROC, AUC, TPR at low FPR).
    Membership(MembershipArgs),
    /// A lower bound on the run's epsilon from its canary clients (audit: one-run auditing with
    /// the `audit_canary` stage), beside the accountant's epsilon.
    Audit(AuditArgs),
}

/// `fedkit attack gan`.
#[derive(clap::Args)]
pub struct GanArgs {
    /// The run directory (a `gan_leakage` stage on its insider, `[output] keep_models =
    /// "every:1"` and the insider in `keep_clients`).
    #[arg(long)]
    run: PathBuf,
    /// The insider (default: the run's first malicious client).
    #[arg(long)]
    client: Option<u32>,
    /// Generated samples shown and scored per round.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Show every k-th round the insider took part in (default: about 10 rows); the first and
    /// the last are always shown.
    #[arg(long)]
    every: Option<usize>,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `fedkit attack instahide`.
#[derive(clap::Args)]
pub struct InstahideArgs {
    /// The run directory (an `instahide` stage in its `[[pipeline]]`; no stored models needed).
    #[arg(long)]
    run: PathBuf,
    /// The client whose images are encoded.
    #[arg(long, default_value_t = 0)]
    client: u32,
    /// Private images: the client's first N.
    #[arg(long, default_value_t = 50)]
    images: usize,
    /// Epochs of encodings: each encodes every image once, in mini-batches of the run's
    /// `client.batch_size` drawn from these N images only (the client's stage would mix in any of
    /// its samples; here N is small and known, as in the InstaHide challenge).
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Restarts of the key-less attack (the one explaining the encodings best is kept).
    #[arg(long, default_value_t = 2)]
    restarts: usize,
    /// Alternations (assignment, then reconstruction) per restart.
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Output directory (default RUN/attack-instahide-c<client>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `fedkit attack audit`.
#[derive(clap::Args)]
pub struct AuditArgs {
    /// The finished run directory (with an `audit_canary` stage on its `[threat]` clients).
    #[arg(long)]
    run: PathBuf,
    /// Confidence of the bound (split over the numbers of guesses).
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Numbers of guesses k to try, comma-separated (default: m/10, m/4, m/2 and m).
    #[arg(long, value_delimiter = ',')]
    guesses: Vec<usize>,
    /// How canaries are scored: `final` (the final model's movement along each direction) or
    /// `rounds` (every intermediate model: a per-round likelihood ratio; needs `[output]
    /// keep_models = "every:1"`).
    #[arg(long, value_enum, default_value_t = AuditScore::Final)]
    score: AuditScore,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What `fedkit attack audit` scores canaries by.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum AuditScore {
    Final,
    Rounds,
}

/// `fedkit attack membership`.
#[derive(clap::Args)]
pub struct MembershipArgs {
    /// The finished run directory (its checkpoint holds the attacked model).
    #[arg(long)]
    run: PathBuf,
    /// Shadow models (each a full re-run of the run's training on a random half of the
    /// population).
    #[arg(long, default_value_t = 16)]
    shadows: usize,
    /// Score at most this many members and as many non-members (default: every member).
    #[arg(long)]
    samples: Option<usize>,
    /// Seed of the population's halves (default: the run's seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Score each sample on the model of the client that holds it (a non-member: the client it
    /// is given to in the population): the algorithm's personalised model (local, pfedme,
    /// fedfomo, perfedavg, ...; the global model where it has none), in the run and its shadows.
    #[arg(long)]
    personalised: bool,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Which kept update an attack reads.
#[derive(clap::Args)]
pub struct UpdateArgs {
    /// The run directory (with its model store).
    #[arg(long)]
    run: PathBuf,
    /// The round whose update is attacked (1 = the first round).
    #[arg(long)]
    round: u32,
    /// The client whose update is attacked.
    #[arg(long)]
    client: Option<u32>,
}

impl UpdateArgs {
    /// `--client`, which the attack needs.
    fn client(&self) -> Result<u32> {
        self.client
            .context("--client C is needed: the client whose kept update is attacked (or, for invert, --aggregate)")
    }
}

/// `fedkit attack film`.
#[derive(clap::Args)]
pub struct FilmArgs {
    #[command(flatten)]
    at: UpdateArgs,
    /// Beam width of the search.
    #[arg(long, default_value_t = 16)]
    beam: usize,
    /// No beam repeats an n-gram of this length (0: repeats allowed).
    #[arg(long, default_value_t = 2)]
    no_repeat: usize,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `fedkit attack invert`.
#[derive(clap::Args)]
pub struct InvertArgs {
    #[command(flatten)]
    at: UpdateArgs,
    /// Dummy images to fit (the attacker's guess of the samples behind the update); default:
    /// the client's number of samples.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Optimisation steps per restart.
    #[arg(long, default_value_t = 10000)]
    iterations: usize,
    /// Adam's step size on the signed gradient (the default chosen on validation clients).
    #[arg(long, default_value_t = 0.03)]
    lr: f64,
    /// Weight alpha of the total-variation prior.
    #[arg(long, default_value_t = 3e-3)]
    tv: f64,
    /// Random starts; the one with the lowest final matching loss is reported.
    #[arg(long, default_value_t = 4)]
    restarts: usize,
    /// Step h (relative to the parameters' norm) of the central difference that gives the
    /// gradient of the gradient.
    #[arg(long, default_value_t = 1e-5)]
    fd_step: f64,
    /// Where the dummy labels come from: "idlg" (recovered from the update) or "known".
    #[arg(long, default_value = "idlg", value_parser = ["idlg", "known"])]
    labels: String,
    /// Seed of the random starts (default: the run's seed).
    #[arg(long)]
    seed: Option<u64>,
    /// The unrolled attack: simulate the client's local steps (plain SGD) on the dummy batch
    /// instead of matching the update as one gradient.
    #[arg(long)]
    unrolled: bool,
    /// Attack the round's aggregate (the global model's change: all the server sees under
    /// secure aggregation) instead of one client's update; every client must have taken part.
    #[arg(long, conflicts_with = "client")]
    aggregate: bool,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Dispatch one attack.
pub fn run(cmd: AttackCommand) -> Result<()> {
    match cmd {
        AttackCommand::Invert(a) => invert(&a),
        AttackCommand::Film(a) => film(&a),
        AttackCommand::Gan(a) => gan(&a),
        AttackCommand::Instahide(a) => instahide(&a),
        AttackCommand::Membership(a) => membership(&a),
        AttackCommand::Audit(a) => audit(&a),
    }
}

/// What an attack on client `client`'s update of `round` works with: the rebuilt run (its
/// federation and architecture), the global model the client started from, the update it sent,
/// and, to score the attack only, the client's data and the number of local steps it took.
struct Victim {
    engine: Engine,
    global: fedkit_core::Params,
    update: fedkit_core::Params,
    /// The client's samples (without its feature transforms): all of them are behind the update.
    truth: Batch,
    /// The dataset ids of the samples in `truth`.
    ids: Vec<u32>,
    steps: usize,
}

/// The run in `run` rebuilt from its `resolved.toml` (after `check` on its config), for attacks
/// that start from the global model: refuses IFCA and `[downlink]` compression, whose clients
/// start elsewhere, and does not read the starting point (`init_from`, `[model] init`) again,
/// since the store holds the models.
pub(crate) fn rebuilt(
    run: &Path,
    check: impl FnOnce(&fedkit_engine::config::RunConfig) -> Result<()>,
) -> Result<Engine> {
    if !run.join("resolved.toml").is_file() {
        bail!("{}: not a fedkit run directory (no resolved.toml)", run.display());
    }
    let mut cfg = fedkit_engine::run::resolved_config(run)?;
    check(&cfg)?;
    if cfg.algorithm.get("use").and_then(|v| v.as_str()) == Some("ifca") {
        bail!(
            "ifca clients start from the cluster model they chose, not the global model; the attacks and analyses read only global starts"
        );
    }
    if cfg.downlink.kind != fedkit_engine::config::DownlinkKind::None {
        bail!(
            "with [downlink] compression clients start from their decoded copy of the global model, which the store does not keep"
        );
    }
    cfg.init_from = None;
    cfg.model.remove("init");
    Ok(Engine::new(cfg)?)
}

/// Load the [`Victim`] of `run`; the update must come from full-batch local training, so that
/// the client's samples are the ones behind it.
fn victim(run: &Path, round: u32, client: u32) -> Result<Victim> {
    let engine = rebuilt(run, |cfg| {
        if round == 0 || round > cfg.rounds {
            bail!(
                "--round {round}: the run has rounds 1..={} (round R's update starts from the global model of R - 1)",
                cfg.rounds
            );
        }
        Ok(())
    })?;
    if client as usize >= engine.population() {
        bail!("--client {client}: the run has clients 0..{}", engine.population());
    }
    let layout = engine.global.layout().clone();
    let global = model_store::read_global(run, round - 1, &layout)?;
    let update = model_store::read_update(run, client, round, &layout)?;
    let data = engine.fed.clients[client as usize].without_transforms();
    let (n, train) = (data.len(), &engine.cfg.client);
    if train.batch_size < n {
        bail!(
            "client {client}'s update of round {round} came from mini-batches of {} of its {n} samples, so which samples are behind it is not known; \
             the attack scores itself against them and needs full-batch local training (client.batch_size >= {n})",
            train.batch_size
        );
    }
    let steps = local_steps(&engine.cfg.client);
    let mut truth = Batch::default();
    truth.fill(&data, &(0..n).collect::<Vec<_>>(), &mut RngStream::new(0));
    let ids = data.idx.to_vec();
    Ok(Victim { engine, global, update, truth, ids, steps })
}

/// Local steps of a full-batch client: one per epoch (at most `max_steps`).
fn local_steps(train: &fedkit_core::LocalTrain) -> usize {
    if train.max_steps > 0 { train.max_steps.min(train.epochs) } else { train.epochs }
}

/// The [`Victim`] of `run`'s round-`round` aggregate, the global model's change: under FedAvg
/// with the mean and full-batch clients it is one FedSGD step (or the naive sum of local steps)
/// of the union of every client's samples, all of which must have taken part.
fn aggregate_victim(run: &Path, round: u32) -> Result<Victim> {
    let engine = rebuilt(run, |cfg| {
        if round == 0 || round > cfg.rounds {
            bail!("--round {round}: the run has rounds 1..={}", cfg.rounds);
        }
        let algorithm = cfg.algorithm.get("use").and_then(|v| v.as_str()).unwrap_or("fedavg");
        let aggregator = cfg.aggregator.get("use").and_then(|v| v.as_str()).unwrap_or("mean");
        if algorithm != "fedavg" || aggregator != "mean" {
            bail!(
                "--aggregate reads the global model's change as the clients' mean update: it needs algorithm \"fedavg\" with the \"mean\" aggregator (the run has `{algorithm}` with `{aggregator}`)"
            );
        }
        let stages: Vec<&str> = cfg.pipeline.iter().filter_map(|t| t.get("use").and_then(|v| v.as_str())).collect();
        if !stages.is_empty() {
            bail!(
                "--aggregate treats the global change as the plain mean of the clients' updates; the run's pipeline stages ({}) change it",
                stages.join(", ")
            );
        }
        if cfg.threat.has_attackers() || cfg.compress.is_some() {
            bail!(
                "--aggregate needs honest clients and an uncompressed model ([threat], [compress] change what is summed)"
            );
        }
        if let Some(u) = cfg.local.get("use").and_then(|v| v.as_str()).filter(|&u| u != "plain") {
            bail!("--aggregate reads a mean of plain SGD steps; the run's [local] step rule is `{u}`");
        }
        let t = &cfg.client;
        if t.optimizer != fedkit_core::optim::OptimizerKind::Sgd || t.momentum != 0.0 || t.weight_decay != 0.0 {
            bail!(
                "--aggregate reads a mean of plain SGD steps; the run's client uses {:?} with momentum {} and weight decay {}",
                t.optimizer,
                t.momentum,
                t.weight_decay
            );
        }
        if cfg.secure_aggregation.dp != fedkit_engine::config::DistributedDp::None {
            bail!("--aggregate: the run's distributed DP (secure_aggregation.dp) clips, scales and noises the sum");
        }
        Ok(())
    })?;
    if engine.global.layout().entries().iter().any(|e| e.kind == fedkit_core::ParamKind::Buffer) {
        bail!(
            "--aggregate: the model normalises each client's batch by its own statistics (batch norm), which the union batch does not reproduce"
        );
    }
    let population = engine.population();
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl"))
        .with_context(|| format!("cannot read {}", run.join("metrics.jsonl").display()))?;
    let record = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["round"].as_u64() == Some(round as u64))
        .with_context(|| format!("{} has no record of round {round}", run.display()))?;
    let took_part = record["accepted"].as_u64().or(record["participants"].as_u64()).unwrap_or(0);
    let summed = record["secagg_summed"].as_u64().unwrap_or(took_part);
    if took_part.min(summed) != population as u64 {
        bail!(
            "--aggregate needs every client in the round's sum (which samples are behind it is then known; sampling.per_round = the population, no dropouts); round {round} summed {} of {population}",
            took_part.min(summed)
        );
    }
    if record["stragglers"].as_u64().unwrap_or(0) > 0 {
        bail!("--aggregate: round {round} had stragglers, whose fewer local steps the attack does not know");
    }
    // Secure aggregation (and the unweighted mean) counts each update once: the global change is
    // then a step on the union only when every client holds as many samples.
    let uniform = engine.cfg.secure_aggregation.protocol != fedkit_engine::config::SecAggProtocol::None
        || engine.cfg.aggregator.get("weighted").and_then(|v| v.as_bool()) == Some(false);
    let sizes: Vec<usize> = engine.fed.clients.iter().map(|c| c.len()).collect();
    if uniform && sizes.iter().any(|&n| n != sizes[0]) {
        bail!(
            "--aggregate: the round's mean counts every client once (secure aggregation or weighted = false), which is a step on the union of their samples only when all hold as many; client sizes range {}..={}",
            sizes.iter().min().unwrap_or(&0),
            sizes.iter().max().unwrap_or(&0)
        );
    }
    let layout = engine.global.layout().clone();
    let global = model_store::read_global(run, round - 1, &layout)?;
    let update = model_store::read_global(run, round, &layout)?.sub(&global);
    let batch_size = engine.cfg.client.batch_size;
    let (mut truth, mut ids) = (Batch::default(), Vec::new());
    for (c, data) in engine.fed.clients.iter().enumerate() {
        let data = data.without_transforms();
        if batch_size < data.len() {
            bail!(
                "client {c} trained on mini-batches of {batch_size} of its {} samples: --aggregate needs full-batch clients",
                data.len()
            );
        }
        let mut b = Batch::default();
        b.fill(&data, &(0..data.len()).collect::<Vec<_>>(), &mut RngStream::new(0));
        truth.x.extend_from_slice(&b.x);
        truth.y.extend_from_slice(&b.y);
        truth.feature_shape = b.feature_shape;
        truth.classes = b.classes;
        ids.extend_from_slice(&data.idx);
    }
    let steps = local_steps(&engine.cfg.client);
    Ok(Victim { engine, global, update, truth, ids, steps })
}

fn invert(a: &InvertArgs) -> Result<()> {
    let who = if a.aggregate { None } else { Some(a.at.client()?) };
    let Victim { engine, global, update, truth, ids, steps } = match who {
        Some(c) => victim(&a.at.run, a.at.round, c)?,
        None => aggregate_victim(&a.at.run, a.at.round)?,
    };
    let cfg = &engine.cfg;
    let train = &engine.fed.train;
    let whose = who.map_or("the aggregate".to_string(), |c| format!("client {c}'s update"));
    let n = truth.len();
    if train.positions() > 0 {
        bail!(
            "invert reconstructs images with one label each; {} is sequence data (see `fedkit attack film`)",
            train.name
        );
    }
    let samples = a.batch_size.unwrap_or(n);
    if n == 0 {
        bail!("no samples are behind {whose}");
    }
    if samples == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(l) = cfg.loss.get("use").and_then(|v| v.as_str()).filter(|&l| l != "cross_entropy") {
        bail!("invert matches cross-entropy gradients; the run trains with the `{l}` loss");
    }
    if a.unrolled && who.is_none() && steps > 1 {
        bail!(
            "--unrolled --aggregate: the aggregate is the mean of each client's own {steps} local steps, not {steps} steps on the union; attack it naively"
        );
    }
    let unroll = if a.unrolled {
        let algorithm = cfg.algorithm.get("use").and_then(|v| v.as_str()).unwrap_or("fedavg");
        if !["fedavg", "fedavgm", "fedopt", "fedadam", "fedyogi", "fedadagrad"].contains(&algorithm) {
            bail!(
                "--unrolled simulates plain local SGD; the `{algorithm}` algorithm changes the local steps (use the naive attack)"
            );
        }
        if cfg.pipeline.iter().any(|t| t.get("use").and_then(|v| v.as_str()) == Some("dp_sgd")) {
            bail!("--unrolled simulates plain local SGD; dp_sgd clips and noises every step");
        }
        if cfg.sampling.drop_percent > 0.0 {
            bail!("--unrolled needs the number of local steps; stragglers (sampling.drop_percent) may take fewer");
        }
        let t = &cfg.client;
        if t.optimizer != fedkit_core::optim::OptimizerKind::Sgd || t.momentum != 0.0 || t.weight_decay != 0.0 {
            bail!(
                "--unrolled simulates plain SGD local steps; the run's client uses {:?} with momentum {} and weight decay {}",
                t.optimizer,
                t.momentum,
                t.weight_decay
            );
        }
        if let Some(u) = cfg.local.get("use").and_then(|v| v.as_str()).filter(|&u| u != "plain") {
            bail!("--unrolled simulates plain SGD local steps; the run's [local] step rule is `{u}`");
        }
        Some((steps, t.lr))
    } else {
        None
    };
    let attack = InvertGradients {
        unroll,
        iterations: a.iterations,
        lr: a.lr,
        tv: a.tv,
        restarts: a.restarts,
        fd_step: a.fd_step,
        labels: if a.labels == "known" { LabelSource::Known } else { LabelSource::Idlg },
        range: pixel_range(&engine),
    };
    attack.validate()?;
    let labels = match attack.labels {
        LabelSource::Known if samples != n => {
            bail!("--labels known gives the {n} true labels behind {whose}; --batch-size {samples} differs")
        }
        LabelSource::Known => truth.y.clone(),
        LabelSource::Idlg => recover_labels(&update, samples)?,
    };
    let shape = train.feature_shape.clone();
    let d: usize = shape.iter().product();
    let obs = Observed { global: &global, update: &update, samples, shape: shape.clone(), classes: train.classes };
    let seed = a.seed.unwrap_or(cfg.seed);
    let mut rng = RngStream::derive(seed, "invert_gradients", a.at.round as u64, who.map_or(u64::MAX, u64::from));
    let mut model = engine.architecture();
    eprintln!(
        "inverting {whose} of round {} ({n} samples, {steps} local step{}): {} iterations x {} restart(s)",
        a.at.round,
        if steps == 1 { "" } else { "s" },
        a.iterations,
        a.restarts
    );
    let t0 = Instant::now();
    let rec = attack.invert(model.as_mut(), &obs, &labels, &mut rng)?;
    let seconds = t0.elapsed().as_secs_f64();
    let analytic = if n == 1 { analytic_first_layer(&update, d) } else { None };

    let peak = (attack.range.1 - attack.range.0) as f64;
    let img = image_shape(&shape);
    let of = match_by_mse(&truth.x, &rec.x, d);
    let mean_image = train_mean(&engine);
    let row = |i: usize| &truth.x[i * d..(i + 1) * d];
    // SSIM compares local image structure: none for data that is not an image.
    let similarity = |a: &[f32], b: &[f32]| (img[1] > 1 && img[2] > 1).then(|| ssim(a, b, img, peak));
    let per_image: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let r = &rec.x[of[i] * d..(of[i] + 1) * d];
            serde_json::json!({
                "sample": ids[i], "label": truth.y[i], "matched": of[i],
                "mse": mse(row(i), r), "psnr": finite(psnr(row(i), r, peak)), "ssim": similarity(row(i), r),
                "baseline_psnr": finite(psnr(row(i), &mean_image, peak)), "baseline_ssim": similarity(row(i), &mean_image),
            })
        })
        .collect();
    let mean_of = |key: &str| -> f64 {
        per_image.iter().filter_map(|v| v[key].as_f64()).sum::<f64>() / per_image.len().max(1) as f64
    };
    let mut true_sorted = truth.y.clone();
    true_sorted.sort_unstable();
    let mut got_sorted = labels.clone();
    got_sorted.sort_unstable();
    let label_acc = multiset_overlap(&true_sorted, &got_sorted) as f64 / n.max(samples) as f64;
    let analytic_psnr = analytic.as_ref().map(|x| finite(psnr(row(0), x, peak)));
    let setting = match (steps, a.unrolled) {
        (1, _) => "FedSGD (one local step): the update is one gradient",
        (_, false) => "multi-step FedAvg, naive attack: the update treated as one gradient",
        (_, true) => "multi-step FedAvg, unrolled attack: the local SGD steps simulated on the dummy batch",
    };
    let report = serde_json::json!({
        "attack": "invert_gradients",
        "run": a.at.run.display().to_string(), "round": a.at.round, "client": who, "aggregate": who.is_none(),
        "model": cfg.model.get("use").and_then(|v| v.as_str()).unwrap_or("?"),
        "dataset": cfg.data.name,
        "samples": n, "dummy_samples": samples, "local_steps": steps, "setting": setting,
        "labels": a.labels, "true_labels": truth.y, "recovered_labels": labels, "label_accuracy": label_acc,
        "iterations": a.iterations, "restarts": a.restarts, "lr": a.lr, "tv": a.tv, "fd_step": a.fd_step, "seed": seed,
        "seconds": seconds, "iterations_per_second": (a.iterations * a.restarts) as f64 / seconds.max(1e-9),
        "matching_loss": rec.loss, "curve": rec.curve,
        "mean_psnr": mean_of("psnr"), "mean_ssim": mean_of("ssim"), "mean_mse": mean_of("mse"),
        "baseline": "the training set's mean image",
        "baseline_psnr": mean_of("baseline_psnr"), "baseline_ssim": mean_of("baseline_ssim"),
        "analytic_psnr": analytic_psnr,
        "per_image": per_image,
    });
    let tag = who.map_or("sum".to_string(), |c| format!("c{c}"));
    let out = a.out.clone().unwrap_or_else(|| a.at.run.join(format!("attack-invert-r{}-{tag}", a.at.round)));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    // Up to 16 images a row: originals, then their reconstructions, chunk by chunk.
    let mut rows: Vec<Vec<&[f32]>> = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        rows.push(chunk.iter().map(|&i| row(i)).collect());
        rows.push(chunk.iter().map(|&i| &rec.x[of[i] * d..(of[i] + 1) * d]).collect());
    }
    if let Some(x) = &analytic {
        rows.push(vec![x.as_slice()]);
    }
    rows.push(vec![mean_image.as_slice()]);
    let png = out.join("reconstructions.png");
    write_grid(&png, &rows, img, attack.range)?;
    let md = format!(
        "# invert_gradients: {whose} of round {} of {}\n\n{setting}; {} model on {}, {n} sample(s), labels {} ({:.0}% right).\n\n\
         | | PSNR (dB) | SSIM |\n|---|---|---|\n| reconstruction | {:.2} | {:.3} |\n| mean-image baseline | {:.2} | {:.3} |\n{}\n\
         {} iterations x {} restart(s) in {seconds:.1} s ({:.0} iterations/s), alpha = {}, lr = {}, final matching loss {:.4}.\n\n\
         ![reconstructions](reconstructions.png)\n\nRows: the images behind the update and under them their reconstructions (the one each original matches best), 16 a row{}; the mean image.\n",
        a.at.round,
        a.at.run.display(),
        report["model"].as_str().unwrap_or("?"),
        cfg.data.name,
        a.labels,
        100.0 * label_acc,
        mean_of("psnr"),
        mean_of("ssim"),
        mean_of("baseline_psnr"),
        mean_of("baseline_ssim"),
        analytic_psnr.map(|p| format!("| analytic first layer | {p:.2} | |\n")).unwrap_or_default(),
        a.iterations,
        a.restarts,
        (a.iterations * a.restarts) as f64 / seconds.max(1e-9),
        a.tv,
        a.lr,
        rec.loss,
        if analytic.is_some() { "; the analytic first-layer inversion" } else { "" },
    );
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "mean PSNR {:.2} dB (mean-image baseline {:.2} dB), SSIM {:.3}, labels {:.0}% right; wrote {}",
        mean_of("psnr"),
        mean_of("baseline_psnr"),
        mean_of("ssim"),
        100.0 * label_acc,
        out.display()
    );
    Ok(())
}

fn film(a: &FilmArgs) -> Result<()> {
    let client = a.at.client()?;
    let Victim { engine, global, update, truth, steps, .. } = victim(&a.at.run, a.at.round, client)?;
    let cfg = &engine.cfg;
    let t = truth.positions();
    if t == 0 {
        bail!(
            "film recovers the text of a language model's batch; {} has one label per sample (use data.name = \"fortunes\" and model.use = \"transformer\")",
            cfg.data.name
        );
    }
    if a.beam == 0 {
        bail!("--beam must be at least 1");
    }
    let vocab = truth.classes;
    let bag = bag_of_words(&update, EMBEDDING)?;
    let sequences: Vec<Vec<u32>> = truth.x.chunks(t).map(|s| s.iter().map(|&v| v as u32).collect()).collect();
    let true_bag: std::collections::BTreeSet<u32> = sequences.iter().flatten().copied().collect();
    let (precision, recall) = bag_precision_recall(&bag, &true_bag);
    if bag.len() * 10 > vocab * 9 {
        eprintln!(
            "note: {} of {vocab} embedding rows moved: weight decay or noise moves every row, and the bag is then no evidence",
            bag.len()
        );
    }
    eprintln!(
        "film on client {}'s update of round {} ({} sequences of {t} tokens, {steps} local step(s)): {} tokens in the bag, beam {}",
        client,
        a.at.round,
        sequences.len(),
        bag.len(),
        a.beam
    );
    let t0 = Instant::now();
    let mut model = engine.architecture();
    let beams = if bag.is_empty() {
        Vec::new()
    } else {
        beam_search(model.as_mut(), &global, &bag, t, vocab, a.beam, a.no_repeat)?
    };
    let seconds = t0.elapsed().as_secs_f64();
    // Each beam against the batch's sequence it matches best (by ROUGE-L).
    let scored: Vec<(usize, [f64; 3])> = beams
        .iter()
        .map(|b| {
            let (k, l) = sequences
                .iter()
                .enumerate()
                .map(|(k, s)| (k, rouge_l(&b.tokens, s)))
                .fold((0, -1.0), |best, x| if x.1 > best.1 { x } else { best });
            (k, [rouge_n(&b.tokens, &sequences[k], 1), rouge_n(&b.tokens, &sequences[k], 2), l])
        })
        .collect();
    let top = scored.first().map(|s| s.1).unwrap_or_default();
    let first_b = &scored[..scored.len().min(sequences.len())];
    let mean_b = |j: usize| first_b.iter().map(|s| s.1[j]).sum::<f64>() / first_b.len().max(1) as f64;
    let words = if cfg.data.name == "fortunes" {
        fedkit_data::fortunes::words(&cfg.data.fortunes, cfg.data.data_dir.as_deref()).ok()
    } else {
        None
    };
    let text = |s: &[u32]| -> String {
        match &words {
            Some(w) => s.iter().map(|&i| w.get(i as usize).map_or("?", String::as_str)).collect::<Vec<_>>().join(" "),
            None => s.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
        }
    };
    let report = serde_json::json!({
        "attack": "film",
        "run": a.at.run.display().to_string(), "round": a.at.round, "client": client,
        "dataset": cfg.data.name, "sequences": sequences.len(), "seq_len": t, "local_steps": steps, "beam": a.beam, "no_repeat": a.no_repeat,
        "bag_size": bag.len(), "true_bag_size": true_bag.len(), "bag_precision": precision, "bag_recall": recall,
        "best_rouge1": top[0], "best_rouge2": top[1], "best_rougeL": top[2],
        "top_b_rouge1": mean_b(0), "top_b_rouge2": mean_b(1), "top_b_rougeL": mean_b(2),
        "seconds": seconds,
        "beams": beams.iter().zip(&scored).map(|(b, s)| serde_json::json!({
            "text": text(&b.tokens), "log_likelihood": b.log_likelihood, "matched": s.0,
            "rouge1": s.1[0], "rouge2": s.1[1], "rougeL": s.1[2],
        })).collect::<Vec<_>>(),
        "truth": sequences.iter().map(|s| text(s)).collect::<Vec<_>>(),
    });
    let out = a.out.clone().unwrap_or_else(|| a.at.run.join(format!("attack-film-r{}-c{}", a.at.round, client)));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut md = format!(
        "# film: client {} of round {} of {}\n\n{} sequences of {t} tokens, {steps} local step(s).\n\n\
         Bag of words: {} tokens recovered, precision {precision:.3}, recall {recall:.3} against the batch's {} distinct input tokens.\n\n\
         | | ROUGE-1 | ROUGE-2 | ROUGE-L |\n|---|---|---|---|\n| best beam | {:.3} | {:.3} | {:.3} |\n| best {} beams (mean) | {:.3} | {:.3} | {:.3} |\n\n",
        client,
        a.at.round,
        a.at.run.display(),
        sequences.len(),
        bag.len(),
        true_bag.len(),
        top[0],
        top[1],
        top[2],
        first_b.len(),
        mean_b(0),
        mean_b(1),
        mean_b(2)
    );
    md.push_str("Best beams (log-likelihood, ROUGE-L against the closest sequence):\n\n");
    for (b, s) in beams.iter().zip(&scored).take(5) {
        md.push_str(&format!(
            "- {:.1}, {:.3}: `{}`\n  - closest: `{}`\n",
            b.log_likelihood,
            s.1[2],
            text(&b.tokens),
            text(&sequences[s.0])
        ));
    }
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "bag precision {precision:.3}, recall {recall:.3}; best beam ROUGE-1 {:.3}, ROUGE-2 {:.3}, ROUGE-L {:.3}; wrote {}",
        top[0],
        top[1],
        top[2],
        out.display()
    );
    Ok(())
}

/// phi (the logit-scaled confidence of the label) and the cross-entropy loss of each sample of
/// `data` (positions `ids`) under `params`.
fn confidences(
    model: &mut dyn fedkit_core::Model,
    params: &fedkit_core::Params,
    data: &ClientData,
    ids: &[usize],
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut phi, mut loss) = (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
    let (mut b, mut out) = (Batch::default(), fedkit_core::Outputs::default());
    for chunk in ids.chunks(256) {
        b.fill(data, chunk, &mut RngStream::new(0));
        model.forward(params, &b, fedkit_core::Mode::Eval, &mut out)?;
        for (i, &y) in b.y.iter().enumerate() {
            let row = out.logits_of(i);
            phi.push(logit_confidence(row, y as usize));
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + row.iter().map(|&z| (z as f64 - max).exp()).sum::<f64>().ln();
            loss.push(lse - row[y as usize] as f64);
        }
    }
    Ok((phi, loss))
}

/// Top-1 accuracy of `params` on every sample of `data`.
fn accuracy(model: &mut dyn fedkit_core::Model, params: &fedkit_core::Params, data: &ClientData) -> Result<f64> {
    let (mut b, mut out, mut right) = (Batch::default(), fedkit_core::Outputs::default(), 0usize);
    let ids: Vec<usize> = (0..data.len()).collect();
    for chunk in ids.chunks(256) {
        b.fill(data, chunk, &mut RngStream::new(0));
        model.forward(params, &b, fedkit_core::Mode::Eval, &mut out)?;
        for (i, &y) in b.y.iter().enumerate() {
            let row = out.logits_of(i);
            let top = (0..row.len()).fold(0, |m, j| if row[j] > row[m] { j } else { m });
            right += (top == y as usize) as usize;
        }
    }
    Ok(right as f64 / data.len().max(1) as f64)
}

fn membership(a: &MembershipArgs) -> Result<()> {
    if !a.run.join("resolved.toml").is_file() {
        bail!("{}: not a fedkit run directory (no resolved.toml)", a.run.display());
    }
    if a.shadows < 2 {
        bail!("--shadows {}: LiRA needs at least 2 shadow models (the paper uses 16 to 256)", a.shadows);
    }
    let cfg = fedkit_engine::run::resolved_config(&a.run)?;
    if cfg.algorithm.get("use").and_then(|v| v.as_str()) == Some("ifca") {
        bail!("ifca ends with one model per cluster; the attack reads the single global model");
    }
    let (round, target) = fedkit_engine::checkpoint::checkpoint_global(&a.run)?;
    if round < cfg.rounds {
        bail!("{} stopped at round {round} of {}: finish it first (fedkit run --resume)", a.run.display(), cfg.rounds);
    }
    let mut engine = Engine::new(cfg.clone())?;
    if a.personalised {
        if cfg.eval.finetune_steps > 0 {
            bail!(
                "--personalised scores the algorithm's own per-client models; eval.finetune_steps (fine-tuning at evaluation) is not replicated"
            );
        }
        engine
            .load_checkpoint(&a.run)
            .with_context(|| format!("cannot read the clients' states from the checkpoint of {}", a.run.display()))?;
    }
    // A distilling server (FedDF, FedBE) reads its unlabeled pool: those samples are neither
    // members nor non-members, and the shadows distil on the same pool.
    // With `unlabeled_share` < 1 the server's pool is excluded whatever the algorithm, so that
    // runs of one config by different algorithms draw the same non-members.
    if engine.algorithm.keeps_client_models() && !a.personalised {
        bail!(
            "the run's algorithm keeps a model per client and does not train the global model: attack the clients' models with --personalised"
        );
    }
    let server_pool: std::collections::HashSet<u32> =
        if engine.algorithm.needs_unlabeled_data() || cfg.data.unlabeled_share < 1.0 {
            engine.unlabeled().idx.iter().copied().collect()
        } else {
            Default::default()
        };
    let aggregator = cfg.aggregator.get("use").and_then(|v| v.as_str()).unwrap_or("mean");
    if ["fltrust", "deepsight"].contains(&aggregator) {
        bail!("the `{aggregator}` aggregator reads server-side training samples, so the non-members are not unseen");
    }
    if cfg.threat.has_attackers() || (0..engine.population() as u32).any(|c| engine.architecture_of(c) != 0) {
        bail!(
            "membership shadows re-run a plain federation: a [threat] (attackers) or per-client models ([[model.per_client]]) are drawn per seed and are not replicated"
        );
    }
    if let Some(l) = cfg.loss.get("use").and_then(|v| v.as_str()).filter(|&l| l != "cross_entropy") {
        bail!(
            "the `{l}` loss is prepared from the clients' data when the run starts, which the shadows do not replicate"
        );
    }
    let fed = &engine.fed;
    if fed.train.positions() > 0 {
        bail!("membership scores one label per sample; {} is sequence data", fed.train.name);
    }
    if let Some(c) = fed.clients.iter().position(|c| c.labels.is_some() || c.stamp.is_some()) {
        bail!(
            "client {c}'s labels or features are changed (label noise, an attack): its samples are not the dataset's, so membership is not defined"
        );
    }
    // Samples are (dataset, index) pairs: clients may hold their own datasets (synthetic's
    // users). Members: every sample a client trains on; non-members: samples of the clients'
    // datasets that no client holds.
    let mut sets: Vec<std::sync::Arc<fedkit_core::Dataset>> = Vec::new();
    let set_of: Vec<usize> = fed
        .clients
        .iter()
        .map(|c| match sets.iter().position(|s| std::sync::Arc::ptr_eq(s, &c.data)) {
            Some(j) => j,
            None => {
                sets.push(c.data.clone());
                sets.len() - 1
            }
        })
        .collect();
    let mut owner: Vec<Vec<u32>> = sets.iter().map(|s| vec![u32::MAX; s.len()]).collect();
    for (c, d) in fed.clients.iter().enumerate() {
        d.idx.iter().for_each(|&i| owner[set_of[c]][i as usize] = c as u32);
    }
    type Sample = (usize, u32);
    let members: Vec<Sample> = owner
        .iter()
        .enumerate()
        .flat_map(|(j, o)| (0..o.len() as u32).filter(move |&i| o[i as usize] != u32::MAX).map(move |i| (j, i)))
        .collect();
    let read_by_server =
        |j: usize, i: u32| std::sync::Arc::ptr_eq(&sets[j], &engine.unlabeled().data) && server_pool.contains(&i);
    let pool: Vec<Sample> = owner
        .iter()
        .enumerate()
        .flat_map(|(j, o)| {
            (0..o.len() as u32)
                .filter(move |&i| o[i as usize] == u32::MAX && !read_by_server(j, i))
                .map(move |i| (j, i))
        })
        .collect();
    if pool.is_empty() && !server_pool.is_empty() {
        bail!(
            "the server's unlabeled pool holds every training sample no client holds (data.unlabeled_share = {}), so none is left as a non-member: lower data.unlabeled_share (e.g. 0.5) or data.subsample",
            cfg.data.unlabeled_share
        );
    }
    if pool.is_empty() {
        bail!(
            "every training sample is a member: set data.subsample < 1 so that samples no client holds serve as non-members"
        );
    }
    let seed = a.seed.unwrap_or(cfg.seed);
    let m = members.len().min(pool.len()).min(a.samples.unwrap_or(usize::MAX)).max(1);
    let pick = |from: &[Sample], purpose: &str| -> Vec<Sample> {
        let mut k: Vec<Sample> =
            RngStream::derive(seed, purpose, 0, 0).choose(from.len(), m).into_iter().map(|j| from[j]).collect();
        k.sort_unstable();
        k
    };
    let (scored_in, scored_out) = (pick(&members, "membership.members"), pick(&pool, "membership.non_members"));
    // Unscored non-members pad the population to 2N, so that a shadow's half is as large as the
    // target's training set.
    let padding: Vec<Sample> = {
        let scored: std::collections::HashSet<Sample> = scored_out.iter().copied().collect();
        let rest: Vec<Sample> = pool.iter().copied().filter(|p| !scored.contains(p)).collect();
        let want = members.len().saturating_sub(scored_out.len()).min(rest.len());
        RngStream::derive(seed, "membership.padding", 0, 0)
            .choose(rest.len(), want)
            .into_iter()
            .map(|j| rest[j])
            .collect()
    };
    // The population: every member (with its client) and the scored non-members, each given to
    // a client of its dataset drawn uniformly; the targets are the scored ones.
    let clients_of: Vec<Vec<u32>> =
        (0..sets.len()).map(|j| (0..fed.clients.len() as u32).filter(|&c| set_of[c as usize] == j).collect()).collect();
    let mut assign = RngStream::derive(seed, "membership.assign", 0, 0);
    let mut population: Vec<(Sample, u32)> = members.iter().map(|&(j, i)| ((j, i), owner[j][i as usize])).collect();
    population.extend(scored_out.iter().chain(&padding).map(|&(j, i)| {
        let cs = &clients_of[j];
        ((j, i), cs[assign.below(cs.len() as u64) as usize])
    }));
    let targets: Vec<Sample> = scored_in.iter().chain(&scored_out).copied().collect();
    // Whose model scores each target: its holder (a non-member: the client it is given to);
    // everyone the one global model without --personalised.
    let holder: std::collections::HashMap<Sample, u32> = population.iter().copied().collect();
    let target_client: Vec<u32> = targets.iter().map(|t| if a.personalised { holder[t] } else { 0 }).collect();
    let n_models = if a.personalised { fed.clients.len() } else { 1 };
    let is_member: Vec<bool> = (0..targets.len()).map(|k| k < scored_in.len()).collect();
    let target_pos: std::collections::HashMap<Sample, usize> =
        targets.iter().enumerate().map(|(k, &t)| (t, k)).collect();
    let mut model = engine.architecture();
    // phi and loss of every target under its model (`params[target_client]`), dataset by dataset.
    let score = |model: &mut dyn fedkit_core::Model, params: &[fedkit_core::Params]| -> Result<(Vec<f64>, Vec<f64>)> {
        let (mut phi, mut loss) = (vec![0.0; targets.len()], vec![0.0; targets.len()]);
        for (j, set) in sets.iter().enumerate() {
            for (c, p_c) in params.iter().enumerate() {
                let at: Vec<usize> =
                    (0..targets.len()).filter(|&k| targets[k].0 == j && target_client[k] as usize == c).collect();
                if at.is_empty() {
                    continue;
                }
                let ids: Vec<usize> = at.iter().map(|&k| targets[k].1 as usize).collect();
                let (p, l) = confidences(model, p_c, &ClientData::whole(set.clone()), &ids)?;
                for (n, &k) in at.iter().enumerate() {
                    (phi[k], loss[k]) = (p[n], l[n]);
                }
            }
        }
        Ok((phi, loss))
    };
    let models_of = |e: &Engine| -> Result<Vec<fedkit_core::Params>> {
        if a.personalised {
            (0..n_models as u32).map(|c| Ok(e.client_model(c)?)).collect()
        } else {
            Ok(vec![e.global.clone()])
        }
    };
    let target_models = if a.personalised { models_of(&engine)? } else { vec![target] };
    let (phi_target, loss_target) = score(model.as_mut(), &target_models)?;
    // The scored models' mean test accuracy (each client's own under --personalised).
    let test = engine.test.without_transforms();
    let mut scored_acc = 0.0;
    for p in &target_models {
        scored_acc += accuracy(model.as_mut(), p, &test)? / target_models.len() as f64;
    }
    let mut shadow_phi = Vec::with_capacity(a.shadows);
    let mut shadow_in = Vec::with_capacity(a.shadows);
    let t0 = Instant::now();
    for k in 0..a.shadows {
        let mut half = RngStream::derive(seed, "membership.half", k as u64, 0);
        let keep: Vec<bool> = population.iter().map(|_| half.uniform() < 0.5).collect();
        let mut c_k = cfg.clone();
        c_k.seed = cfg.seed.wrapping_add(1 + k as u64);
        c_k.eval.every = cfg.rounds.max(1);
        c_k.output = Default::default();
        let mut shadow = Engine::new(c_k)?;
        shadow.set_unlabeled(engine.unlabeled().clone());
        let mut idx: Vec<Vec<u32>> = vec![Vec::new(); shadow.fed.clients.len()];
        for (&((_, i), c), &kept) in population.iter().zip(&keep) {
            if kept {
                idx[c as usize].push(i);
            }
        }
        for (c, ids) in idx.iter_mut().enumerate() {
            if ids.is_empty() {
                // A client left without data keeps one of its samples, drawn at random.
                let own: Vec<u32> = population.iter().filter(|p| p.1 == c as u32).map(|p| p.0.1).collect();
                if !own.is_empty() {
                    ids.push(own[half.below(own.len() as u64) as usize]);
                }
            }
            ids.sort_unstable();
            // The run's own data (a dataset generated from the seed, as synthetic's, would
            // differ under the shadow's seed), with the client's transforms.
            let d = &mut shadow.fed.clients[c];
            *d = ClientData { data: sets[set_of[c]].clone(), idx: ids.clone().into(), ..fed.clients[c].clone() };
        }
        let mut inside = vec![false; targets.len()];
        for (c, ids) in idx.iter().enumerate() {
            for &i in ids {
                if let Some(&t) = target_pos.get(&(set_of[c], i)) {
                    inside[t] = true;
                }
            }
        }
        // The shadow's server reads only the target's pool, which no shadow client holds.
        if shadow.fed.clients.iter().any(|c| {
            std::sync::Arc::ptr_eq(&c.data, &engine.unlabeled().data) && c.idx.iter().any(|i| server_pool.contains(i))
        }) {
            bail!("shadow {k} gives a client a sample of the server's unlabeled pool (a bug: please report it)");
        }
        while shadow.round < shadow.cfg.rounds {
            shadow.run_round()?;
        }
        let (phi, _) = score(model.as_mut(), &models_of(&shadow)?)?;
        shadow_phi.push(phi);
        shadow_in.push(inside);
        eprintln!("shadow {}/{} trained ({:.0} s so far)", k + 1, a.shadows, t0.elapsed().as_secs_f64());
    }
    let lira = lira_online(&phi_target, &shadow_phi, &shadow_in);
    let threshold: Vec<f64> = loss_target.iter().map(|l| -l).collect();
    let curves = [("loss threshold", roc(&threshold, &is_member)), ("LiRA (online)", roc(&lira, &is_member))];
    let metrics: Vec<serde_json::Value> = curves
        .iter()
        .map(|(name, c)| {
            serde_json::json!({
                "attack": name, "auc": auc(c), "tpr_at_0.1%_fpr": tpr_at(c, 0.001), "tpr_at_1%_fpr": tpr_at(c, 0.01),
            })
        })
        .collect();
    let mean = |v: &[f64], want: bool| {
        let s: Vec<f64> = v.iter().zip(&is_member).filter(|(_, m)| **m == want).map(|(x, _)| *x).collect();
        s.iter().sum::<f64>() / s.len().max(1) as f64
    };
    let report = serde_json::json!({
        "attack": "membership", "run": a.run.display().to_string(), "round": round,
        "members_scored": scored_in.len(), "non_members_scored": scored_out.len(), "members": members.len(),
        "non_member_pool": pool.len(), "server_unlabeled": server_pool.len(),
        "model": if a.personalised { "personalised" } else { "global" }, "scored_models_test_acc": scored_acc,
        "shadows": a.shadows, "seed": seed, "shadow_seconds": t0.elapsed().as_secs_f64(),
        "mean_loss_members": mean(&loss_target, true), "mean_loss_non_members": mean(&loss_target, false),
        "results": metrics,
    });
    let out = a.out.clone().unwrap_or_else(|| a.run.join("attack-membership"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut plot: Vec<crate::plot::Curve> = curves
        .iter()
        .map(|(name, c)| crate::plot::Curve {
            label: name.to_string(),
            points: c.iter().map(|&(x, y)| (x, y, 0.0)).collect(),
        })
        .collect();
    plot.push(crate::plot::Curve { label: "chance".into(), points: vec![(0.0, 0.0, 0.0), (1.0, 1.0, 0.0)] });
    crate::plot::write(
        &out.join("roc.png"),
        &plot,
        "membership inference: ROC",
        "false-positive rate",
        "true-positive rate",
    )?;
    let mut md = format!(
        "# membership inference on {} (round {round})\n\n{} members and {} non-members scored (of {} members); {} shadow models.\n\
         Mean loss: members {:.4}, non-members {:.4}.\n\n| attack | AUC | TPR at 0.1% FPR | TPR at 1% FPR |\n|---|---|---|---|\n",
        a.run.display(),
        scored_in.len(),
        scored_out.len(),
        members.len(),
        a.shadows,
        mean(&loss_target, true),
        mean(&loss_target, false)
    );
    for (name, c) in &curves {
        md.push_str(&format!("| {name} | {:.3} | {:.3} | {:.3} |\n", auc(c), tpr_at(c, 0.001), tpr_at(c, 0.01)));
    }
    md.push_str("\n![ROC](roc.png)\n");
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "AUC: loss threshold {:.3}, LiRA {:.3}; TPR at 1% FPR: {:.3}, {:.3}; wrote {}",
        auc(&curves[0].1),
        auc(&curves[1].1),
        tpr_at(&curves[0].1, 0.01),
        tpr_at(&curves[1].1, 0.01),
        out.display()
    );
    Ok(())
}

/// One shown round of the GAN replay.
struct GanRow {
    round: u32,
    objective: f64,
    confidence: f64,
    nn_target: f64,
    ssim_target: f64,
    images: Vec<f32>,
}

fn gan(a: &GanArgs) -> Result<()> {
    use fedkit_methods::privacy_attacks::gan_leakage::{GanLeakage, labelled};
    let mut engine = rebuilt(&a.run, |cfg| {
        if cfg.compress.is_some() {
            bail!(
                "[compress] prunes or rewinds the global model after the store kept it, so the insider's discriminator is not in the store"
            );
        }
        if cfg.output.keep_models != fedkit_engine::config::KeepModels::Every(1) {
            bail!(
                "the replay reads the global model before every round the insider took part in: run with [output] keep_models = \"every:1\" (this run has {:?})",
                cfg.output.keep_models
            );
        }
        Ok(())
    })?;
    let cfg = engine.cfg.clone();
    let Some(at) = cfg.pipeline.iter().position(|t| t.get("use").and_then(|v| v.as_str()) == Some("gan_leakage"))
    else {
        bail!(
            "{} has no insider: add [[pipeline]] use = \"gan_leakage\", on = \"malicious\" and pick it with [threat]",
            a.run.display()
        );
    };
    let mut table = cfg.pipeline[at].clone();
    if table.remove("on").and_then(|v| v.as_str().map(str::to_string)).as_deref() != Some("malicious") {
        bail!("the gan_leakage stage must act on the insider only: set on = \"malicious\"");
    }
    table.remove("use");
    let stage: GanLeakage =
        fedkit_core::registry::params_from::<GanLeakage>(&table, &format!("pipeline.{at}"))?.validated()?;
    let client = match a.client {
        Some(c) if c as usize >= engine.population() => {
            bail!("--client {c}: the run has clients 0..{}", engine.population())
        }
        Some(c) if !engine.malicious[c as usize] => {
            bail!("--client {c} is not an insider: its [threat] marks it benign")
        }
        Some(c) => c,
        None => engine
            .malicious
            .iter()
            .position(|&m| m)
            .map(|c| c as u32)
            .context("the run's [threat] marks no client malicious")?,
    };
    if engine.architecture_of(client) != 0 {
        bail!("client {client} trains another architecture ([[model.per_client]]); the replay runs the [model] one");
    }
    if !(1..=100).contains(&a.samples) {
        bail!("--samples {}: must be in 1..=100", a.samples);
    }
    if a.every == Some(0) {
        bail!("--every must be at least 1");
    }
    stage.check_classes(engine.fed.train.classes)?;
    // The rounds the stage ran, from the insider's memory in the checkpoint; without a
    // checkpoint, the rounds its updates were kept while the threat was active.
    let has_checkpoint = a.run.join(fedkit_engine::checkpoint::CHECKPOINT_FILE).is_file();
    if has_checkpoint {
        engine.load_checkpoint(&a.run).with_context(|| format!("cannot read the checkpoint of {}", a.run.display()))?;
    }
    let memory = engine.clients.get(client as usize).and_then(|slot| slot.stage_mem.get(at)).cloned();
    let kept = memory.as_ref().and_then(GanLeakage::state_in);
    let rounds: Vec<u32> = match &memory {
        Some(mem) if kept.is_some() => GanLeakage::rounds_in(mem),
        _ if has_checkpoint => Vec::new(),
        _ => model_store::stored_updates(&a.run, client)
            .into_iter()
            .filter(|&r| r >= 1 && r <= cfg.rounds && cfg.threat.active(r))
            .collect(),
    };
    if rounds.is_empty() {
        bail!(
            "the insider (client {client}) never ran its gan_leakage stage in {} (it was not sampled while the [threat] was active{})",
            a.run.display(),
            if has_checkpoint {
                ""
            } else {
                "; without a checkpoint the rounds come from its kept updates: [output] keep_clients"
            }
        );
    }
    let train = &engine.fed.train;
    if train.positions() > 0 {
        bail!("gan_leakage generates images; {} is sequence data", train.name);
    }
    let (shape, classes) = (train.feature_shape.clone(), train.classes);
    let img = image_shape(&shape);
    if img[1] < 2 || img[2] < 2 {
        bail!("gan_leakage generates images; {} has samples of shape {shape:?}", train.name);
    }
    let g = stage.generator(&shape, train);
    let mut model = engine.architecture();
    let layout = engine.global.layout().clone();
    // The judge (scoring only): the test images, their labels, and those of class `target`.
    let test = engine.test.without_transforms();
    let mut tb = Batch::default();
    tb.fill(&test, &(0..test.len()).collect::<Vec<_>>(), &mut RngStream::new(0));
    let dim = g.out;
    let of_target: Vec<&[f32]> =
        tb.x.chunks(dim).zip(&tb.y).filter(|&(_, &y)| y == stage.target).map(|(x, _)| x).collect();
    if of_target.is_empty() {
        bail!("the test set holds no image of class {}: nothing to compare the generated ones with", stage.target);
    }
    let show = g.noise(a.samples, &mut RngStream::derive(cfg.seed, "gan.show", 0, client as u64));
    let score = |round: u32,
                 objective: f64,
                 model: &mut dyn fedkit_core::Model,
                 global: &fedkit_core::Params,
                 phi: &[f32]|
     -> Result<GanRow> {
        let images = g.generate(phi, show.clone());
        let batch = labelled(images.clone(), &shape, classes, stage.target);
        let mut losses = Vec::new();
        model.per_example_loss(global, &batch, &mut losses)?;
        let confidence = losses.iter().map(|&l| (-l as f64).exp()).sum::<f64>() / losses.len() as f64;
        let (mut nn, mut ss) = (0usize, 0.0f64);
        for x in images.chunks(dim) {
            let nearest =
                tb.x.chunks(dim)
                    .zip(&tb.y)
                    .map(|(t, &y)| (mse(x, t), y))
                    .fold((f64::INFINITY, 0), |b, c| if c.0 < b.0 { c } else { b });
            nn += (nearest.1 == stage.target) as usize;
            let twin = of_target
                .iter()
                .map(|t| (mse(x, t), *t))
                .fold((f64::INFINITY, of_target[0]), |b, c| if c.0 < b.0 { c } else { b });
            ss += ssim(x, twin.1, img, (g.hi - g.lo) as f64);
        }
        let n = a.samples as f64;
        Ok(GanRow { round, objective, confidence, nn_target: nn as f64 / n, ssim_target: ss / n, images })
    };
    let mut st = stage.initial_state(&g, cfg.seed, client);
    let w0 = model_store::read_global(&a.run, 0, &layout)?;
    let every = a.every.unwrap_or((rounds.len() / 10).max(1)).max(1);
    let mut rows = vec![score(0, f64::NAN, model.as_mut(), &w0, &st.phi)?];
    let started = Instant::now();
    for (k, &r) in rounds.iter().enumerate() {
        let global =
            model_store::read_global(&a.run, r.checked_sub(1).context("round 0 in the insider's rounds")?, &layout)?;
        let mut rng = RngStream::derive(cfg.seed, "gan.train", r as u64, client as u64);
        let objective = stage.train_generator(&g, model.as_mut(), &global, &shape, classes, &mut st, &mut rng)?;
        if k % every == 0 || k + 1 == rounds.len() {
            let row = score(r, objective, model.as_mut(), &global, &st.phi)?;
            eprintln!(
                "round {r}: confidence {:.3}, nearest test image of class {} {:.0}%, SSIM {:.3} ({:.1} s)",
                row.confidence,
                stage.target,
                100.0 * row.nn_target,
                row.ssim_target,
                started.elapsed().as_secs_f64()
            );
            rows.push(row);
        }
    }
    // The replay is the insider's generator when the checkpoint holds the insider's memory.
    let matches = kept.as_ref().map(|k| *k == st);
    let out = a.out.clone().unwrap_or_else(|| a.run.join(format!("attack-gan-c{client}")));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let last = rows.last().expect("the initial row");
    let twins: Vec<&[f32]> = last
        .images
        .chunks(dim)
        .map(|x| {
            of_target
                .iter()
                .map(|t| (mse(x, t), *t))
                .fold((f64::INFINITY, of_target[0]), |b, c| if c.0 < b.0 { c } else { b })
                .1
        })
        .collect();
    let mut grid: Vec<Vec<&[f32]>> = rows.iter().map(|r| r.images.chunks(dim).collect()).collect();
    grid.push(twins);
    write_grid(&out.join("samples.png"), &grid, img, (g.lo, g.hi))?;
    let report = serde_json::json!({
        "attack": "gan_leakage", "run": a.run.display().to_string(), "client": client, "target": stage.target,
        "fake": stage.fake, "inject": stage.inject, "rounds_taken_part": rounds.len(), "replay_matches_insider": matches,
        "rows": rows.iter().map(|r| serde_json::json!({"round": r.round, "objective": if r.objective.is_finite() { Some(r.objective) } else { None },
            "confidence": r.confidence, "nearest_is_target": r.nn_target, "ssim_nearest_target": r.ssim_target})).collect::<Vec<_>>(),
    });
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut md = format!(
        "# GAN leakage of {} (insider {client}, class {} labelled {})\n\n\
         The insider took part in {} rounds and injected {} generated samples per round. `samples.png`: one row per \
         round below (round 0: the untrained generator), then the real test images of class {} nearest to the last row.\n\
         Replay equals the insider's generator in the checkpoint: {}.\n\n\
         | round | generator loss | confidence on class {} | nearest test image is class {} | SSIM to nearest class-{} image |\n|---|---|---|---|---|\n",
        a.run.display(),
        stage.target,
        stage.fake,
        rounds.len(),
        stage.inject,
        stage.target,
        matches.map_or("not checked (no checkpoint; the rounds come from the kept updates)".to_string(), |m| m
            .to_string()),
        stage.target,
        stage.target,
        stage.target
    );
    for r in &rows {
        let obj = if r.objective.is_finite() { format!("{:.3}", r.objective) } else { "-".into() };
        md.push_str(&format!(
            "| {} | {obj} | {:.3} | {:.0}% | {:.3} |\n",
            r.round,
            r.confidence,
            100.0 * r.nn_target,
            r.ssim_target
        ));
    }
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("cannot write {}", out.display()))?;
    if matches == Some(false) {
        bail!(
            "the replayed generator differs from the insider's in the checkpoint, so {} does not show what the insider generated (a bug: please report it)",
            out.display()
        );
    }
    println!(
        "last round: confidence {:.3}, nearest test image of class {} {:.0}%, SSIM {:.3}; wrote {}",
        last.confidence,
        stage.target,
        100.0 * last.nn_target,
        last.ssim_target,
        out.display()
    );
    Ok(())
}

/// Per-image SSIM and PSNR of reconstructions (`of[i]`: the reconstruction original i is compared with).
struct Scores {
    ssim: Vec<f64>,
    psnr: Vec<f64>,
}

impl Scores {
    fn of(truth: &[f32], recon: &[f32], of: &[usize], d: usize, img: [usize; 3], peak: f64) -> Scores {
        let (ssim, psnr) = of
            .iter()
            .enumerate()
            .map(|(i, &j)| {
                let (t, r) = (&truth[i * d..(i + 1) * d], &recon[j * d..(j + 1) * d]);
                (ssim(t, r, img, peak), finite(psnr(t, r, peak)))
            })
            .unzip();
        Scores { ssim, psnr }
    }

    fn json(&self, name: &str) -> serde_json::Value {
        let (s, p) = (mean_std(&self.ssim), mean_std(&self.psnr));
        serde_json::json!({"attack": name, "ssim": s.0, "ssim_std": s.1, "psnr": p.0, "psnr_std": p.1,
            "recovered_share": self.ssim.iter().filter(|&&v| v >= 0.5).count() as f64 / self.ssim.len().max(1) as f64})
    }
}

fn instahide(a: &InstahideArgs) -> Result<()> {
    use fedkit_methods::privacy_attacks::instahide::InstaHide;
    use fedkit_methods::privacy_attacks::instahide_attack::{Mixing, Unmix};
    if !a.run.join("resolved.toml").is_file() {
        bail!("{}: not a fedkit run directory (no resolved.toml)", a.run.display());
    }
    let mut cfg = fedkit_engine::run::resolved_config(&a.run)?;
    let Some(at) = cfg.pipeline.iter().position(|t| t.get("use").and_then(|v| v.as_str()) == Some("instahide")) else {
        bail!(
            "{} has no instahide stage: its clients encode nothing to attack (add [[pipeline]] use = \"instahide\")",
            a.run.display()
        );
    };
    let mut table = cfg.pipeline[at].clone();
    table.remove("use");
    table.remove("on");
    let ih: InstaHide =
        fedkit_core::registry::params_from::<InstaHide>(&table, &format!("pipeline.{at}"))?.validated()?;
    cfg.init_from = None;
    cfg.model.remove("init");
    let engine = Engine::new(cfg)?;
    let client = a.client;
    if client as usize >= engine.population() {
        bail!("--client {client}: the run has clients 0..{}", engine.population());
    }
    let data = engine.fed.clients[client as usize].without_transforms();
    if engine.fed.train.positions() > 0 {
        bail!("instahide encodes images; {} is sequence data", engine.fed.train.name);
    }
    if a.images < 2 || a.images > data.len() {
        bail!("--images {}: must be in 2..={} (client {client} holds {} samples)", a.images, data.len(), data.len());
    }
    if a.epochs == 0 || a.restarts == 0 || a.iterations == 0 {
        bail!("--epochs, --restarts and --iterations must be at least 1");
    }
    if a.images > 200 {
        eprintln!("note: the key-less pair search grows with the square of --images ({}); expect minutes", a.images);
    }
    let ids: Vec<usize> = (0..a.images).collect();
    let mut truth = Batch::default();
    truth.fill(&data, &ids, &mut RngStream::new(0));
    let d = truth.x.len() / a.images;
    let img = image_shape(&truth.feature_shape);
    if img[1] < 2 || img[2] < 2 {
        bail!("instahide encodes images; {} has samples of shape {:?}", engine.fed.train.name, truth.feature_shape);
    }
    // The client's stage encodes each mini-batch with a fresh key; the attacker keeps only the
    // encodings (the mixing is kept aside for the known-mixing attack and the scoring).
    let seed = engine.cfg.seed;
    let b = engine.cfg.client.batch_size.clamp(1, a.images);
    let (mut enc, mut mixing) = (Vec::with_capacity(a.epochs * a.images * d), Vec::<Mixing>::new());
    for epoch in 0..a.epochs {
        let mut keys = RngStream::derive(seed, "instahide.attack.keys", epoch as u64, client as u64);
        let order = keys.permutation(a.images);
        for chunk in order.chunks(b) {
            let batch = Batch {
                x: chunk.iter().flat_map(|&i| truth.x[i * d..(i + 1) * d].iter().copied()).collect(),
                y: chunk.iter().map(|&i| truth.y[i]).collect(),
                targets: Vec::new(),
                feature_shape: truth.feature_shape.clone(),
                classes: truth.classes,
            };
            let (e, ks) = ih.encode(&batch, &mut keys);
            enc.extend_from_slice(&e.x);
            mixing.extend(ks.into_iter().map(|k| k.parts.into_iter().map(|(p, l)| (chunk[p], l)).collect::<Mixing>()));
        }
    }
    let m = mixing.len();
    let range = pixel_range(&engine);
    let peak = (range.1 - range.0) as f64;
    let un = Unmix {
        iterations: a.iterations,
        restarts: a.restarts,
        ..Unmix::new(a.images, ih.k, ih.upper as f32, ih.center, ih.mask, range)
    };
    let scheme = if ih.mask { "InstaHide" } else { "Mixup" };
    eprintln!("{scheme}, k = {}: {} private images of client {client}, {m} encodings", ih.k, a.images);
    let started = Instant::now();
    let known = un.with_mixing(&enc, &mixing, d)?;
    let identity: Vec<usize> = (0..a.images).collect();
    let known_scores = Scores::of(&truth.x, &known.images, &identity, d, img, peak);
    let mean = train_mean(&engine);
    let mean_images: Vec<f32> = (0..a.images).flat_map(|_| mean.iter().copied()).collect();
    let baseline = Scores::of(&truth.x, &mean_images, &identity, d, img, peak);
    let mut rows = vec![known_scores.json("known mixing"), baseline.json("mean image")];
    // Without the key: the reconstructions come unordered; each original is compared with the
    // one it matches (one to one by MSE), and an encoding's mixing is right when it names the
    // reconstructions of the very images it mixed.
    let keyless = if ih.k <= 2 {
        let t = Instant::now();
        let rec = un.recover(&enc, d, &mut RngStream::derive(seed, "instahide.attack", 0, client as u64))?;
        let of = match_by_mse(&truth.x, &rec.images, d);
        let scores = Scores::of(&truth.x, &rec.images, &of, d, img, peak);
        let set = |mix: &Mixing, map: &dyn Fn(usize) -> usize| {
            let mut v: Vec<usize> = mix.iter().filter(|p| p.1 > 0.0).map(|p| map(p.0)).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let right = mixing.iter().zip(&rec.mixing).filter(|(t, r)| set(t, &|i| of[i]) == set(r, &|j| j)).count();
        let mut row = scores.json("key-less");
        row["mixing_right"] = serde_json::json!(right as f64 / m as f64);
        row["unexplained"] = serde_json::json!(rec.unexplained);
        row["seconds"] = serde_json::json!(t.elapsed().as_secs_f64());
        rows.insert(0, row);
        eprintln!(
            "key-less: mean SSIM {:.3}, {:.0}% of the encodings' mixing right ({:.1} s)",
            mean_std(&scores.ssim).0,
            100.0 * right as f64 / m as f64,
            t.elapsed().as_secs_f64()
        );
        Some((rec, of))
    } else {
        eprintln!("key-less attack not run: it is built for k = 1 or 2 images per encoding (this run mixes {})", ih.k);
        None
    };
    let out = a.out.clone().unwrap_or_else(|| a.run.join(format!("attack-instahide-c{client}")));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Ten images a row: the originals, the key-less reconstructions they match, the known-mixing
    // ones; then the first ten encodings as the attacker sees them.
    let image = |v: &[f32], i: usize| -> Vec<f32> { v[i * d..(i + 1) * d].to_vec() };
    let mut grid: Vec<Vec<Vec<f32>>> = Vec::new();
    for chunk in identity.chunks(10) {
        grid.push(chunk.iter().map(|&i| image(&truth.x, i)).collect());
        if let Some((rec, of)) = &keyless {
            grid.push(chunk.iter().map(|&i| image(&rec.images, of[i])).collect());
        }
        grid.push(chunk.iter().map(|&i| image(&known.images, i)).collect());
    }
    grid.push((0..10.min(m)).map(|i| image(&enc, i)).collect());
    let refs: Vec<Vec<&[f32]>> = grid.iter().map(|r| r.iter().map(Vec::as_slice).collect()).collect();
    write_grid(&out.join("reconstructions.png"), &refs, img, range)?;
    let report = serde_json::json!({
        "attack": "instahide", "run": a.run.display().to_string(), "client": client, "scheme": scheme, "k": ih.k,
        "upper": ih.upper, "center": ih.center, "images": a.images, "epochs": a.epochs, "encodings": m,
        "restarts": a.restarts, "iterations": a.iterations, "rows": rows,
        "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut md = format!(
        "# Attack on the {scheme} encodings of {} (client {client})\n\n\
         {} private images (the client's first), encoded {} times each ({m} encodings, k = {}, weights at most {}, \
         centre {}), as the client's `instahide` stage encodes its mini-batches. The key-less attack sees only the \
         encodings; the known-mixing one also knows which images each mixes and their weights (not the signs).\n\n\
         | attack | SSIM | PSNR (dB) | SSIM >= 0.5 | mixing right |\n|---|---|---|---|---|\n",
        a.run.display(),
        a.images,
        a.epochs,
        ih.k,
        ih.upper,
        ih.center
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.3} ± {:.3} | {:.2} ± {:.2} | {:.0}% | {} |\n",
            r["attack"].as_str().unwrap_or(""),
            r["ssim"].as_f64().unwrap_or(f64::NAN),
            r["ssim_std"].as_f64().unwrap_or(f64::NAN),
            r["psnr"].as_f64().unwrap_or(f64::NAN),
            r["psnr_std"].as_f64().unwrap_or(f64::NAN),
            100.0 * r["recovered_share"].as_f64().unwrap_or(0.0),
            r["mixing_right"].as_f64().map_or("-".to_string(), |v| format!("{:.0}%", 100.0 * v))
        ));
    }
    md.push_str(&format!(
        "\n![reconstructions](reconstructions.png)\n\nRows, ten images at a time: the originals, {}the known-mixing \
         reconstructions; last row: the first ten encodings as the attacker sees them.{}\n",
        if keyless.is_some() { "the key-less reconstructions they match, " } else { "" },
        if keyless.is_none() { " The key-less attack is built for k = 1 or 2." } else { "" }
    ));
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("cannot write {}", out.display()))?;
    let first = &rows[0];
    println!(
        "{}: mean SSIM {:.3} (mean image {:.3}); wrote {}",
        first["attack"].as_str().unwrap_or(""),
        first["ssim"].as_f64().unwrap_or(f64::NAN),
        mean_std(&baseline.ssim).0,
        out.display()
    );
    Ok(())
}

fn audit(a: &AuditArgs) -> Result<()> {
    use fedkit_methods::privacy_attacks::audit::{direction, epsilon_lower_bound, guesses, included, round_scores};
    if !a.run.join("resolved.toml").is_file() {
        bail!("{}: not a fedkit run directory (no resolved.toml)", a.run.display());
    }
    if !(a.confidence > 0.0 && a.confidence < 1.0) {
        bail!("--confidence {}: must be in (0, 1)", a.confidence);
    }
    let cfg = fedkit_engine::run::resolved_config(&a.run)?;
    let uses = |name: &str| cfg.pipeline.iter().find(|t| t.get("use").and_then(|v| v.as_str()) == Some(name));
    let index = |name: &str| cfg.pipeline.iter().position(|t| t.get("use").and_then(|v| v.as_str()) == Some(name));
    let Some(canary) = index("audit_canary") else {
        bail!(
            "{} has no canaries: add [[pipeline]] use = \"audit_canary\", on = \"malicious\" (before any DP stage) and pick the canary clients with [threat]",
            a.run.display()
        );
    };
    if cfg.pipeline[canary].get("on").and_then(|v| v.as_str()) != Some("malicious") {
        bail!("the audit_canary stage must act on the canaries only: set on = \"malicious\"");
    }
    if let Some(dp) = ["dp_fixed_clip", "dp_adaptive_clip"].into_iter().filter_map(index).find(|&d| d < canary) {
        bail!(
            "pipeline stage {dp} (DP) runs before audit_canary, which would then replace the privatised update; put audit_canary first"
        );
    }
    if uses("dp_sgd").is_some() {
        bail!(
            "dp_sgd protects samples, while the canaries are whole clients that bypass it; audit user-level DP (dp_fixed_clip, dp_adaptive_clip)"
        );
    }
    if cfg.threat.per_round_min > 0 {
        bail!(
            "[threat] per_round_min forces canaries into cohorts beyond the accountant's sampling rate; the bound would not be comparable"
        );
    }
    let (round, last) = fedkit_engine::checkpoint::checkpoint_global(&a.run)?;
    if round < cfg.rounds {
        bail!("{} stopped at round {round} of {}: finish it first (fedkit run --resume)", a.run.display(), cfg.rounds);
    }
    let engine = Engine::new(cfg.clone())?;
    let canaries: Vec<u32> = (0..engine.population() as u32).filter(|&c| engine.malicious[c as usize]).collect();
    let m = canaries.len();
    if m < 2 {
        bail!("{m} canary client(s): mark at least 2 with [threat] malicious_fraction or ids");
    }
    let dp = uses("dp_fixed_clip").or(uses("dp_adaptive_clip"));
    let delta = match dp.and_then(|t| t.get("delta")).and_then(|v| v.as_float()) {
        Some(d) if d > 0.0 => d,
        Some(_) => (engine.population() as f64).powf(-1.1),
        None => 0.0,
    };
    // The run's own initial model when the store kept it, else the one the config builds.
    let start = model_store::read_global(&a.run, 0, engine.global.layout()).unwrap_or_else(|_| engine.global.clone());
    let scores: Vec<f64> = match a.score {
        AuditScore::Final => {
            let moved = last.sub(&start);
            canaries.iter().map(|&c| moved.dot(&direction(cfg.seed, c, &start))).collect()
        }
        AuditScore::Rounds => {
            if cfg.output.keep_models != fedkit_engine::config::KeepModels::Every(1) {
                bail!(
                    "--score rounds reads every intermediate model: run with [output] keep_models = \"every:1\" (this run has \"{}\")",
                    String::from(cfg.output.keep_models.clone())
                );
            }
            let z = dp.and_then(|t| t.get("noise_multiplier")).and_then(|v| v.as_float()).unwrap_or(0.0);
            if z <= 0.0 {
                bail!(
                    "--score rounds weighs each round by the DP noise: the run needs a DP stage with noise_multiplier > 0"
                );
            }
            let q = match cfg.sampling.scheme {
                fedkit_engine::config::SamplingScheme::Poisson => cfg.sampling.rate,
                fedkit_engine::config::SamplingScheme::Uniform => {
                    cfg.sampling.per_round as f64 / engine.population().max(1) as f64
                }
            };
            // Every round's step in memory (R models' worth), each direction generated once.
            let mut steps = Vec::with_capacity(round as usize);
            let mut prev = start.clone();
            for t in 1..=round {
                let w = model_store::read_global(&a.run, t, engine.global.layout()).with_context(|| {
                    format!("--score rounds needs the stored global model of every round 0..={round}")
                })?;
                steps.push(w.sub(&prev));
                prev = w;
            }
            let mut x = vec![vec![0.0; m]; steps.len()];
            for (k, &c) in canaries.iter().enumerate() {
                let u = direction(cfg.seed, c, &start);
                for (row, step) in x.iter_mut().zip(&steps) {
                    row[k] = step.dot(&u);
                }
            }
            round_scores(&x, q.clamp(1e-9, 1.0), z)
        }
    };
    let truth: Vec<bool> = canaries.iter().map(|&c| included(cfg.seed, c)).collect();
    let mut ks: Vec<usize> = if a.guesses.is_empty() { vec![m / 10, m / 4, m / 2, m] } else { a.guesses.clone() };
    ks.iter_mut().for_each(|k| *k = (*k).clamp(2, m));
    ks.sort_unstable();
    ks.dedup();
    let p = (1.0 - a.confidence) / ks.len() as f64;
    let rows: Vec<(usize, usize, usize, f64)> = ks
        .iter()
        .map(|&k| {
            let (r, v) = guesses(&scores, &truth, k);
            (k, r, v, epsilon_lower_bound(m, r, v, delta, p))
        })
        .collect();
    let best = rows.iter().map(|r| r.3).fold(0.0, f64::max);
    let metrics = std::fs::read_to_string(a.run.join("metrics.jsonl")).unwrap_or_default();
    let accountant = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["epsilon"].as_f64())
        .next_back();
    let report = serde_json::json!({
        "attack": "audit", "run": a.run.display().to_string(), "round": round, "canaries": m,
        "score": if a.score == AuditScore::Rounds { "rounds" } else { "final" },
        "included": truth.iter().filter(|&&t| t).count(), "delta": delta, "confidence": a.confidence,
        "epsilon_lower_bound": best, "accountant_epsilon": accountant,
        "guesses": rows.iter().map(|&(k, r, v, e)| serde_json::json!({"k": k, "guesses": r, "correct": v, "epsilon_lower_bound": e})).collect::<Vec<_>>(),
    });
    let out = a.out.clone().unwrap_or_else(|| a.run.join("attack-audit"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut md = format!(
        "# one-run audit of {} (round {round})\n\n{m} canary clients, {} included; delta {delta:.3e}; confidence {} (split over {} numbers of guesses).\n\n\
         Empirical lower bound: epsilon >= {best:.3}; the accountant's epsilon: {}.\n\n| k | guesses | correct | bound |\n|---|---|---|---|\n",
        a.run.display(),
        report["included"],
        a.confidence,
        ks.len(),
        accountant.map_or("none (no DP stage)".to_string(), |e| format!("{e:.3}"))
    );
    for (k, r, v, e) in &rows {
        md.push_str(&format!("| {k} | {r} | {v} | {e:.3} |\n"));
    }
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "epsilon lower bound {best:.3} at {:.0}% confidence (accountant: {}); wrote {}",
        100.0 * a.confidence,
        accountant.map_or("-".to_string(), |e| format!("{e:.3}")),
        out.display()
    );
    Ok(())
}

/// JSON has no infinity: an exact reconstruction's PSNR (+inf) is written as 999 dB.
fn finite(v: f64) -> f64 {
    if v == f64::INFINITY { 999.0 } else { v }
}

/// Number of common elements of two sorted lists (as multisets).
fn multiset_overlap(a: &[u32], b: &[u32]) -> usize {
    let (mut i, mut j, mut k) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                k += 1;
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    k
}

/// The box the pixels live in: [min, max] of the training features (the attacker knows the
/// data's range, e.g. [0, 1] for Fashion-MNIST).
fn pixel_range(engine: &Engine) -> (f32, f32) {
    let x = &engine.fed.train.x;
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if lo < hi { (lo, hi) } else { (0.0, 1.0) }
}

/// The mean training sample.
fn train_mean(engine: &Engine) -> Vec<f32> {
    let t = &engine.fed.train;
    let d = t.feature_len();
    let mut m = vec![0.0f64; d];
    for row in t.x.chunks(d) {
        m.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
    }
    m.into_iter().map(|v| (v / t.len().max(1) as f64) as f32).collect()
}

/// A PNG of image rows (each image `[c, h, w]`, grey for one channel, RGB for three), scaled 3x
/// with white gaps; values mapped from `range` to 0..255.
fn write_grid(path: &Path, rows: &[Vec<&[f32]>], [c, h, w]: [usize; 3], range: (f32, f32)) -> Result<()> {
    const S: usize = 3;
    const GAP: usize = 4;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (cw, ch) = (w * S + GAP, h * S + GAP);
    let (width, height) = (cols * cw + GAP, rows.len() * ch + GAP);
    let mut px = vec![255u8; width * height * 3];
    let span = (range.1 - range.0).max(f32::MIN_POSITIVE);
    for (r, images) in rows.iter().enumerate() {
        for (k, image) in images.iter().enumerate() {
            for y in 0..h * S {
                for x in 0..w * S {
                    let (iy, ix) = (y / S, x / S);
                    let at = |ch: usize| {
                        let v = (image[(ch * h + iy) * w + ix] - range.0) / span;
                        (v.clamp(0.0, 1.0) * 255.0).round() as u8
                    };
                    let rgb = if c >= 3 { [at(0), at(1), at(2)] } else { [at(0); 3] };
                    let (py, pxx) = (GAP + r * ch + y, GAP + k * cw + x);
                    px[(py * width + pxx) * 3..(py * width + pxx) * 3 + 3].copy_from_slice(&rgb);
                }
            }
        }
    }
    crate::png_out::write_rgb(path, width, height, &px)
}
