//! The run configuration (DESIGN.md section 7): TOML file -> `--set key=value` overrides ->
//! typed sections with defaults and `deny_unknown_fields` -> each `use` resolved in its registry
//! -> validated -> built. Errors name the file, the key and the allowed values. The fully
//! resolved configuration is what `resolved.toml` holds.

use std::path::Path;

use fedkit_core::registry::{Kind, build_from_table};
use fedkit_core::{Aggregator, DynAlgorithm, Error, LocalTrain, ModelSpec, Result, Stage, StragglerPolicy};
use fedkit_data::DataConfig;
use serde::{Deserialize, Serialize};

/// The whole run configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run seed: every random draw derives from (seed, round, client, purpose).
    pub seed: u64,
    /// Communication rounds T.
    pub rounds: u32,
    /// Worker threads for clients and evaluation (0 = RAYON_NUM_THREADS or all cores). Results
    /// do not depend on it.
    pub threads: usize,
    /// Save a checkpoint every this many rounds (0 = only after the last round), and always after
    /// the last.
    pub checkpoint_every: u32,
    /// Start the global model from the final model of this run directory (its checkpoint.bin)
    /// instead of a fresh initialisation: a pre-trained model (the `dae`'s federated
    /// pre-training), or any earlier run. The model layouts must match.
    pub init_from: Option<String>,
    pub data: DataConfig,
    /// `use = "<model>"` plus the model's parameters.
    pub model: toml::Table,
    pub client: LocalTrain,
    pub sampling: Sampling,
    pub eval: EvalConfig,
    pub threat: Threat,
    /// `use = "<algorithm>"` plus its parameters.
    pub algorithm: toml::Table,
    /// `use = "<aggregator>"` plus its parameters.
    pub aggregator: toml::Table,
    /// The local step rule: `use = "plain" | "sam" | ...` plus its parameters.
    pub local: toml::Table,
    /// The training loss: `use = "cross_entropy" | "logit_adjusted" | ...` plus its parameters.
    pub loss: toml::Table,
    /// Stages, each `use = "<stage>"`, optional `on = "all" | "malicious" | "benign"`, parameters.
    pub pipeline: Vec<toml::Table>,
    /// Model compression (`[compress] use = "lottery_ticket" | ...`): pruning or quantisation of
    /// the model itself; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<toml::Table>,
    /// Secure aggregation of the updates (`use = "none" | "secagg" | "secagg_plus"`).
    pub secure_aggregation: SecureAggregation,
    /// Compression of the broadcast (`use = "none" | "fp16" | "bf16" | "topk" | "qsgd"`).
    pub downlink: Downlink,
    /// What the run writes beside its metrics: past models, TensorBoard events.
    pub output: Output,
    /// Where this config came from (for error messages); not part of the config.
    #[serde(skip)]
    pub source: String,
}

fn table(name: &str) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("use".into(), toml::Value::String(name.into()));
    t
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            seed: 0,
            rounds: 20,
            threads: 0,
            checkpoint_every: 10,
            init_from: None,
            data: DataConfig::default(),
            model: table("logreg"),
            client: LocalTrain::default(),
            sampling: Sampling::default(),
            eval: EvalConfig::default(),
            threat: Threat::default(),
            algorithm: table("fedavg"),
            aggregator: table("mean"),
            local: table("plain"),
            loss: table("cross_entropy"),
            pipeline: Vec::new(),
            compress: None,
            secure_aggregation: SecureAggregation::default(),
            downlink: Downlink::default(),
            output: Output::default(),
            source: String::new(),
        }
    }
}

/// `[secure_aggregation]`: the server learns only the sum of the updates (issue 10). The
/// protocol runs for real in every round (`fedkit_privacy::secagg`); the mean of the summed
/// updates is uniform (each update counts once), as under DP.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecureAggregation {
    /// `none`, `secagg` (Bonawitz et al. 2017), `secagg_plus` (Bell et al. 2020: a k-regular
    /// neighbour graph) or `hybridalpha` (Xu et al. 2019: functional encryption with a key
    /// authority; one phase, no interaction between clients).
    #[serde(rename = "use")]
    pub protocol: SecAggProtocol,
    /// Shares needed to rebuild a secret, as a fraction of a neighbourhood (t = floor(f m) + 1);
    /// for hybridalpha, the parties the authority requires in a key, as a fraction of the cohort.
    pub threshold: f64,
    /// secagg_plus: neighbours per client, even; 0 = the smallest even k >= 3 log2(n).
    pub neighbours: usize,
    /// The fixed-point encoding's bound on an update coordinate (larger values are clipped).
    pub bound: f64,
    /// Simulation: the fraction of the cohort that drops out, before `dropout_phase`.
    pub dropout: f64,
    /// The phase (0 keys, 1 shares, 2 masked input, 3 unmasking) the dropouts happen before
    /// (hybridalpha has one phase: its dropouts never send).
    pub dropout_phase: usize,
    /// hybridalpha: every decrypted sum lies in [-2^range_bits, 2^range_bits] (the encoding's
    /// scale follows; decryption costs up to 2^(range_bits + 1 - table_bits) giant steps).
    pub range_bits: u32,
    /// hybridalpha: the baby-step table holds 2^table_bits points, built once per process
    /// (2^20: about a second, 24 MB).
    pub table_bits: u32,
    /// Where the clients' secrets come from: `seed` (the run seed: reproducible, simulation
    /// only) or `os` (the operating system's CSPRNG, as a deployment must).
    pub entropy: EntropySource,
    /// Distributed DP on the summed integers: `none`, or `skellam` (Agarwal et al. 2021):
    /// every client clips to `dp_clip`, scales by `dp_scale`, rounds and adds Skellam noise,
    /// so that any `dp_min_survivors` clients' sum carries noise of std `dp_noise_multiplier`
    /// times its sensitivity. Accounted every round (`epsilon` at `dp_delta`, amplified by
    /// the Poisson sampling: the guarantee for whoever sees the models; `epsilon_server`
    /// without amplification: against the server, which draws the cohorts). Poisson sampling
    /// only. See `fedkit_privacy::skellam`.
    pub dp: DistributedDp,
    /// C: the L2 bound each update is clipped to.
    pub dp_clip: f64,
    /// z: the summed noise's std over the sum's L2 sensitivity.
    pub dp_noise_multiplier: f64,
    /// The delta of the logged epsilon (0: N^-1.1).
    pub dp_delta: f64,
    /// The fewest clients whose noise must reach the sum (0: floor(threshold q N) + 1); a
    /// round with fewer survivors fails without a result.
    pub dp_min_survivors: usize,
    /// gamma: updates are scaled by it before rounding to integers (0: 100 sqrt(d) / C, so the
    /// rounding adds 1% to the sensitivity).
    pub dp_scale: f64,
}

/// `[downlink]`: the broadcast as a compressed model change with primal error feedback
/// (EF21-P); see `downlink.rs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Downlink {
    /// `none` (the dense model), `fp16`, `bf16`, `topk` or `qsgd`.
    #[serde(rename = "use")]
    pub kind: DownlinkKind,
    /// topk: the share of coordinates sent, in (0, 1].
    pub fraction: f64,
    /// qsgd: the levels s >= 1.
    pub levels: u32,
    /// qsgd: coordinates per bucket (0: one bucket).
    pub bucket: usize,
}

impl Default for Downlink {
    fn default() -> Self {
        Downlink { kind: DownlinkKind::None, fraction: 0.01, levels: 16, bucket: 0 }
    }
}

/// `[downlink] use`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownlinkKind {
    #[default]
    None,
    Fp16,
    Bf16,
    Topk,
    Qsgd,
}

/// `[secure_aggregation] dp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistributedDp {
    #[default]
    None,
    Skellam,
}

/// `[secure_aggregation] entropy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntropySource {
    #[default]
    Seed,
    Os,
}

impl Default for SecureAggregation {
    fn default() -> Self {
        SecureAggregation {
            protocol: SecAggProtocol::None,
            threshold: 0.5,
            neighbours: 0,
            bound: 1.0,
            dropout: 0.0,
            dropout_phase: 2,
            range_bits: 24,
            table_bits: 20,
            entropy: EntropySource::Seed,
            dp: DistributedDp::None,
            dp_clip: 1.0,
            dp_noise_multiplier: 1.0,
            dp_delta: 0.0,
            dp_min_survivors: 0,
            dp_scale: 0.0,
        }
    }
}

/// `[secure_aggregation] use`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecAggProtocol {
    #[default]
    None,
    Secagg,
    SecaggPlus,
    Hybridalpha,
}

/// `[sampling]`: which clients take part in a round.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sampling {
    /// How a round's cohort is drawn: `uniform` (exactly `per_round` clients, without
    /// replacement) or `poisson` (each client independently with probability `rate`; the
    /// add/remove-one neighbouring relation of DP accounting; a round's cohort may be empty).
    pub scheme: SamplingScheme,
    /// Clients sampled per round K, uniformly without replacement (capped at the population).
    pub per_round: usize,
    /// `scheme = "poisson"`: each client's probability to be in a round, in (0, 1].
    pub rate: f64,
    /// Fraction of each round's cohort that are stragglers (FedProx's `drop_percent`).
    pub drop_percent: f64,
    /// What stragglers do: `drop` or `partial`; default: the algorithm's choice (FedAvg drops,
    /// FedProx does partial work).
    pub stragglers: Option<StragglerPolicy>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { scheme: SamplingScheme::Uniform, per_round: 10, rate: 0.0, drop_percent: 0.0, stragglers: None }
    }
}

/// `[sampling] scheme`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingScheme {
    #[default]
    Uniform,
    Poisson,
}

impl Sampling {
    /// The scheme as stages see it.
    pub fn cohort_sampling(&self) -> fedkit_core::CohortSampling {
        match self.scheme {
            SamplingScheme::Uniform => fedkit_core::CohortSampling::FixedSize { per_round: self.per_round },
            SamplingScheme::Poisson => fedkit_core::CohortSampling::Poisson { rate: self.rate },
        }
    }
}

/// `[output]`: what a run writes beside `metrics.jsonl` (docs/outputs.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    /// The model store (`models/` in the run directory, safetensors files in PyTorch's names):
    /// `"none"`, `"last"` (the final global model) or `"every:k"` (the global model of rounds
    /// 0, k, 2k, ... and the last). What `fedkit model export --round` and the attacks and
    /// analyses read.
    pub keep_models: KeepModels,
    /// At the rounds kept, also keep these clients' updates as the server received them
    /// (`models/client<id>-r<round>.update.safetensors`; the client's model is the previous
    /// global model plus its update). Refused under secure aggregation.
    pub keep_clients: Vec<u32>,
    /// Write a TensorBoard event file (`tb/events.out.tfevents.*`): a scalar per metric per round.
    pub tensorboard: bool,
}

/// `[output] keep_models`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeepModels {
    #[default]
    None,
    Last,
    Every(u32),
}

impl KeepModels {
    /// Whether the global model after `round` of `rounds` is kept.
    pub fn keeps(self, round: u32, rounds: u32) -> bool {
        match self {
            KeepModels::None => false,
            KeepModels::Last => round == rounds,
            KeepModels::Every(k) => round % k == 0 || round == rounds,
        }
    }
}

impl TryFrom<String> for KeepModels {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: allowed values are \"none\", \"last\" and \"every:k\" with k >= 1");
        match s.as_str() {
            "none" => Ok(KeepModels::None),
            "last" => Ok(KeepModels::Last),
            _ => match s.strip_prefix("every:").map(str::parse::<u32>) {
                Some(Ok(k)) if k >= 1 => Ok(KeepModels::Every(k)),
                _ => Err(bad()),
            },
        }
    }
}

impl From<KeepModels> for String {
    fn from(k: KeepModels) -> String {
        match k {
            KeepModels::None => "none".into(),
            KeepModels::Last => "last".into(),
            KeepModels::Every(k) => format!("every:{k}"),
        }
    }
}

/// `[eval]`: when and how the global model is evaluated.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every this many rounds (and always after the last).
    pub every: u32,
    /// Also evaluate the initial model as round 0.
    pub initial: bool,
    /// Evaluation batch size.
    pub batch_size: usize,
    /// Also compute the training loss of the global model over all clients' data (the
    /// objective FedProx plots).
    pub train_loss: bool,
    /// Evaluate on a fixed random subset of this many test samples (0 = all).
    pub test_samples: usize,
    /// Also evaluate every client's model (personalised, for algorithms that have one, e.g.
    /// FedBN) on its own held-out local test split, in its own feature domain: columns
    /// `local_acc_mean`, `local_acc_min`, `local_acc_p10`, `local_loss_mean`, `local_loss_max`.
    pub clients: bool,
    /// With `clients`: the fraction of each client's samples held out as its local test split
    /// (a seeded random subset; the rest is its training data).
    pub client_test_fraction: f64,
    /// With `clients`: before evaluating a client's model, fine-tune it with this many local
    /// steps of the `[client]` optimiser (its lr, batch size, momentum, weight decay) and the
    /// cross-entropy loss on the client's own training data (0 = off): the "FedAvg + local
    /// fine-tuning" baseline of personalisation papers, for any algorithm. Ignored without
    /// `clients`.
    pub finetune_steps: usize,
    /// After the last round, estimate the top Hessian eigenvalue of the training loss (the
    /// sharpness of the minimum; column `hessian_top`) on this many pooled training samples by
    /// power iteration (0 = off).
    pub hessian_samples: usize,
    /// Power-iteration steps for `hessian_samples`.
    pub hessian_iters: usize,
    /// Hold out this fraction of each client's training samples as a validation split (0 = off):
    /// evaluation rounds then record `val_loss` and `val_acc` of the global model on the pooled
    /// validation samples, which `fedkit sweep` selects on (never on the test set).
    pub validation: f64,
    /// At evaluation rounds, the critical sample ratio (Arpit et al. 2017) of the global model on
    /// this many training samples (0 = off): column `critical_ratio`.
    pub critical_samples: usize,
    /// The L-infinity radius of the critical-sample search.
    pub critical_radius: f64,
    /// Sign-gradient steps of the critical-sample search.
    pub critical_steps: usize,
    /// Also record the balanced accuracy (mean per-class accuracy) on the test set
    /// (`test_acc_balanced`) and, with `validation`, on the validation split
    /// (`val_acc_balanced`): the metric of long-tailed learning.
    pub balanced: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every: 1,
            initial: true,
            batch_size: 256,
            train_loss: true,
            test_samples: 0,
            clients: false,
            client_test_fraction: 0.2,
            finetune_steps: 0,
            hessian_samples: 0,
            hessian_iters: 20,
            validation: 0.0,
            critical_samples: 0,
            critical_radius: 0.05,
            critical_steps: 10,
            balanced: false,
        }
    }
}

/// `[threat]`: which clients are malicious and when they attack (stages with
/// `on = "malicious"` run only on attacking clients).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Threat {
    /// Fraction of the population marked malicious (a fixed random pool drawn once from the run
    /// seed), unless `ids` is given.
    pub malicious_fraction: f64,
    /// The malicious clients by id (replaces `malicious_fraction`).
    pub ids: Vec<u32>,
    /// The first round the malicious clients attack in.
    pub start_round: u32,
    /// The last round they attack in (0: to the end): rounds after it measure durability.
    pub stop_round: u32,
    /// Attack every this many rounds from `start_round` (1: every round they are sampled).
    pub every: u32,
    /// Attack only in these rounds (single-shot attacks; overrides start/stop/every).
    pub single_shot: Vec<u32>,
    /// In attack rounds, put at least this many malicious clients into the cohort (replacing
    /// benign members, seeded): the papers' fixed-frequency setting.
    pub per_round_min: usize,
}

impl Default for Threat {
    fn default() -> Self {
        Threat {
            malicious_fraction: 0.0,
            ids: Vec::new(),
            start_round: 1,
            stop_round: 0,
            every: 1,
            single_shot: Vec::new(),
            per_round_min: 0,
        }
    }
}

impl Threat {
    /// Whether the malicious clients attack in `round`.
    pub fn active(&self, round: u32) -> bool {
        if !self.single_shot.is_empty() {
            return self.single_shot.contains(&round);
        }
        round >= self.start_round
            && (self.stop_round == 0 || round <= self.stop_round)
            && (round - self.start_round).is_multiple_of(self.every.max(1))
    }
    /// True when some client may be malicious.
    pub fn has_attackers(&self) -> bool {
        self.malicious_fraction > 0.0 || !self.ids.is_empty()
    }
}

/// Where a stage runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    All,
    Malicious,
    Benign,
}

/// A built stage with its scope.
pub struct StageSlot {
    pub stage: Box<dyn Stage>,
    pub on: Scope,
}

impl StageSlot {
    /// Whether the stage applies to a client.
    pub fn applies(&self, malicious: bool) -> bool {
        match self.on {
            Scope::All => true,
            Scope::Malicious => malicious,
            Scope::Benign => !malicious,
        }
    }
}

/// The methods a config selects, built.
pub struct Built {
    pub algorithm: Box<dyn DynAlgorithm>,
    pub aggregator: Box<dyn Aggregator>,
    pub local: Box<dyn fedkit_core::LocalStep>,
    pub loss: Box<dyn fedkit_core::Loss>,
    pub stages: Vec<StageSlot>,
    pub model: Box<dyn ModelSpec>,
    /// `[compress]`: the model-compression method, if any.
    pub compress: Option<Box<dyn fedkit_core::Compress>>,
    /// `[model] quant`: binary or k-bit weights in the forward pass, if any.
    pub quant: Option<fedkit_models::quantized::QuantConfig>,
    /// `[[model.per_client]]`: other architectures for some of the clients (empty: one model).
    pub groups: Vec<ModelGroup>,
}

/// One `[[model.per_client]]` entry: an architecture (`use` and its parameters, as in `[model]`)
/// for a share of the clients or for listed ones; the other clients train `[model]`.
pub struct ModelGroup {
    pub spec: Box<dyn ModelSpec>,
    /// `share`: this fraction of the federation's clients (a seeded draw among the unlisted).
    pub share: Option<f64>,
    /// `clients`: these client ids.
    pub clients: Vec<u32>,
}

/// The `[[model.per_client]]` entries of the `[model]` table, built, with their resolved tables.
fn model_groups(model: &toml::Table) -> Result<(Vec<ModelGroup>, Vec<toml::Value>)> {
    let Some(v) = model.get("per_client") else { return Ok((Vec::new(), Vec::new())) };
    let items = v.as_array().ok_or_else(|| {
        Error::config(
            "model.per_client",
            format!("expected an array of tables ([[model.per_client]]), found {}", v.type_str()),
        )
    })?;
    let (mut groups, mut resolved, mut total) = (Vec::new(), Vec::new(), 0.0);
    for (i, item) in items.iter().enumerate() {
        let section = format!("model.per_client.{i}");
        let t = item.as_table().ok_or_else(|| {
            Error::config(
                &section,
                format!("expected a table with `use` and `share` or `clients`, found {}", item.type_str()),
            )
        })?;
        let share = match t.get("share") {
            None => None,
            Some(v) => {
                let x = v.as_float().or_else(|| v.as_integer().map(|i| i as f64)).unwrap_or(f64::NAN);
                if !(x > 0.0 && x <= 1.0) {
                    return Err(Error::config(
                        format!("{section}.share"),
                        format!("must be a number in (0, 1], got {v}"),
                    ));
                }
                total += x;
                Some(x)
            }
        };
        let clients: Vec<u32> = match t.get("clients") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|c| c.as_integer().and_then(|c| u32::try_from(c).ok())).collect())
                .ok_or_else(|| {
                    Error::config(format!("{section}.clients"), format!("expected a list of client ids, got {v}"))
                })?,
        };
        if share.is_some() == !clients.is_empty() {
            return Err(Error::config(
                &section,
                "give exactly one of `share` (a fraction of the clients) and `clients` (a list of ids)",
            ));
        }
        let (spec, r) = build_from_table(fedkit_models::models(), Kind::Model, &section, t, &["share", "clients"])?;
        groups.push(ModelGroup { spec, share, clients });
        resolved.push(toml::Value::Table(r));
    }
    if total > 1.0 + 1e-9 {
        return Err(Error::config("model.per_client", format!("the groups' shares add up to {total}, more than 1")));
    }
    Ok((groups, resolved))
}

/// Parse TOML text into a table; errors carry the file name and toml's line/column report.
pub fn parse_toml(text: &str, file: &str) -> Result<toml::Table> {
    text.parse::<toml::Table>().map_err(|e| Error::Config {
        file: Some(file.into()),
        key: String::new(),
        msg: e.to_string(),
    })
}

/// Apply `key=value` overrides (dotted keys; the value is TOML, or a bare string).
pub fn apply_sets(t: &mut toml::Table, sets: &[String]) -> Result<()> {
    for s in sets {
        let (key, raw) = s
            .split_once('=')
            .ok_or_else(|| Error::config("--set", format!("`{s}` is not key=value (e.g. --set algorithm.mu=0.1)")))?;
        let key = key.trim();
        let value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut v) => v.remove("v").unwrap_or(toml::Value::String(raw.into())),
            Err(_) => toml::Value::String(raw.trim().to_string()),
        };
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(Error::config("--set", format!("`{key}` is not a valid dotted key")));
        }
        set_path(t, &parts, value, key)?;
    }
    Ok(())
}

fn set_path(t: &mut toml::Table, parts: &[&str], value: toml::Value, full: &str) -> Result<()> {
    let (head, rest) = (parts[0], &parts[1..]);
    if rest.is_empty() {
        t.insert(head.to_string(), value);
        return Ok(());
    }
    let slot = t.entry(head.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match slot {
        toml::Value::Table(inner) => set_path(inner, rest, value, full),
        toml::Value::Array(items) => {
            let i: usize = rest[0].parse().map_err(|_| {
                Error::config(
                    format!("--set {full}"),
                    format!("`{head}` is a list: index it by number, e.g. {head}.0.{}", rest[0]),
                )
            })?;
            let n = items.len();
            match items.get_mut(i) {
                Some(toml::Value::Table(inner)) if rest.len() > 1 => set_path(inner, &rest[1..], value, full),
                Some(v) if rest.len() == 1 => {
                    *v = value;
                    Ok(())
                }
                _ => Err(Error::config(format!("--set {full}"), format!("`{head}` has {n} entries"))),
            }
        }
        _ => Err(Error::config(format!("--set {full}"), format!("`{head}` is not a table"))),
    }
}

impl RunConfig {
    /// Read a config file (or the defaults when `path` is None), apply overrides, deserialise.
    pub fn load(path: Option<&Path>, sets: &[String]) -> Result<RunConfig> {
        Self::load_variant(path, sets, &[])
    }

    /// [`RunConfig::load`], then a variant's overrides (`fedkit compare`): a variant that sets
    /// `<section>.use` (switches the algorithm, aggregator, local rule or model) starts that
    /// section from an empty table, so the previous method's parameters do not carry over.
    pub fn load_variant(path: Option<&Path>, sets: &[String], variant: &[String]) -> Result<RunConfig> {
        let (mut t, file) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
                let f = p.display().to_string();
                (parse_toml(&text, &f)?, f)
            }
            None => (toml::Table::new(), "(defaults)".to_string()),
        };
        let before = t.clone();
        apply_sets(&mut t, sets)?;
        for s in variant {
            if let Some((section, _)) =
                s.split_once('=').and_then(|(k, _)| k.trim().strip_suffix(".use").map(|x| (x, ())))
            {
                if !section.contains('.') {
                    t.remove(section);
                }
            }
        }
        apply_sets(&mut t, variant)?;
        let source = if before != t { format!("{file} with --set overrides") } else { file };
        let mut cfg = Self::from_table(t).map_err(|e| e.in_file(&source))?;
        cfg.source = source;
        Ok(cfg)
    }

    /// Deserialise from a table, naming the key path of any error.
    /// A method section that sets parameters but no `use` (e.g. `--set aggregator.weighted=false`)
    /// keeps the default method of that section.
    pub fn from_table(t: toml::Table) -> Result<RunConfig> {
        let mut cfg: RunConfig = serde_path_to_error::deserialize(toml::Value::Table(t)).map_err(|e| {
            let path = e.path().to_string();
            Error::config(if path == "." { String::new() } else { path }, e.into_inner().to_string().trim().to_string())
        })?;
        let d = RunConfig::default();
        for (section, default) in [
            (&mut cfg.model, &d.model),
            (&mut cfg.algorithm, &d.algorithm),
            (&mut cfg.aggregator, &d.aggregator),
            (&mut cfg.local, &d.local),
            (&mut cfg.loss, &d.loss),
        ] {
            if !section.contains_key("use") {
                section.insert("use".into(), default["use"].clone());
            }
        }
        Ok(cfg)
    }

    /// Check the top-level ranges and build every selected method, filling the method tables
    /// with their resolved parameters.
    pub fn build(&mut self) -> Result<Built> {
        let bad = |k: &str, m: String| Err(Error::config(k, m));
        if self.rounds == 0 {
            return bad("rounds", "must be at least 1".into());
        }
        if self.sampling.per_round == 0 {
            return bad("sampling.per_round", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.sampling.drop_percent) {
            return bad("sampling.drop_percent", format!("must be in [0, 1], got {}", self.sampling.drop_percent));
        }
        if !(0.0..=1.0).contains(&self.threat.malicious_fraction) {
            return bad(
                "threat.malicious_fraction",
                format!("must be in [0, 1], got {}", self.threat.malicious_fraction),
            );
        }
        if self.threat.every == 0 {
            return bad("threat.every", "must be at least 1".into());
        }
        if self.threat.stop_round > 0 && self.threat.stop_round < self.threat.start_round {
            return bad(
                "threat.stop_round",
                format!("{} is before start_round {}", self.threat.stop_round, self.threat.start_round),
            );
        }
        if self.threat.per_round_min > self.sampling.per_round {
            return bad(
                "threat.per_round_min",
                format!(
                    "{} attackers cannot fit a cohort of sampling.per_round = {}",
                    self.threat.per_round_min, self.sampling.per_round
                ),
            );
        }
        if self.eval.every == 0 {
            return bad("eval.every", "must be at least 1".into());
        }
        if !(self.eval.client_test_fraction > 0.0 && self.eval.client_test_fraction < 1.0) {
            return bad(
                "eval.client_test_fraction",
                format!("must be in (0, 1), got {}", self.eval.client_test_fraction),
            );
        }
        if !(0.0..0.9).contains(&self.eval.validation) {
            return bad("eval.validation", format!("must be in [0, 0.9), got {}", self.eval.validation));
        }
        if self.eval.critical_samples > 0 && !(self.eval.critical_radius > 0.0 && self.eval.critical_steps > 0) {
            return bad(
                "eval.critical_radius",
                "the critical-sample search needs critical_radius > 0 and critical_steps > 0".into(),
            );
        }
        if self.eval.batch_size == 0 {
            return bad("eval.batch_size", "must be at least 1".into());
        }
        self.client.validate()?;
        let (algorithm, a) =
            build_from_table(fedkit_methods::algorithms(), Kind::Algorithm, "algorithm", &self.algorithm, &[])?;
        let policy = self.sampling.stragglers.unwrap_or_else(|| algorithm.straggler_policy());
        let active = (self.sampling.per_round as f64 * (1.0 - self.sampling.drop_percent)).round_ties_even();
        if active == 0.0 && policy == StragglerPolicy::Drop {
            return bad(
                "sampling.drop_percent",
                format!(
                    "with per_round = {} and drop_percent = {}, no client is active in a round and stragglers are dropped: nothing would train",
                    self.sampling.per_round, self.sampling.drop_percent
                ),
            );
        }
        match self.sampling.scheme {
            SamplingScheme::Poisson if !(self.sampling.rate > 0.0 && self.sampling.rate <= 1.0) => {
                return bad(
                    "sampling.rate",
                    format!(
                        "scheme = \"poisson\" needs a rate in (0, 1] (each client's chance per round), got {}",
                        self.sampling.rate
                    ),
                );
            }
            SamplingScheme::Uniform if self.sampling.rate != 0.0 => {
                return bad(
                    "sampling.rate",
                    "rate is the Poisson sampling probability: set sampling.scheme = \"poisson\" too, or use per_round"
                        .into(),
                );
            }
            _ => {}
        }
        let voting = self.pipeline.iter().any(|t| {
            t.get("use").and_then(|v| v.as_str()) == Some("signsgd")
                && t.get("vote").and_then(|v| v.as_bool()) == Some(true)
        });
        let central_dp = self.pipeline.iter().any(|t| {
            let name = t.get("use").and_then(|v| v.as_str()).unwrap_or_default();
            (name == "dp_fixed_clip" && t.get("mode").and_then(|v| v.as_str()) != Some("local"))
                || name == "dp_adaptive_clip"
        });
        if voting && central_dp {
            return bad(
                "pipeline",
                "signsgd's majority vote replaces the noised mean, so the DP noise would not cover it: use signsgd without vote, or dp_fixed_clip with mode = \"local\"".into(),
            );
        }
        let dl = &self.downlink;
        if !(dl.fraction > 0.0 && dl.fraction <= 1.0) || dl.levels == 0 {
            return bad(
                "downlink.fraction",
                format!("fraction must be in (0, 1] and levels at least 1, got {} and {}", dl.fraction, dl.levels),
            );
        }
        let sa = &self.secure_aggregation;
        if sa.dp != DistributedDp::None && sa.protocol == SecAggProtocol::None {
            return bad(
                "secure_aggregation.dp",
                "distributed DP adds each client's share of the noise under secure aggregation: set secure_aggregation.use (secagg, secagg_plus or hybridalpha), or use a dp_fixed_clip stage".into(),
            );
        }
        if sa.dp != DistributedDp::None {
            let dp_stage = self.pipeline.iter().find_map(|t| {
                t.get("use")
                    .and_then(|v| v.as_str())
                    .filter(|n| n.starts_with("dp_fixed") || n.starts_with("dp_adaptive"))
            });
            if let Some(name) = dp_stage {
                return bad(
                    "secure_aggregation.dp",
                    format!(
                        "distributed DP and the `{name}` stage would both noise the sum and both log epsilon: keep one"
                    ),
                );
            }
        }
        if sa.protocol != SecAggProtocol::None {
            if !(sa.threshold > 0.0 && sa.threshold < 1.0) {
                return bad("secure_aggregation.threshold", format!("must be in (0, 1), got {}", sa.threshold));
            }
            if !(sa.bound > 0.0 && sa.bound.is_finite()) {
                return bad("secure_aggregation.bound", format!("must be a finite number > 0, got {}", sa.bound));
            }
            if !(0.0..1.0).contains(&sa.dropout) || sa.dropout_phase > 3 {
                return bad(
                    "secure_aggregation.dropout",
                    format!(
                        "dropout must be in [0, 1) and dropout_phase in 0..=3, got {} and {}",
                        sa.dropout, sa.dropout_phase
                    ),
                );
            }
            if !(8..=40).contains(&sa.range_bits)
                || !(8..=26).contains(&sa.table_bits)
                || sa.range_bits + 1 > sa.table_bits + 16
            {
                return bad(
                    "secure_aggregation.range_bits",
                    format!(
                        "range_bits must be in 8..=40, table_bits in 8..=26 and range_bits + 1 - table_bits at most 16 (giant steps a coordinate: 2^that), got {} and {}",
                        sa.range_bits, sa.table_bits
                    ),
                );
            }
            if sa.dp == DistributedDp::Skellam {
                if self.sampling.scheme != SamplingScheme::Poisson {
                    return bad(
                        "secure_aggregation.dp",
                        "distributed DP is accounted for Poisson cohorts: set [sampling] scheme = \"poisson\"".into(),
                    );
                }
                for (key, v) in [
                    ("secure_aggregation.dp_clip", sa.dp_clip),
                    ("secure_aggregation.dp_noise_multiplier", sa.dp_noise_multiplier),
                ] {
                    if !(v > 0.0 && v.is_finite()) {
                        return bad(key, format!("must be a finite number > 0, got {v}"));
                    }
                }
                if !(sa.dp_delta == 0.0 || (sa.dp_delta > 0.0 && sa.dp_delta < 1.0))
                    || !(sa.dp_scale >= 0.0 && sa.dp_scale.is_finite())
                {
                    return bad(
                        "secure_aggregation.dp_delta",
                        format!(
                            "dp_delta must be in (0, 1) or 0, dp_scale >= 0; got {} and {}",
                            sa.dp_delta, sa.dp_scale
                        ),
                    );
                }
            }
            if sa.neighbours % 2 == 1 {
                return bad(
                    "secure_aggregation.neighbours",
                    format!("must be even (k / 2 on each side), got {}", sa.neighbours),
                );
            }
            if self.aggregator.get("use").and_then(|v| v.as_str()) != Some("mean") {
                return bad(
                    "aggregator.use",
                    "secure aggregation reveals only the sum: a robust aggregator would need the individual updates; use \"mean\"".into(),
                );
            }
        }
        let (aggregator, g) =
            build_from_table(fedkit_methods::aggregators(), Kind::Aggregator, "aggregator", &self.aggregator, &[])?;
        aggregator.check_cohort(self.sampling.per_round)?;
        let (model, mut m) = build_from_table(
            fedkit_models::models(),
            Kind::Model,
            "model",
            &self.model,
            &["init", "per_client", "quant"],
        )?;
        let quant = self.model.get("quant").map(fedkit_models::quantized::QuantConfig::from_value).transpose()?;
        let (groups, resolved_groups) = model_groups(&self.model)?;
        if !groups.is_empty() {
            m.insert("per_client".into(), toml::Value::Array(resolved_groups));
        }
        if let Some(v) = self.model.get("init").filter(|v| !v.is_str()) {
            return bad(
                "model.init",
                format!("expected a file or run directory path (string), found {}", v.type_str()),
            );
        }
        if !self.output.keep_clients.is_empty() && self.secure_aggregation.protocol != SecAggProtocol::None {
            return bad(
                "output.keep_clients",
                "under secure aggregation the server sees no individual update, so none can be kept; remove keep_clients"
                    .into(),
            );
        }
        let (local, l) = build_from_table(fedkit_methods::local_steps(), Kind::LocalStep, "local", &self.local, &[])?;
        let compress = match &self.compress {
            None => None,
            Some(t) => {
                let (c, resolved) =
                    build_from_table(fedkit_methods::model_compression(), Kind::Compress, "compress", t, &[])?;
                self.compress = Some(resolved);
                Some(c)
            }
        };
        let (loss, ls) = build_from_table(fedkit_methods::losses(), Kind::Loss, "loss", &self.loss, &[])?;
        let mut stages = Vec::new();
        for (i, st) in self.pipeline.iter_mut().enumerate() {
            let section = format!("pipeline.{i}");
            let on = match st.get("on") {
                None => Scope::All,
                Some(v) => Scope::deserialize(v.clone()).map_err(|_| {
                    Error::config(format!("{section}.on"), format!("`{v}`: allowed values are all, malicious, benign"))
                })?,
            };
            let (stage, resolved) = build_from_table(fedkit_methods::stages(), Kind::Stage, &section, st, &["on"])?;
            if on == Scope::Malicious && !self.threat.has_attackers() {
                return bad(
                    &format!("{section}.on"),
                    format!(
                        "stage `{}` runs on malicious clients, but [threat] marks none: set threat.malicious_fraction or threat.ids",
                        resolved.get("use").and_then(|v| v.as_str()).unwrap_or("?")
                    ),
                );
            }
            *st = resolved;
            stages.push(StageSlot { stage, on });
        }
        self.algorithm = a;
        self.aggregator = g;
        self.model = m;
        self.local = l;
        self.loss = ls;
        Ok(Built { algorithm, aggregator, stages, model, local, loss, groups, compress, quant })
    }

    /// The resolved configuration as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Method(format!("cannot write the resolved config: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_override_nested_keys_and_parse_values() {
        let mut t = parse_toml("rounds = 3\n[algorithm]\nuse = \"fedprox\"\n", "x.toml").unwrap();
        apply_sets(&mut t, &["algorithm.mu=0.5".into(), "data.name=fcube".into(), "rounds=7".into()]).unwrap();
        let c = RunConfig::from_table(t).unwrap();
        assert_eq!(c.rounds, 7);
        assert_eq!(c.algorithm["mu"].as_float(), Some(0.5));
        assert_eq!(c.data.name, "fcube");
        // Parameters without `use` keep the section's default method.
        let mut t = parse_toml("rounds = 3\n", "x.toml").unwrap();
        apply_sets(&mut t, &["aggregator.weighted=false".into()]).unwrap();
        let mut c = RunConfig::from_table(t).unwrap();
        assert_eq!(c.aggregator["use"].as_str(), Some("mean"));
        c.build().unwrap();
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let e = RunConfig::from_table(parse_toml("[client]\nlr = \"fast\"\n", "x").unwrap()).unwrap_err().to_string();
        assert!(e.contains("client.lr"), "{e}");
        let e = RunConfig::from_table(parse_toml("roundz = 3\n", "x").unwrap()).unwrap_err().to_string();
        assert!(e.contains("roundz") && e.contains("rounds"), "{e}");
        let mut c =
            RunConfig::from_table(parse_toml("[algorithm]\nuse = \"fedprox\"\nmux = 1\n", "x").unwrap()).unwrap();
        let e = c.build().err().unwrap().to_string();
        assert!(e.contains("algorithm") && e.contains("mux") && e.contains("mu"), "{e}");
        let mut c = RunConfig::from_table(parse_toml("[algorithm]\nuse = \"fedfoo\"\n", "x").unwrap()).unwrap();
        let e = c.build().err().unwrap().to_string();
        assert!(e.contains("algorithm.use") && e.contains("fedavg") && e.contains("fedprox"), "{e}");
    }

    #[test]
    fn resolved_tables_hold_defaults() {
        let mut c = RunConfig::from_table(parse_toml("[algorithm]\nuse = \"fedprox\"\n", "x").unwrap()).unwrap();
        c.build().unwrap();
        assert!(c.algorithm.contains_key("mu"));
        let text = c.to_toml().unwrap();
        let back = RunConfig::from_table(parse_toml(&text, "resolved").unwrap()).unwrap();
        assert_eq!(back.to_toml().unwrap(), text);
    }
}
