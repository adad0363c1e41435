//! The round loop (DESIGN.md section 5): sample -> broadcast -> clients (in parallel) -> cohort
//! stages -> aggregate -> server stages (reverse order) -> server rule -> evaluate. Every random
//! draw derives from (seed, round, client, purpose); clients run single-threaded on a fixed set
//! of workers and everything is reduced in client-id order, so the numbers are the same bit for
//! bit whatever the thread count.

use std::sync::Mutex;
use std::time::Instant;

use fedkit_core::{
    AdjustedPrediction, Aggregate, AggregatorView, AnyState, Architecture, ClientCtx, ClientData, ClientFailure,
    DynAlgorithm, Error, EvalStats, Extras, GradHook, LocalStep, Loss, LossData, Metrics, Model, Params, Result,
    RngStream, RoundCtx, SampleCtx, ServerView, StragglerPolicy, Update, Weighting, balanced_accuracy, class_accuracy,
    evaluate_in_domain, evaluate_range,
};
use fedkit_data::Federation;

use crate::config::{Built, RunConfig, SamplingScheme, SecAggProtocol, StageSlot};
use crate::record::Record;
use crate::workers::Workers;

/// Wall-clock seconds spent in each phase of a round (for `timings.jsonl`, never the metrics).
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub round: u32,
    pub clients_s: f64,
    pub aggregate_s: f64,
    pub eval_s: f64,
    pub total_s: f64,
}

impl Timings {
    /// Bookkeeping: the round's time outside the three phases (sampling, broadcast, metrics).
    pub fn other_s(&self) -> f64 {
        (self.total_s - self.clients_s - self.aggregate_s - self.eval_s).max(0.0)
    }
    /// One JSON line.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"round\":{},\"clients_s\":{:.6},\"aggregate_s\":{:.6},\"eval_s\":{:.6},\"other_s\":{:.6},\"total_s\":{:.6}}}",
            self.round,
            self.clients_s,
            self.aggregate_s,
            self.eval_s,
            self.other_s(),
            self.total_s
        )
    }
}

/// Who takes part in a round: the cohort after stragglers, with their local epochs and draws.
struct RoundPlan {
    round: u32,
    /// Distinct clients sampled (before stragglers drop out).
    sampled: usize,
    /// Cohort members that drop out or do partial work.
    stragglers: usize,
    /// (client, local epochs) of every client that runs, sorted by id.
    running: Vec<(u32, usize)>,
    run_ids: Vec<u32>,
    /// How often each running client was drawn.
    run_draws: Vec<u32>,
    /// Which clients attack this round (the malicious pool in attack rounds, no one otherwise).
    attacking: Vec<bool>,
}

/// Per-client persistent state: the algorithm's and each stage's memory.
#[derive(Default)]
pub struct ClientSlot {
    pub state: Option<Box<dyn AnyState>>,
    pub stage_mem: Vec<Extras>,
}

/// A federation, its methods and its state: everything a run needs.
pub struct Engine {
    pub cfg: RunConfig,
    pub algorithm: Box<dyn DynAlgorithm>,
    pub aggregator: Box<dyn fedkit_core::Aggregator>,
    pub local: Box<dyn LocalStep>,
    pub loss: Box<dyn Loss>,
    pub stages: Vec<StageSlot>,
    pub fed: Federation,
    pub test: ClientData,
    pub global: Params,
    pub server: Box<dyn AnyState>,
    pub clients: Vec<ClientSlot>,
    pub malicious: Vec<bool>,
    /// The last completed round (0 before the first).
    pub round: u32,
    /// Metrics of every completed round (and round 0 when evaluated).
    pub records: Vec<Record>,
    /// Clients that failed in the last round, with their reasons.
    pub last_failures: Vec<ClientFailure>,
    /// With `[eval] clients`: every client's local accuracy and loss at the last evaluation
    /// (`local_eval.jsonl`; taken by the run directory when written).
    pub local_eval: Option<LocalEval>,
    /// The last round's updates of `[output] keep_clients`, as the server received them.
    pub kept_updates: Vec<fedkit_core::Update>,
    /// Under `[downlink]`: the shadow model w^ the clients train from, and who holds it.
    pub downlink: Option<crate::downlink::DownlinkState>,
    /// The round's model bytes to all its clients under `[downlink]`.
    downlink_bytes: Option<usize>,
    /// The server's unlabeled pool, `[data] unlabeled_share` of the training samples no client
    /// holds (`ServerView::unlabeled`).
    unlabeled: ClientData,
    workers: Workers,
    /// Each client's held-out local test split (with `eval.clients`; empty otherwise).
    pub local_test: Vec<ClientData>,
    /// Each client's held-out validation split (with `eval.validation`; empty otherwise).
    pub validation: Vec<ClientData>,
    /// With label noise: the clients' clean samples, their relabelled samples with the noisy
    /// labels, and the same with the true labels (the memorisation metrics).
    memorisation: Option<[Vec<ClientData>; 3]>,
    /// Evaluation sets the stages define (a backdoor's triggered test set: `backdoor_acc`).
    stage_evals: Vec<(String, ClientData)>,
    /// A model object for server rules that evaluate parameters (FedLAW).
    server_model: Box<dyn Model>,
    /// `[[model.per_client]]`: each group's architecture (server-side objects) and initial
    /// parameters, and every client's architecture (0: `[model]`, g: group g - 1).
    groups: Vec<Architecture>,
    arch_of: Vec<u16>,
    /// The pooled training data (aggregators' root and probe sets; simulation only).
    server_data: ClientData,
    /// `[compress]`: the model-compression method (its mask holds clients' pruned weights at 0).
    pub compress: Option<Box<dyn fedkit_core::Compress>>,
}

/// How well (chosen cluster, true group) pairs agree, up to renaming the clusters: the best
/// one-to-one matching of clusters to groups (every permutation, for up to 8 of either), or the
/// purity (each cluster counted as its majority group) beyond.
pub fn cluster_accuracy(pairs: &[(usize, usize)]) -> f64 {
    let k = pairs.iter().map(|p| p.0.max(p.1) + 1).max().unwrap_or(1);
    let mut count = vec![vec![0usize; k]; k];
    for &(c, g) in pairs {
        count[c][g] += 1;
    }
    let best = if k <= 8 {
        fn search(count: &[Vec<usize>], c: usize, used: &mut [bool]) -> usize {
            if c == count.len() {
                return 0;
            }
            let mut best = 0;
            for g in 0..count.len() {
                if !used[g] {
                    used[g] = true;
                    best = best.max(count[c][g] + search(count, c + 1, used));
                    used[g] = false;
                }
            }
            best
        }
        search(&count, 0, &mut vec![false; k])
    } else {
        count.iter().map(|row| row.iter().copied().max().unwrap_or(0)).sum()
    };
    best as f64 / pairs.len() as f64
}

/// One evaluation of every client's model on its local test split: a line of `local_eval.jsonl`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LocalEval {
    pub round: u32,
    /// The clients with a non-empty local test split, ascending; `acc` and `loss` follow them.
    pub clients: Vec<u32>,
    pub acc: Vec<f64>,
    pub loss: Vec<f64>,
}

impl Engine {
    /// Build the federation, the methods and the initial model from a (resolved) config.
    pub fn new(mut cfg: RunConfig) -> Result<Engine> {
        let source = cfg.source.clone();
        let in_file = |e: Error| if source.is_empty() { e } else { e.in_file(&source) };
        let Built { algorithm, aggregator, mut stages, model, local, mut loss, groups, mut compress, quant } =
            cfg.build().map_err(in_file)?;
        let fed = fedkit_data::build_federation(&cfg.data, cfg.seed).map_err(in_file)?;
        cfg.data.partition = fed.partition.clone();
        let model = model.instantiate(&fed.train.feature_shape, fed.train.classes).map_err(in_file)?;
        fedkit_core::model::check_fits(&*model, &fed.train, "model.use").map_err(in_file)?;
        let model: Box<dyn Model> = match quant {
            Some(q) => Box::new(fedkit_models::quantized::QuantizedModel::new(model, q)),
            None => model,
        };
        let mut global = model.init(&mut RngStream::derive(cfg.seed, "init", 0, 0));
        if let Some(dir) = &cfg.init_from {
            global = initial_model(std::path::Path::new(dir), &global, "init_from").map_err(in_file)?;
        }
        if let Some(path) = cfg.model.get("init").and_then(|v| v.as_str()) {
            let path = std::path::Path::new(path);
            global = if path.is_dir() {
                initial_model(path, &global, "model.init")
            } else {
                fedkit_core::tensor_file::read(path, global.layout())
                    .map_err(|e| Error::config("model.init", e.to_string()))
            }
            .map_err(in_file)?;
        }
        if let Some(c) = compress.as_mut() {
            if !algorithm.supports_masks() {
                let name = cfg.algorithm.get("use").and_then(|v| v.as_str()).unwrap_or_default();
                return Err(in_file(Error::config(
                    "compress",
                    format!(
                        "`{name}` cannot train under a pruning mask (its client rule tracks its own iterate or sub-models): drop [compress] or use another algorithm"
                    ),
                )));
            }
            if cfg.downlink.kind != crate::config::DownlinkKind::None {
                return Err(in_file(Error::config(
                    "compress",
                    "downlink compression sends model changes that do not keep pruned weights at zero: use downlink.use = \"none\" with [compress]",
                )));
            }
            c.start(&global).map_err(|e| in_file(e.under("compress")))?;
        }
        if let Some(&c) = cfg.output.keep_clients.iter().find(|&&c| c as usize >= fed.clients.len()) {
            let msg = format!("client {c} is not in the federation of {} clients", fed.clients.len());
            return Err(in_file(Error::config("output.keep_clients", msg)));
        }
        let n = fed.clients.len();
        let group_models = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let m = g.spec.instantiate(&fed.train.feature_shape, fed.train.classes);
                let m = m.and_then(|m| fedkit_core::model::check_fits(&*m, &fed.train, "model.use").map(|_| m));
                m.map_err(|e| in_file(in_group(e, i)))
            })
            .collect::<Result<Vec<_>>>()?;
        for (i, m) in group_models.iter().enumerate() {
            let same = std::iter::once(&model).chain(&group_models[..i]).position(|o| o.layout() == m.layout());
            if let Some(j) = same {
                let other = if j == 0 { "[model]".to_string() } else { format!("model.per_client.{}", j - 1) };
                return Err(in_file(Error::config(
                    format!("model.per_client.{i}"),
                    format!(
                        "the same architecture as {other}: merge them (clients of one architecture share one model)"
                    ),
                )));
            }
        }
        let arch_of = assign_architectures(&groups, n, cfg.seed).map_err(in_file)?;
        let mut archs: Vec<&dyn Model> = vec![model.as_ref()];
        archs.extend(group_models.iter().map(|m| m.as_ref()));
        let groups: Vec<Architecture> = group_models
            .iter()
            .enumerate()
            .map(|(g, m)| Architecture {
                model: m.clone_box(),
                init: m.init(&mut RngStream::derive(cfg.seed, "init", 0, g as u64 + 1)),
            })
            .collect();
        let workers = Workers::with_architectures(cfg.threads, &archs)?;
        let model = model.clone_box();
        let mut malicious = vec![false; n];
        if cfg.threat.ids.is_empty() {
            let n_bad = (cfg.threat.malicious_fraction * n as f64).round() as usize;
            for i in RngStream::derive(cfg.seed, "malicious", 0, 0).choose(n, n_bad) {
                malicious[i] = true;
            }
        } else {
            for &i in &cfg.threat.ids {
                let slot = malicious.get_mut(i as usize).ok_or_else(|| {
                    in_file(Error::config("threat.ids", format!("client {i} is not in the federation of {n} clients")))
                })?;
                *slot = true;
            }
        }
        if cfg.threat.has_attackers() && !malicious.contains(&true) {
            return Err(in_file(Error::config(
                "threat.malicious_fraction",
                format!("{} of {n} clients rounds to no malicious client", cfg.threat.malicious_fraction),
            )));
        }
        let mut test = ClientData::whole(fed.test.clone());
        let k = cfg.eval.test_samples;
        if k > 0 && k < test.len() {
            // A fixed random subset (test sets are often ordered by class or user).
            let mut pick = RngStream::derive(cfg.seed, "eval_subset", 0, 0).choose(test.len(), k);
            pick.sort_unstable();
            test.idx = pick.into_iter().map(|i| i as u32).collect();
        }
        let mut fed = fed;
        let local_test = if cfg.eval.clients {
            split_holdout(&mut fed.clients, cfg.eval.client_test_fraction, cfg.seed, "local_test")
        } else {
            Vec::new()
        };
        let validation = if cfg.eval.validation > 0.0 {
            split_holdout(&mut fed.clients, cfg.eval.validation, cfg.seed, "validation")
        } else {
            Vec::new()
        };
        loss.prepare(&loss_data(&fed, cfg.seed)).map_err(in_file)?;
        // Label noise only: a partition's relabelling (permuted_labels) is a task, not noise.
        let memorisation = (cfg.data.label_noise.fraction > 0.0 && fed.groups.is_none())
            .then(|| memorisation_sets(&fed.clients))
            .flatten();
        let mut stage_evals: Vec<(String, ClientData)> = Vec::new();
        for slot in &stages {
            for (name, set) in slot.stage.evals(&test).map_err(in_file)? {
                if stage_evals.iter().any(|(n, _)| *n == name) {
                    return Err(in_file(Error::config(
                        "pipeline",
                        format!("two stages define the evaluation `{name}`"),
                    )));
                }
                stage_evals.push((name, set));
            }
        }
        let name = |t: &toml::Table| t.get("use").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let info = fedkit_core::RunInfo {
            population: n,
            sampling: cfg.sampling.cohort_sampling(),
            rounds: cfg.rounds,
            algorithm: name(&cfg.algorithm),
            aggregator: name(&cfg.aggregator),
            local_step: name(&cfg.local),
        };
        for (i, slot) in stages.iter_mut().enumerate() {
            slot.stage.prepare(&info).map_err(|e| in_file(e.under(&format!("pipeline.{i}"))))?;
        }
        if cfg.secure_aggregation.protocol != SecAggProtocol::None && algorithm.reads_updates() {
            return Err(in_file(Error::config(
                "algorithm.use",
                format!(
                    "`{}` reads the individual updates on the server, which secure aggregation hides: use an algorithm whose server rule needs only the sum",
                    info.algorithm
                ),
            )));
        }
        if cfg.downlink.kind != crate::config::DownlinkKind::None && algorithm.keeps_client_models() {
            return Err(in_file(Error::config(
                "downlink.use",
                format!(
                    "`{}` clients keep models of their own and do not receive the global model that downlink compression compresses; use downlink.use = \"none\"",
                    info.algorithm
                ),
            )));
        }
        if algorithm.combines_updates_itself() && stages.iter().any(|s| s.stage.noises_every_round()) {
            return Err(in_file(Error::config(
                "pipeline",
                format!(
                    "`{}` combines or distils the individual updates itself, so the noise a DP stage adds to the aggregate would be lost or bypassed: drop the DP stage or use an algorithm that applies the aggregate",
                    info.algorithm
                ),
            )));
        }
        algorithm.check_setup(model.as_ref(), loss.is_cross_entropy()).map_err(in_file)?;
        if !group_models.is_empty() {
            check_groups(&cfg, algorithm.as_ref(), &info.algorithm).map_err(in_file)?;
            for (i, m) in group_models.iter().enumerate() {
                algorithm.check_setup(m.as_ref(), loss.is_cross_entropy()).map_err(|e| in_file(in_group(e, i)))?;
            }
        }
        let server_data = ClientData::whole(fed.train.clone());
        let unlabeled = unheld(&fed, cfg.data.unlabeled_share, cfg.seed);
        if unlabeled.is_empty() && algorithm.needs_unlabeled_data() {
            return Err(in_file(Error::config(
                "data.subsample",
                format!(
                    "`{}` uses the training samples no client holds (its distillation or proxy set), and there are none: set data.subsample below 1 (e.g. 0.8) to leave the rest to the server (and data.unlabeled_share, 1 by default, above 0)",
                    info.algorithm
                ),
            )));
        }
        let server = algorithm.new_server_state();
        let clients = (0..n).map(|_| ClientSlot::default()).collect();
        Ok(Engine {
            cfg,
            algorithm,
            aggregator,
            local,
            loss,
            stages,
            fed,
            test,
            global,
            server,
            clients,
            malicious,
            round: 0,
            records: Vec::new(),
            last_failures: Vec::new(),
            kept_updates: Vec::new(),
            local_eval: None,
            downlink: None,
            downlink_bytes: None,
            unlabeled,
            workers,
            local_test,
            validation,
            memorisation,
            stage_evals,
            server_data,
            server_model: model,
            groups,
            arch_of,
            compress,
        })
    }

    /// The architecture client `c` trains: 0 for `[model]`, g for the group g - 1 of
    /// `[[model.per_client]]`.
    pub fn architecture_of(&self, c: u32) -> usize {
        self.arch_of.get(c as usize).map_or(0, |&a| a as usize)
    }

    /// A parameter vector of architecture `a`'s layout: the global model, or the group's
    /// initial model.
    fn start_of(&self, a: usize) -> &Params {
        if a == 0 { &self.global } else { &self.groups[a - 1].init }
    }

    /// `[compress]` before `round`: prune or rewind the global model, then apply the mask.
    fn compress_before(&mut self, round: u32) -> Result<fedkit_core::Metrics> {
        let Some(c) = self.compress.as_mut() else { return Ok(fedkit_core::Metrics::new()) };
        let cx = fedkit_core::CompressCtx {
            round,
            rounds: self.cfg.rounds,
            seed: self.cfg.seed,
            model: self.server_model.as_ref(),
            feature_shape: &self.fed.train.feature_shape,
            classes: self.fed.train.classes,
        };
        let m = c.before_round(&cx, &mut self.global).map_err(|e| e.under("compress"))?;
        if let Some(mask) = c.mask() {
            mask.apply(&mut self.global);
        }
        Ok(m)
    }

    /// What each group's clients start from this round: the algorithm's model of that
    /// architecture (FedDF's prototype), else its initial parameters.
    fn group_starts(&self) -> Result<Vec<Params>> {
        self.groups
            .iter()
            .map(|g| {
                let own = self.algorithm.architecture_model(self.server.as_ref(), g.init.layout())?;
                Ok(own.filter(|p| p.layout() == g.init.layout()).unwrap_or_else(|| g.init.clone()))
            })
            .collect()
    }

    /// The model object of architecture `a` (server side).
    fn model_of(&self, a: usize) -> &dyn Model {
        if a == 0 { self.server_model.as_ref() } else { self.groups[a - 1].model.as_ref() }
    }

    /// A fresh copy of the run's model architecture (parameters are `global`).
    pub fn architecture(&self) -> Box<dyn Model> {
        self.server_model.clone_box()
    }

    /// The model client `c` would use now, as per-client evaluation defines it: the algorithm's
    /// personalised model from the client's state (`Algorithm::adapt`), else the global model.
    /// Refused for clients of another architecture; `eval.finetune_steps` is not applied.
    pub fn client_model(&self, c: u32) -> Result<Params> {
        if self.architecture_of(c) != 0 {
            return Err(Error::config(
                "model.per_client",
                format!("client {c} trains another architecture; its model is not the [model] one"),
            ));
        }
        let slot = self.clients.get(c as usize).ok_or_else(|| Error::config("client", format!("no client {c}")))?;
        let a = fedkit_core::AdaptCtx {
            round: self.round,
            client: c,
            seed: self.cfg.seed,
            global: &self.global,
            train: &self.cfg.client,
        };
        let mut model = self.architecture();
        let own = self.algorithm.adapt(
            &a,
            self.server.as_ref(),
            slot.state.as_deref(),
            model.as_mut(),
            &self.fed.clients[c as usize],
        )?;
        Ok(own.unwrap_or_else(|| self.global.clone()))
    }

    /// The worker threads (each with its own model object).
    pub(crate) fn workers_mut(&mut self) -> &mut Workers {
        &mut self.workers
    }
    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// The server's unlabeled pool (`[data] unlabeled_share` of the samples no client holds).
    pub fn unlabeled(&self) -> &ClientData {
        &self.unlabeled
    }

    /// Replace the server's unlabeled pool before the first round (membership shadows keep the
    /// target run's).
    pub fn set_unlabeled(&mut self, pool: ClientData) {
        self.unlabeled = pool;
    }

    /// Clients in the federation.
    pub fn population(&self) -> usize {
        self.fed.clients.len()
    }

    /// This round's cohort, sorted by id without repeats, and how often each member was drawn:
    /// the algorithm's choice (DRFA samples by its mixture weights, with replacement), else
    /// `per_round` clients uniformly without replacement (each drawn once).
    pub fn sample(&self, round: u32) -> Result<(Vec<u32>, Vec<u32>)> {
        let n = self.population();
        let per_round = self.cfg.sampling.per_round.min(n);
        let sc = SampleCtx { round, seed: self.cfg.seed, population: n, per_round };
        if let Some(mut c) = self.algorithm.cohort(&sc, self.server.as_ref())? {
            if self.stages.iter().any(|s| s.stage.noises_every_round()) {
                return Err(Error::config(
                    "algorithm.use",
                    "this algorithm draws its own cohort, which the DP stage's accountant does not assume (it accounts for [sampling]): use an algorithm that keeps the configured sampling",
                ));
            }
            if self.cfg.sampling.scheme == SamplingScheme::Poisson {
                return Err(Error::config(
                    "sampling.scheme",
                    "this algorithm draws its own cohort, so Poisson sampling cannot apply: use scheme = \"uniform\"",
                ));
            }
            c.sort_unstable();
            if c.is_empty() || c.last().is_some_and(|&l| l as usize >= n) {
                return Err(Error::Method(format!(
                    "round {round}: the algorithm chose an empty cohort or a client outside 0..{n}"
                )));
            }
            let mut ids: Vec<u32> = Vec::with_capacity(c.len());
            let mut draws: Vec<u32> = Vec::with_capacity(c.len());
            for id in c {
                if ids.last() == Some(&id) {
                    *draws.last_mut().expect("a draw per id") += 1;
                } else {
                    ids.push(id);
                    draws.push(1);
                }
            }
            return Ok((ids, draws));
        }
        let c = match self.cfg.sampling.scheme {
            SamplingScheme::Uniform => uniform_cohort(self.cfg.seed, round, n, per_round),
            SamplingScheme::Poisson => poisson_cohort(self.cfg.seed, round, n, self.cfg.sampling.rate),
        };
        let draws = vec![1; c.len()];
        Ok((c, draws))
    }

    /// Local epochs per cohort member this round (None: dropped straggler), following FedProx:
    /// round(K (1 - drop_percent)) clients are active; stragglers either drop out or run a number
    /// of epochs drawn uniformly from [1, E - 1].
    pub fn straggler_epochs(&self, round: u32, cohort: &[u32]) -> Vec<Option<usize>> {
        let e = self.cfg.client.epochs;
        let k = cohort.len();
        // Python's round (half to even), as the FedProx code: K = 5, drop 0.5 gives 2 active.
        let active_n = (k as f64 * (1.0 - self.cfg.sampling.drop_percent)).round_ties_even() as usize;
        let mut active = vec![false; k];
        for i in RngStream::derive(self.cfg.seed, "stragglers", round as u64, 0).choose(k, active_n) {
            active[i] = true;
        }
        let policy = self.cfg.sampling.stragglers.unwrap_or_else(|| self.algorithm.straggler_policy());
        cohort
            .iter()
            .zip(active)
            .map(|(&c, a)| match (a, policy) {
                (true, _) => Some(e),
                (false, StragglerPolicy::Drop) => None,
                (false, StragglerPolicy::Partial) => {
                    let mut r = RngStream::derive(self.cfg.seed, "straggler_epochs", round as u64, c as u64);
                    Some(if e > 1 { 1 + r.below(e as u64 - 1) as usize } else { 1 })
                }
            })
            .collect()
    }

    /// Run one round (DESIGN.md section 5): sample, broadcast, clients, cohort stages,
    /// aggregate, server stages, server rule, evaluate; returns its metrics and timings.
    pub fn run_round(&mut self) -> Result<(Record, Timings)> {
        let t0 = Instant::now();
        let compressed = self.compress_before(self.round + 1)?;
        let plan = self.plan(self.round + 1)?;
        let broadcast = self.algorithm.broadcast(&self.round_ctx(&plan), self.server.as_ref())?;
        let personal = self.personal_downlinks(&plan, &broadcast)?;
        let sizes: Vec<usize> = plan.run_ids.iter().map(|&c| self.fed.clients[c as usize].len()).collect();
        let r = plan_ctx(&plan, &self.global, self.cfg.seed, self.fed.clients.len());
        for s in self.stages.iter_mut() {
            s.stage.on_round_start(&r, &sizes)?;
        }
        let secure = self.cfg.secure_aggregation.protocol != SecAggProtocol::None;
        if self.cfg.downlink.kind != crate::config::DownlinkKind::None {
            let mut dl = self.downlink.take().unwrap_or_else(|| crate::downlink::DownlinkState::new(&self.global));
            dl.broadcast(&self.cfg.downlink, self.cfg.seed, plan.round, &self.global)?;
            let dense = fedkit_core::wire::dense_len(self.global.len(), &Extras::default())?;
            let bytes = plan.run_ids.iter().map(|&c| dl.catch_up(c, plan.round, dense)).sum();
            self.downlink = Some(dl);
            self.downlink_bytes = Some(bytes);
        }
        let starts = self.group_starts()?;
        let results = self.run_clients(&plan, &broadcast, &personal, &starts);
        let t_clients = t0.elapsed().as_secs_f64();
        let (mut ups, failed) = split(results);
        if secure {
            // Nothing but the masked update leaves a client.
            ups.iter_mut().for_each(|u| u.metrics.clear());
        }
        let bytes_up = crate::receive::receive(&|c| self.start_of(self.architecture_of(c)).layout(), &mut ups, secure)?;
        self.kept_updates = ups.iter().filter(|u| self.cfg.output.keep_clients.contains(&u.client)).cloned().collect();
        let mut rec = self.client_metrics(&plan, &broadcast, &personal, &ups, &failed)?;
        for (k, v) in &compressed {
            rec.set(k, *v);
        }
        rec.set("bytes_up", bytes_up as f64);
        self.last_failures = failed;
        let t1 = Instant::now();
        self.server_round(&plan, &mut ups, &mut rec)?;
        let t_agg = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        self.round = plan.round;
        self.evaluate_round(&mut rec)?;
        let t_eval = t2.elapsed().as_secs_f64();
        self.records.push(rec.clone());
        let total_s = t0.elapsed().as_secs_f64();
        Ok((rec, Timings { round: plan.round, clients_s: t_clients, aggregate_s: t_agg, eval_s: t_eval, total_s }))
    }

    /// Who takes part in `round` and with how many local epochs.
    fn plan(&self, round: u32) -> Result<RoundPlan> {
        let (mut cohort, mut draws) = self.sample(round)?;
        let active = self.cfg.threat.active(round);
        if active && self.cfg.threat.per_round_min > 0 {
            self.force_attackers(round, &mut cohort, &mut draws);
        }
        let attacking = if active { self.malicious.clone() } else { vec![false; self.malicious.len()] };
        let epochs = self.straggler_epochs(round, &cohort);
        let (mut running, mut run_draws) = (Vec::new(), Vec::new());
        for ((&c, e), &d) in cohort.iter().zip(&epochs).zip(&draws) {
            if let Some(e) = e {
                running.push((c, *e));
                run_draws.push(d);
            }
        }
        let run_ids = running.iter().map(|r| r.0).collect();
        let stragglers = epochs.iter().filter(|e| e.is_none_or(|e| e < self.cfg.client.epochs)).count();
        Ok(RoundPlan { round, sampled: cohort.len(), stragglers, running, run_ids, run_draws, attacking })
    }

    /// Put at least `threat.per_round_min` malicious clients into `cohort`, each replacing a
    /// benign member (both drawn from the stream `threat_fill`), keeping it sorted.
    fn force_attackers(&self, round: u32, cohort: &mut Vec<u32>, draws: &mut Vec<u32>) {
        let want = self.cfg.threat.per_round_min;
        let have = cohort.iter().filter(|&&c| self.malicious[c as usize]).count();
        if have >= want {
            return;
        }
        let mut rng = RngStream::derive(self.cfg.seed, "threat_fill", round as u64, 0);
        let outside: Vec<u32> =
            (0..self.population() as u32).filter(|c| self.malicious[*c as usize] && !cohort.contains(c)).collect();
        let benign: Vec<usize> = (0..cohort.len()).filter(|&i| !self.malicious[cohort[i] as usize]).collect();
        let k = (want - have).min(outside.len()).min(benign.len());
        let add: Vec<u32> = rng.choose(outside.len(), k).into_iter().map(|i| outside[i]).collect();
        let mut drop: Vec<usize> = rng.choose(benign.len(), k).into_iter().map(|i| benign[i]).collect();
        drop.sort_unstable_by(|a, b| b.cmp(a));
        for i in drop {
            cohort.remove(i);
            draws.remove(i);
        }
        for c in add {
            let at = cohort.partition_point(|&x| x < c);
            cohort.insert(at, c);
            draws.insert(at, 1);
        }
    }

    /// The server's view of a planned round.
    fn round_ctx<'a>(&'a self, plan: &'a RoundPlan) -> RoundCtx<'a> {
        plan_ctx(plan, &self.global, self.cfg.seed, self.population())
    }

    /// Each running client's own downlink ([`fedkit_core::Algorithm::personal_downlink`]): its
    /// payloads merged over the broadcast's, and the model values it receives; `None` for a
    /// client that gets the broadcast alone.
    fn personal_downlinks(&self, plan: &RoundPlan, broadcast: &Extras) -> Result<Vec<Option<(Extras, usize)>>> {
        let r = self.round_ctx(plan);
        let mut out = Vec::with_capacity(plan.run_ids.len());
        for &c in &plan.run_ids {
            let a = self.architecture_of(c);
            let size = self.start_of(a).len();
            let own = self.algorithm.personal_downlink(&r, self.server.as_ref(), c, self.model_of(a))?;
            out.push(match own {
                Some(p) => {
                    let mut extras = broadcast.clone();
                    extras.0.extend(p.extras.0);
                    Some((extras, p.model_values.unwrap_or(size)))
                }
                // A group's client receives its architecture's model.
                None if a != 0 => Some((broadcast.clone(), size)),
                None => None,
            });
        }
        Ok(out)
    }

    /// 1. The cohort's client steps, in parallel on the workers; each client takes its
    /// persistent state out and puts it back after.
    fn run_clients(
        &mut self,
        plan: &RoundPlan,
        broadcast: &Extras,
        personal: &[Option<(Extras, usize)>],
        starts: &[Params],
    ) -> Vec<std::result::Result<Update, ClientFailure>> {
        let slots: Vec<Mutex<ClientSlot>> =
            plan.run_ids.iter().map(|&c| Mutex::new(std::mem::take(&mut self.clients[c as usize]))).collect();
        let (algo, stages, fed, global, cfg, malicious, step, loss) = (
            self.algorithm.as_ref(),
            &self.stages,
            &self.fed,
            self.downlink.as_ref().map_or(&self.global, |d| &d.shadow),
            &self.cfg,
            &plan.attacking,
            self.local.as_ref(),
            self.loss.as_ref(),
        );
        let arch_of = &self.arch_of;
        let arch = move |j: usize| arch_of.get(plan.running[j].0 as usize).map_or(0, |&a| a as usize);
        let (round, seed, running, slots_ref) = (plan.round, cfg.seed, &plan.running, &slots);
        let mask = self.compress.as_ref().and_then(|c| c.mask());
        let secure = cfg.secure_aggregation.protocol != SecAggProtocol::None;
        let results = self.workers.map_on(running.len(), arch, move |model, j| {
            let (client, epochs) = running[j];
            let cx = ClientCtx {
                round,
                client,
                seed,
                global: match arch(j) {
                    0 => global,
                    a => &starts[a - 1],
                },
                broadcast: personal[j].as_ref().map_or(broadcast, |p| &p.0),
                train: &cfg.client,
                epochs,
                malicious: malicious[client as usize],
                step,
                loss,
                train_hook: None,
            };
            let mut slot = slots_ref[j].lock().unwrap_or_else(|p| p.into_inner());
            // The mask indexes `[model]`'s layout (clients of other architectures train unmasked).
            let mask = mask.filter(|_| arch(j) == 0);
            client_step(algo, stages, mask, model, &cx, &fed.clients[client as usize], &mut slot)
                .and_then(|mut u| {
                    if mask.is_some() && !secure {
                        send_sparse(&mut u)?;
                    }
                    Ok(u)
                })
                .map_err(|e| ClientFailure { client, reason: e.to_string() })
        });
        for (&c, slot) in plan.run_ids.iter().zip(slots) {
            self.clients[c as usize] = slot.into_inner().unwrap_or_else(|p| p.into_inner());
        }
        results
    }

    /// The round's participation, traffic and client-side metrics (`client_loss` and the
    /// cohort means `client_<name>` of the other per-update metrics).
    fn client_metrics(
        &self,
        plan: &RoundPlan,
        broadcast: &Extras,
        personal: &[Option<(Extras, usize)>],
        ups: &[Update],
        failed: &[ClientFailure],
    ) -> Result<Record> {
        let mut rec = Record::new(plan.round);
        rec.set("sampled", plan.sampled as f64);
        rec.set("participants", ups.len() as f64);
        rec.set("stragglers", plan.stragglers as f64);
        rec.set("failed", failed.len() as f64);
        rec.set("bytes_down", self.bytes_down(broadcast, personal)? as f64);
        let w: f64 = ups.iter().map(|u| u.weight as f64).sum();
        if w > 0.0 && ups.iter().any(|u| u.metrics.contains_key("loss")) {
            let l: f64 = ups.iter().map(|u| u.weight as f64 * u.metrics.get("loss").copied().unwrap_or(0.0)).sum();
            rec.set("client_loss", l / w);
        }
        let mut keys: Vec<&String> = ups.iter().flat_map(|u| u.metrics.keys()).filter(|k| *k != "loss").collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let v: Vec<f64> = ups.iter().filter_map(|u| u.metrics.get(k).copied()).collect();
            rec.set(&format!("client_{k}"), v.iter().sum::<f64>() / v.len() as f64);
        }
        if let Some(groups) = &self.fed.groups {
            let pairs: Option<Vec<(usize, usize)>> = ups
                .iter()
                .map(|u| Some((u.metrics.get("cluster").copied()? as usize, groups[u.client as usize] as usize)))
                .collect();
            if let Some(pairs) = pairs.filter(|p| !p.is_empty()) {
                rec.set("cluster_acc", cluster_accuracy(&pairs));
            }
        }
        Ok(rec)
    }

    /// The round's downlink traffic: every running client's message (the dense model, or what
    /// `[downlink]` sent, plus the algorithm's extras in a message of their own), with a
    /// personal downlink's own payloads and model size for the clients that have one.
    fn bytes_down(&self, broadcast: &Extras, personal: &[Option<(Extras, usize)>]) -> Result<usize> {
        let mut total = self.downlink_bytes.unwrap_or(0);
        // A pruned global model goes down as a sparse message when that is shorter.
        let masked = self.compress.as_ref().and_then(|c| c.mask()).is_some();
        let model_len = |extras: &Extras| -> Result<usize> {
            use fedkit_core::wire;
            let dense = wire::dense_len(self.global.len(), extras)?;
            if !masked {
                return Ok(dense);
            }
            let m = wire::sparse_message(
                wire::Kind::Broadcast,
                wire::layout_id(self.global.layout()),
                self.global.as_slice(),
                extras,
            );
            Ok(wire::encode(&m)?.len().min(dense))
        };
        for p in personal {
            let (extras, values) = p.as_ref().map_or((broadcast, self.global.len()), |(e, v)| (e, *v));
            total += match self.downlink_bytes {
                Some(_) if values != self.global.len() => {
                    return Err(Error::config(
                        "downlink.use",
                        format!(
                            "{} sends some clients {values} of the model's {} values, which downlink compression of \
                             the global model cannot carry; use downlink.use = \"none\"",
                            self.cfg.algorithm.get("use").and_then(|v| v.as_str()).unwrap_or("the algorithm"),
                            self.global.len()
                        ),
                    ));
                }
                Some(_) if extras.0.is_empty() => 0,
                Some(_) => fedkit_core::wire::dense_len(0, extras)?,
                // Nothing to send: a client that keeps its own model and gets no payload.
                None if values == 0 && extras.0.is_empty() => 0,
                None if values == self.global.len() => model_len(extras)?,
                None => fedkit_core::wire::dense_len(values, extras)?,
            };
        }
        Ok(total)
    }

    /// 2-5. Cohort stages, aggregation, server stages (reverse order), the server rule; the
    /// server rule sees only the updates the aggregator accepted.
    fn server_round(&mut self, plan: &RoundPlan, ups: &mut Vec<Update>, rec: &mut Record) -> Result<()> {
        let round = plan.round;
        let noised = self.stages.iter().any(|s| s.stage.noises_every_round());
        // Updates of other architectures go to the server rule alone.
        let (mut same, others): (Vec<Update>, Vec<Update>) =
            std::mem::take(ups).into_iter().partition(|u| self.architecture_of(u.client) == 0);
        std::mem::swap(ups, &mut same);
        if ups.is_empty() && others.is_empty() && !(noised && self.last_failures.is_empty()) {
            return match self.last_failures.first() {
                Some(f) => Err(Error::Method(format!(
                    "round {round}: every client failed; first: client {}: {}",
                    f.client, f.reason
                ))),
                None => Ok(()),
            };
        }
        let r = plan_ctx(plan, &self.global, self.cfg.seed, self.fed.clients.len());
        for s in self.stages.iter_mut() {
            s.stage.on_cohort(&r, ups)?;
        }
        let mut view = AggregatorView {
            model: self.server_model.as_mut(),
            server_data: &self.server_data,
            train: &self.cfg.client,
            workers: Some(&mut self.workers),
        };
        let secure = self.cfg.secure_aggregation.protocol != SecAggProtocol::None;
        let mut agg = if secure && !ups.is_empty() {
            crate::secure::secure_aggregate(&self.cfg, &r, &self.global, ups, rec, self.workers.len())?
        } else if ups.is_empty() {
            // An empty Poisson cohort under DP: a zero aggregate, which the DP stage noises.
            Aggregate {
                delta: self.global.zeros_like(),
                weight: 0.0,
                extras: Extras::default(),
                accepted: Vec::new(),
                metrics: Metrics::new(),
                weighting: Weighting::UpdateWeights,
            }
        } else {
            self.aggregator.aggregate_with(&r, ups, &mut view)?
        };
        if self.aggregator.filters() && !secure {
            detection_metrics(ups, &agg.accepted, &plan.attacking, rec);
        }
        for s in self.stages.iter_mut().rev() {
            s.stage.on_aggregate(&r, &mut agg)?;
        }
        // Under secure aggregation the server rule sees no individual update.
        let mut accepted: Vec<Update> = if secure {
            Vec::new()
        } else {
            ups.iter().filter(|u| agg.accepted.contains(&u.client)).cloned().collect()
        };
        let n_others = others.len();
        accepted.extend(others);
        accepted.sort_by_key(|u| u.client);
        let mut global = self.global.clone();
        let mut view = ServerView {
            updates: &accepted,
            model: self.server_model.as_mut(),
            clients: &self.fed.clients,
            unlabeled: Some(&self.unlabeled),
            architectures: &mut self.groups,
        };
        let m = self.algorithm.server_step(&r, &mut global, self.server.as_mut(), &agg, &mut view)?;
        if let Some(mask) = self.compress.as_ref().and_then(|c| c.mask()) {
            // Pruned weights stay zero whatever the server rule did.
            mask.apply(&mut global);
        }
        if !global.is_finite() {
            return Err(Error::Method(format!(
                "round {round}: the global model diverged (non-finite values); lower client.lr"
            )));
        }
        self.global = global;
        rec.set("accepted", (agg.accepted.len() + n_others) as f64);
        for (k, v) in agg.metrics.iter().chain(m.iter()) {
            if crate::record::STANDARD_COLUMNS.contains(&k.as_str()) {
                return Err(Error::Method(format!("metric `{k}` of a method collides with a standard column")));
            }
            rec.set(k, *v);
        }
        Ok(())
    }

    /// 6. Evaluation at evaluation rounds (and after the last), the sharpness after the last.
    fn evaluate_round(&mut self, rec: &mut Record) -> Result<()> {
        let round = self.round;
        if round % self.cfg.eval.every == 0 || round == self.cfg.rounds {
            self.evaluate_into(rec)?;
        }
        if round == self.cfg.rounds && self.cfg.eval.hessian_samples > 0 {
            let pooled = ClientData::whole(self.fed.train.clone());
            let (n, iters) = (self.cfg.eval.hessian_samples, self.cfg.eval.hessian_iters.max(1));
            let mut rng = RngStream::derive(self.cfg.seed, "hessian", round as u64, 0);
            let top = fedkit_core::hessian_top_eigenvalue(
                self.server_model.as_mut(),
                &self.global,
                &pooled,
                n,
                iters,
                &mut rng,
            )?;
            rec.set("hessian_top", top);
        }
        Ok(())
    }

    /// Evaluate the initial model as round 0 (when `eval.initial`).
    pub fn evaluate_initial(&mut self) -> Result<Option<Record>> {
        if !self.cfg.eval.initial || self.round != 0 {
            return Ok(None);
        }
        let mut rec = Record::new(0);
        self.evaluate_into(&mut rec)?;
        self.records.push(rec.clone());
        Ok(Some(rec))
    }

    /// Test loss/accuracy (and training loss/accuracy over all clients) of the global model.
    pub fn evaluate_into(&mut self, rec: &mut Record) -> Result<()> {
        let bs = self.cfg.eval.batch_size;
        let predict = self.loss.adjusts_predictions().then_some(self.loss.as_ref());
        let test = evaluate_parallel(
            &mut self.workers,
            &self.global,
            std::slice::from_ref(&self.test),
            usize::MAX,
            bs,
            predict,
        )?;
        if self.cfg.eval.train_loss {
            let train = evaluate_parallel(&mut self.workers, &self.global, &self.fed.clients, usize::MAX, bs, predict)?;
            rec.set("train_loss", train.loss());
            rec.set("train_acc", train.accuracy());
        }
        rec.set("test_loss", test.loss());
        rec.set("test_acc", test.accuracy());
        if !self.validation.is_empty() {
            let val = evaluate_parallel(&mut self.workers, &self.global, &self.validation, usize::MAX, bs, predict)?;
            rec.set("val_loss", val.loss());
            rec.set("val_acc", val.accuracy());
        }
        if self.cfg.eval.balanced {
            let mut sets = vec![("test_acc_balanced", std::slice::from_ref(&self.test))];
            if !self.validation.is_empty() {
                sets.push(("val_acc_balanced", &self.validation[..]));
            }
            for (key, data) in sets {
                let per =
                    self.workers.map(data.len(), |model, j| class_accuracy(model, &self.global, &data[j], bs, predict));
                let mut total = vec![[0usize; 2]; self.fed.train.classes];
                for p in per {
                    for (t, c) in total.iter_mut().zip(p?) {
                        t[0] += c[0];
                        t[1] += c[1];
                    }
                }
                rec.set(key, balanced_accuracy(&total));
            }
        }
        for (key, set) in &self.stage_evals {
            let s =
                evaluate_parallel(&mut self.workers, &self.global, std::slice::from_ref(set), usize::MAX, bs, predict)?;
            rec.set(key, s.accuracy());
        }
        if let Some([clean, noisy, truth]) = &self.memorisation {
            for (key, sets) in [("train_acc_clean", clean), ("noisy_memorized", noisy), ("noisy_true", truth)] {
                let s = evaluate_parallel(&mut self.workers, &self.global, sets, usize::MAX, bs, predict)?;
                rec.set(key, s.accuracy());
            }
        }
        if self.cfg.eval.critical_samples > 0 {
            let pooled = ClientData::whole(self.fed.train.clone());
            let e = &self.cfg.eval;
            let mut rng = RngStream::derive(self.cfg.seed, "critical", 0, 0);
            let ratio = fedkit_core::critical_sample_ratio(
                self.server_model.as_mut(),
                &self.global,
                &pooled,
                e.critical_samples,
                e.critical_radius as f32,
                e.critical_steps,
                &mut rng,
            )?;
            rec.set("critical_ratio", ratio);
        }
        for g in 0..self.groups.len() {
            let layout = self.groups[g].init.layout().clone();
            if let Some(p) = self.algorithm.architecture_model(self.server.as_ref(), &layout)? {
                let s =
                    evaluate_parallel_on(&mut self.workers, g + 1, &p, std::slice::from_ref(&self.test), bs, predict)?;
                rec.set(&format!("test_acc_group{g}"), s.accuracy());
                rec.set(&format!("test_loss_group{g}"), s.loss());
            }
        }
        let zeros = self.global.as_slice().iter().filter(|v| **v == 0.0).count();
        rec.set("model_zeros", zeros as f64 / self.global.len().max(1) as f64);
        if !self.local_test.is_empty() {
            self.evaluate_clients_into(rec)?;
        }
        Ok(())
    }

    /// Every client's model (personalised where the algorithm has one) on its local test split.
    fn evaluate_clients_into(&mut self, rec: &mut Record) -> Result<()> {
        let (bs, seed, round) = (self.cfg.eval.batch_size, self.cfg.seed, self.round);
        let (algo, clients, tests) = (self.algorithm.as_ref(), &self.clients, &self.local_test);
        let (server, train, data) = (self.server.as_ref(), &self.cfg.client, &self.fed.clients);
        let finetune = self.cfg.eval.finetune_steps;
        let predict = self.loss.adjusts_predictions().then_some(self.loss.as_ref());
        let (arch_of, global0) = (&self.arch_of, &self.global);
        let starts = self.group_starts()?;
        let arch = |c: usize| arch_of.get(c).map_or(0, |&a| a as usize);
        let stats = self.workers.map_on(tests.len(), arch, |model, c| {
            let global = match arch(c) {
                0 => global0,
                a => &starts[a - 1],
            };
            let a = fedkit_core::AdaptCtx { round, client: c as u32, seed, global, train };
            let mut own = algo.adapt(&a, server, clients[c].state.as_deref(), model, &data[c])?;
            if finetune > 0 {
                let mut w = own.take().unwrap_or_else(|| global.clone());
                let cfg = fedkit_core::LocalTrain { max_steps: finetune, ..train.clone() };
                let epochs = finetune.div_ceil(data[c].len().div_ceil(cfg.batch_size.max(1)).max(1));
                let mut rng = a.rng("finetune");
                fedkit_core::local_train(
                    model,
                    &mut w,
                    &data[c],
                    &cfg,
                    epochs,
                    &mut fedkit_core::NoHook,
                    &fedkit_core::PlainStep,
                    round,
                    &mut rng,
                )?;
                own = Some(w);
            }
            let mut rng = RngStream::derive(seed, "local_eval", 0, c as u64);
            let p = own.as_ref().unwrap_or(global);
            match predict {
                Some(loss) => {
                    let mut m = AdjustedPrediction { inner: model, loss };
                    evaluate_in_domain(&mut m, p, &tests[c], 0..tests[c].len(), bs, &mut rng)
                }
                None => evaluate_in_domain(model, p, &tests[c], 0..tests[c].len(), bs, &mut rng),
            }
        });
        let stats: Vec<EvalStats> = stats.into_iter().collect::<Result<_>>()?;
        self.local_eval = Some(LocalEval {
            round: self.round,
            clients: (0..stats.len() as u32).filter(|&c| stats[c as usize].count > 0).collect(),
            acc: stats.iter().filter(|s| s.count > 0).map(EvalStats::accuracy).collect(),
            loss: stats.iter().filter(|s| s.count > 0).map(EvalStats::loss).collect(),
        });
        let mut accs: Vec<f64> = stats.iter().filter(|s| s.count > 0).map(EvalStats::accuracy).collect();
        let losses: Vec<f64> = stats.iter().filter(|s| s.count > 0).map(EvalStats::loss).collect();
        if accs.is_empty() {
            return Ok(());
        }
        accs.sort_by(f64::total_cmp);
        let n = accs.len() as f64;
        rec.set("local_acc_mean", accs.iter().sum::<f64>() / n);
        rec.set("local_acc_min", accs[0]);
        rec.set("local_acc_p10", accs[((n - 1.0) * 0.1).floor() as usize]);
        rec.set("local_loss_mean", losses.iter().sum::<f64>() / n);
        rec.set("local_loss_max", losses.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        Ok(())
    }
}

/// Every client's architecture under `[[model.per_client]]` (0: `[model]`, g: group g - 1): first
/// the listed clients, then each `share` group takes round(share n) of the unlisted clients in
/// a seeded random order (stream `model_groups`).
fn assign_architectures(groups: &[crate::config::ModelGroup], n: usize, seed: u64) -> Result<Vec<u16>> {
    let mut arch = vec![0u16; n];
    let mut listed = vec![false; n];
    for (g, group) in groups.iter().enumerate() {
        for &c in &group.clients {
            let key = format!("model.per_client.{g}.clients");
            let slot = listed
                .get_mut(c as usize)
                .ok_or_else(|| Error::config(&key, format!("client {c} is not in the federation of {n} clients")))?;
            if *slot {
                return Err(Error::config(
                    &key,
                    format!("client {c} is listed twice (in this group or an earlier one)"),
                ));
            }
            *slot = true;
            arch[c as usize] = g as u16 + 1;
        }
    }
    let free: Vec<usize> =
        RngStream::derive(seed, "model_groups", 0, 0).permutation(n).into_iter().filter(|&c| !listed[c]).collect();
    let mut at = 0;
    for (g, group) in groups.iter().enumerate() {
        let Some(share) = group.share else { continue };
        let k = ((share * n as f64).round() as usize).min(free.len() - at);
        if k == 0 {
            return Err(Error::config(
                format!("model.per_client.{g}.share"),
                format!("{share} of {n} clients rounds to no client that another group does not hold"),
            ));
        }
        free[at..at + k].iter().for_each(|&c| arch[c] = g as u16 + 1);
        at += k;
    }
    Ok(arch)
}

/// A group's model error with its key under `model.per_client.<i>` (models name `model.*`).
fn in_group(e: Error, i: usize) -> Error {
    match e {
        Error::Config { file, key, msg } => {
            let rest = key.strip_prefix("model").filter(|r| r.is_empty() || r.starts_with('.'));
            let key = match rest {
                Some(r) => format!("model.per_client.{i}{r}"),
                None if key.contains('.') => key,
                None => format!("model.per_client.{i}.{key}"),
            };
            Error::Config { file, key, msg }
        }
        other => other,
    }
}

/// Refuse `[[model.per_client]]` with what averages or masks one layout: an algorithm that does not
/// support several architectures (naming those that do), secure aggregation, downlink
/// compression.
fn check_groups(cfg: &RunConfig, algorithm: &dyn DynAlgorithm, name: &str) -> Result<()> {
    if !algorithm.supports_architectures() {
        let able: Vec<&str> = fedkit_methods::algorithms()
            .iter()
            .filter(|e| {
                (e.build)(&toml::Table::new(), &mut toml::Table::new()).is_ok_and(|a| a.supports_architectures())
            })
            .map(|e| e.name)
            .collect();
        return Err(Error::config(
            "model.per_client",
            format!(
                "`{name}` combines models of one architecture; clients of several architectures run with: {}",
                able.join(", ")
            ),
        ));
    }
    if cfg.aggregator.get("use").and_then(|v| v.as_str()) != Some("mean") {
        return Err(Error::config(
            "model.per_client",
            "the aggregator compares updates of one layout and would see only the [model] clients': use aggregator.use = \"mean\" with clients of several architectures",
        ));
    }
    if cfg.secure_aggregation.protocol != SecAggProtocol::None {
        return Err(Error::config(
            "model.per_client",
            "secure aggregation sums masked updates of one layout: drop the model groups or secure aggregation",
        ));
    }
    if cfg.downlink.kind != crate::config::DownlinkKind::None {
        return Err(Error::config(
            "model.per_client",
            "downlink compression tracks one global model: use downlink.use = \"none\" with model groups",
        ));
    }
    Ok(())
}

/// The final model of the run in `dir`, checked to have the layout of `fresh` (names and shapes).
fn initial_model(dir: &std::path::Path, fresh: &Params, key: &str) -> Result<Params> {
    let (_, p) = crate::checkpoint::checkpoint_global(dir).map_err(|e| Error::config(key, e.to_string()))?;
    let shape = |q: &Params| -> Vec<(String, Vec<usize>)> {
        q.layout().entries().iter().map(|e| (e.name.clone(), e.shape.clone())).collect()
    };
    if shape(&p) != shape(fresh) {
        return Err(Error::config(
            key,
            format!(
                "{}'s model has entries {:?}, this run's model {:?}",
                dir.display(),
                shape(&p).iter().map(|e| format!("{}{:?}", e.0, e.1)).collect::<Vec<_>>(),
                shape(fresh).iter().map(|e| format!("{}{:?}", e.0, e.1)).collect::<Vec<_>>()
            ),
        ));
    }
    Params::from_vec(fresh.layout().clone(), p.as_slice().to_vec())
}

/// The server's unlabeled pool (their labels are never read): `share` of the training samples
/// that no client trains on (the rest of a subsampled data set, and the clients' held-out test
/// and validation splits: a known gap, see docs/design.md), a seeded random subset, in index
/// order.
fn unheld(fed: &Federation, share: f64, seed: u64) -> ClientData {
    let mut held = vec![false; fed.train.len()];
    for c in &fed.clients {
        c.idx.iter().for_each(|&i| held[i as usize] = true);
    }
    let mut idx: Vec<u32> = (0..fed.train.len() as u32).filter(|&i| !held[i as usize]).collect();
    if share < 1.0 && !idx.is_empty() {
        let k = ((idx.len() as f64 * share).round() as usize).clamp(1, idx.len());
        let mut keep = RngStream::derive(seed, "unlabeled_share", 0, 0).choose(idx.len(), k);
        keep.sort_unstable();
        idx = keep.into_iter().map(|j| idx[j]).collect();
    }
    ClientData { idx: idx.into(), ..ClientData::whole(fed.train.clone()) }
}

/// What the loss may know before training: the federation's training samples per class and a
/// server-side reference split (512 samples of the pooled training data, a fixed random subset).
fn loss_data(fed: &Federation, seed: u64) -> LossData {
    let mut class_counts = vec![0usize; fed.train.classes];
    for c in &fed.clients {
        for (k, n) in fed.train.label_histogram(&c.idx).into_iter().enumerate() {
            class_counts[k] += n;
        }
    }
    let pooled: Vec<u32> = fed.clients.iter().flat_map(|c| c.idx.iter().copied()).collect();
    let take = pooled.len().min(512);
    let reference = RngStream::derive(seed, "loss_reference", 0, 0).choose(pooled.len(), take);
    let idx: std::sync::Arc<[u32]> = reference.into_iter().map(|i| pooled[i]).collect();
    LossData { class_counts, reference: Some(ClientData { idx, ..ClientData::whole(fed.train.clone()) }) }
}

/// A filtering aggregator's detection rates against the threat model: `detect_tpr`, the share of
/// the malicious participants it rejected, and `detect_fpr`, the share of the benign ones (each
/// absent when the cohort had none of that kind).
fn detection_metrics(ups: &[Update], accepted: &[u32], malicious: &[bool], rec: &mut Record) {
    let (mut bad, mut bad_out, mut good, mut good_out) = (0usize, 0usize, 0usize, 0usize);
    for u in ups {
        let rejected = !accepted.contains(&u.client);
        if malicious.get(u.client as usize).copied().unwrap_or(false) {
            (bad, bad_out) = (bad + 1, bad_out + rejected as usize);
        } else {
            (good, good_out) = (good + 1, good_out + rejected as usize);
        }
    }
    if bad > 0 {
        rec.set("detect_tpr", bad_out as f64 / bad as f64);
    }
    if good > 0 {
        rec.set("detect_fpr", good_out as f64 / good as f64);
    }
}

/// With label noise (some client has its own labels): each client's clean samples, its
/// relabelled samples with their noisy labels, and the same samples with their true labels.
fn memorisation_sets(clients: &[ClientData]) -> Option<[Vec<ClientData>; 3]> {
    clients.iter().any(|c| c.labels.is_some()).then(|| {
        let (mut clean, mut noisy, mut truth) = (Vec::new(), Vec::new(), Vec::new());
        for c in clients {
            let (keep, flip): (Vec<usize>, Vec<usize>) =
                (0..c.len()).partition(|&p| c.label(p) == c.data.y[c.idx[p] as usize]);
            clean.push(c.subset(&keep));
            let relabelled = c.subset(&flip);
            truth.push(ClientData { labels: None, ..relabelled.clone() });
            noisy.push(relabelled);
        }
        [clean, noisy, truth]
    })
}

/// Hold out `fraction` of each client's samples (a seeded random subset from the stream
/// `purpose`, at least one sample when the client has two or more) as its local test or
/// validation split; the rest stays its training data.
fn split_holdout(clients: &mut [ClientData], fraction: f64, seed: u64, purpose: &str) -> Vec<ClientData> {
    clients
        .iter_mut()
        .enumerate()
        .map(|(c, d)| {
            let n = d.idx.len();
            let k = if n >= 2 { ((n as f64 * fraction).round() as usize).clamp(1, n - 1) } else { 0 };
            let mut order = RngStream::derive(seed, purpose, 0, c as u64).permutation(n);
            let (test, train) = order.split_at_mut(k);
            test.sort_unstable();
            train.sort_unstable();
            let t = d.subset(test);
            *d = d.subset(train);
            t
        })
        .collect()
}

/// Evaluate `params` on `sets` (at most `limit` samples of each), in fixed chunks spread over
/// the workers, summed in chunk order; with `predict`, correct predictions are counted with that
/// loss's adjusted logits (post-hoc logit adjustment).
pub fn evaluate_parallel(
    workers: &mut Workers,
    params: &Params,
    sets: &[ClientData],
    limit: usize,
    batch: usize,
    predict: Option<&dyn Loss>,
) -> Result<EvalStats> {
    evaluate_sets(workers, 0, params, sets, limit, batch, predict)
}

/// [`evaluate_parallel`] of the whole sets on the workers' models of architecture `arch`.
fn evaluate_parallel_on(
    workers: &mut Workers,
    arch: usize,
    params: &Params,
    sets: &[ClientData],
    batch: usize,
    predict: Option<&dyn Loss>,
) -> Result<EvalStats> {
    evaluate_sets(workers, arch, params, sets, usize::MAX, batch, predict)
}

fn evaluate_sets(
    workers: &mut Workers,
    arch: usize,
    params: &Params,
    sets: &[ClientData],
    limit: usize,
    batch: usize,
    predict: Option<&dyn Loss>,
) -> Result<EvalStats> {
    const CHUNK: usize = 1024;
    let jobs: Vec<(usize, std::ops::Range<usize>)> = sets
        .iter()
        .enumerate()
        .flat_map(|(s, d)| {
            let n = d.len().min(limit);
            (0..n).step_by(CHUNK).map(move |a| (s, a..(a + CHUNK).min(n)))
        })
        .collect();
    let parts = workers.map_on(
        jobs.len(),
        |_| arch,
        |model, j| {
            let (s, r) = jobs[j].clone();
            match predict {
                Some(loss) => {
                    evaluate_range(&mut AdjustedPrediction { inner: model, loss }, params, &sets[s], r, batch)
                }
                None => evaluate_range(model, params, &sets[s], r, batch),
            }
        },
    );
    parts.into_iter().try_fold(EvalStats::default(), |acc, p| Ok(acc.merge(p?)))
}

/// One client's work in a round, shared by the simulator and the networked client:
/// `on_data` stages -> the algorithm's client rule -> `on_update` stages (declared order) ->
/// the algorithm's `commit` of its client state from the update as sent.
pub fn client_step(
    algo: &dyn DynAlgorithm,
    stages: &[StageSlot],
    mask: Option<&fedkit_core::Mask>,
    model: &mut dyn Model,
    cx: &ClientCtx,
    data: &ClientData,
    slot: &mut ClientSlot,
) -> Result<Update> {
    if slot.stage_mem.len() != stages.len() {
        slot.stage_mem.resize(stages.len(), Extras::default());
    }
    let mut data = std::borrow::Cow::Borrowed(data);
    for (s, mem) in stages.iter().zip(slot.stage_mem.iter_mut()) {
        if s.applies(cx.malicious) {
            s.stage.on_data_with_model(cx, model, data.to_mut(), mem)?;
        }
    }
    let state = slot.state.get_or_insert_with(|| algo.new_client_state());
    let mut u = {
        let mut hooks: Vec<Box<dyn GradHook + '_>> = Vec::new();
        if let Some(m) = mask {
            hooks.push(Box::new(fedkit_core::MaskHook(m)));
        }
        let mut step: Option<Box<dyn LocalStep + '_>> = None;
        for (s, mem) in stages.iter().zip(&slot.stage_mem) {
            if s.applies(cx.malicious) {
                hooks.extend(s.stage.train_hook(cx, mem)?);
                if let Some(own) = s.stage.local_step(cx, cx.step)? {
                    if step.is_some() {
                        return Err(Error::config(
                            "pipeline",
                            "two stages replace the local step rule of one client (e.g. two blind attacks): keep one",
                        ));
                    }
                    step = Some(own);
                }
            }
        }
        let step_ref: &dyn LocalStep = step.as_deref().unwrap_or(cx.step);
        if hooks.is_empty() {
            algo.client_update(&ClientCtx { step: step_ref, ..*cx }, model, &data, state.as_mut())?
        } else {
            let combined = std::cell::RefCell::new(StageHooks(hooks));
            let with_hooks = ClientCtx { train_hook: Some(&combined), step: step_ref, ..*cx };
            algo.client_update(&with_hooks, model, &data, state.as_mut())?
        }
    };
    for (s, mem) in stages.iter().zip(slot.stage_mem.iter_mut()) {
        if s.applies(cx.malicious) {
            s.stage.on_update(cx, &mut u, mem)?;
        }
    }
    algo.commit(cx, &u, state.as_mut())?;
    Ok(u)
}

/// A pruned model's update as a sparse message of its non-zero coordinates, when that is
/// shorter than the dense one and no compressor encoded it already (`receive` then counts it).
fn send_sparse(u: &mut Update) -> Result<()> {
    use fedkit_core::wire;
    if u.extras.0.contains_key(wire::EXTRA_KEY) {
        return Ok(());
    }
    let m = wire::sparse_message(wire::Kind::Update, wire::layout_id(u.delta.layout()), u.delta.as_slice(), &u.extras);
    let bytes = wire::encode(&m)?;
    if bytes.len() < wire::dense_len(u.delta.len(), &u.extras)? {
        u.extras.insert(wire::EXTRA_KEY, fedkit_core::Extra::Bytes(bytes));
    }
    Ok(())
}

/// Several stages' training-time hooks, in the pipeline's order.
struct StageHooks<'a>(Vec<Box<dyn GradHook + 'a>>);

impl GradHook for StageHooks<'_> {
    fn on_grad(&mut self, step: usize, w: &Params, g: &mut Params) {
        self.0.iter_mut().for_each(|h| h.on_grad(step, w, g));
    }
    fn after_step(&mut self, step: usize, w: &mut Params) {
        self.0.iter_mut().for_each(|h| h.after_step(step, w));
    }
}

fn split(results: Vec<std::result::Result<Update, ClientFailure>>) -> (Vec<Update>, Vec<ClientFailure>) {
    let mut ok = Vec::with_capacity(results.len());
    let mut bad = Vec::new();
    for r in results {
        match r {
            Ok(u) => ok.push(u),
            Err(f) => bad.push(f),
        }
    }
    (ok, bad)
}

/// The default cohort of `round` (1-based): `per_round` of `population` clients uniformly
/// without replacement, sorted by id. It depends only on (seed, round), so other programs can
/// replay it (`fedkit data export` writes it as `cohorts.json`).
/// Poisson sampling: client c is in round `round` when its own draw (stream `sample_poisson`,
/// per round and client) falls below `rate`. Sorted; may be empty.
pub fn poisson_cohort(seed: u64, round: u32, population: usize, rate: f64) -> Vec<u32> {
    (0..population as u32)
        .filter(|&c| RngStream::derive(seed, "sample_poisson", round as u64, c as u64).uniform() < rate)
        .collect()
}

/// `per_round` clients uniformly without replacement, sorted.
pub fn uniform_cohort(seed: u64, round: u32, population: usize, per_round: usize) -> Vec<u32> {
    let mut c: Vec<u32> = RngStream::derive(seed, "sample", round as u64, 0)
        .choose(population, per_round.min(population))
        .into_iter()
        .map(|i| i as u32)
        .collect();
    c.sort_unstable();
    c
}

/// The round context of `plan` (by fields, so callers can borrow the stages mutably beside it).
fn plan_ctx<'a>(plan: &'a RoundPlan, global: &'a Params, seed: u64, population: usize) -> RoundCtx<'a> {
    RoundCtx {
        round: plan.round,
        cohort: &plan.run_ids,
        global,
        seed,
        population,
        malicious: &plan.attacking,
        draws: &plan.run_draws,
    }
}

#[cfg(test)]
mod tests {
    use super::cluster_accuracy;

    #[test]
    fn cluster_accuracy_ignores_the_names_of_the_clusters() {
        // Clusters 1 and 0 hold groups 0 and 1 exactly: renamed, fully right.
        assert_eq!(cluster_accuracy(&[(1, 0), (1, 0), (0, 1)]), 1.0);
        // Everyone in one cluster: only one group can be matched to it.
        assert_eq!(cluster_accuracy(&[(0, 0), (0, 1), (0, 1), (0, 2)]), 0.5);
        // One misplaced client of four.
        assert_eq!(cluster_accuracy(&[(0, 0), (0, 0), (1, 1), (0, 1)]), 0.75);
    }
}
