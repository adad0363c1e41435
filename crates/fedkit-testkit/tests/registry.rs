//! Every registered method, built with its default parameters, passes its kind's conformance
//! suite, and is documented (paper or source, parameters, an example TOML block that builds).

use fedkit_core::registry::Kind;
use fedkit_methods::{aggregators, algorithms, local_steps, losses, stages};
use fedkit_testkit::aggregators::{check_aggregator, check_weighted_mean, claims_weighted_mean};
use fedkit_testkit::algorithms::{check_algorithm, check_state_serde};
use fedkit_testkit::{build_default, check_registry, stages::check_stage};

/// Algorithms that replace the default server rule `w += aggregated delta` (FedOpt, ...): the
/// server half of the plain-SGD check is skipped for them (`rffl` weights by reputation,
/// `local` never moves the global model, `feddf` distils the ensemble into the average; the
/// toy federation lends it client 0's samples as unlabeled data).
const CUSTOM_SERVER_RULE: &[&str] = &[
    "fedlaw",
    "feddyn",
    "afl",
    "drfa",
    "hsgd",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "large_cohort",
    "feddualavg",
    "rffl",
    "local",
    "feddf",
    "fedbe",
];

/// Algorithms whose first-round client step is by design not plain SGD with their default
/// parameters: only the state serde check runs for them. `fedmid`: every local step is a
/// proximal step soft(w - lr g, lr l1) (its l1 = 0 case is tested to be FedAvg bit for bit).
/// `ef21_sgdm`: a client sends the compressed change of its gradient estimate, c_i = TopK(v_i -
/// g_i), not a model delta (without compression or momentum it is tested to be distributed SGD
/// in crates/fedkit-engine/tests/compression.rs).
/// `diana`: likewise, the compressed gradient difference m_i = C(grad - h_i).
/// `perfedavg`: the step's gradient is taken at the adapted point w - alpha grad f(w; D) (its
/// alpha = 0 case is tested to be FedAvg bit for bit); `pfedme`: the step is lambda (w - theta)
/// towards the personal model (it approaches FedAvg as lambda grows, tested); `ifca`: a client
/// trains the lowest-loss of k cluster models, not necessarily the global one (its k = 1 case is
/// tested to be FedAvg bit for bit); `fedfomo`: a client trains on its data minus the
/// validation split it weighs its peers on; `fedaws`: a client descends the positive cosine
/// loss, not the cross-entropy, and the server spreads the class embeddings apart; `fedhenn`:
/// a client sends its representation kernel, never a model change (its eta = 0 case is tested
/// to be standalone training bit for bit).
const NOT_PLAIN_SGD: &[&str] =
    &["fedmid", "ef21_sgdm", "diana", "perfedavg", "pfedme", "ifca", "fedfomo", "fedaws", "fedhenn"];

/// Aggregators whose defaults change every update on purpose, checked with parameters under
/// which they do not (their binding behaviour is tested in their own files): `norm_bound` clips
/// every update to `max_norm`; `centered_clip` moves at most `tau` from its center per step;
/// `flame` adds noise of scale `lambda` times the median norm; `sparsefed` clips and keeps the
/// top `fraction` of the coordinates; `weak_dp` clips and adds noise `sigma`; `crfl` clips the
/// model to `clip` and adds noise `sigma`.
const CONFORMANCE_PARAMS: &[(&str, &str)] = &[
    ("norm_bound", "max_norm = 1e9"),
    ("centered_clip", "tau = 1e9"),
    ("flame", "lambda = 0.0"),
    ("sparsefed", "clip = 1e9\nfraction = 1.0"),
    ("weak_dp", "max_norm = 1e9\nsigma = 0.0"),
    ("crfl", "clip = 1e9\nsigma = 0.0\ndynamic = false"),
];

/// Aggregators that need a classifier's output layer (a weight [in, classes] and a bias
/// [classes]), which the suite's flat toy updates lack: `deepsight` (its own tests check
/// permutation invariance and identical updates on a linear classifier).
const NEEDS_CLASSIFIER: &[&str] = &["deepsight"];

/// Aggregators that by design do not return the update when every update is the same:
/// `foolsgold` (identical clients are sybils: every weight is 0) and `fltrust` (every update is
/// rescaled to the norm of the server's root-set update).
const NO_IDENTITY: &[&str] = &["foolsgold", "fltrust"];

#[test]
fn every_aggregator_conforms() {
    let mut weighted = Vec::new();
    for e in aggregators().iter().filter(|e| !NEEDS_CLASSIFIER.contains(&e.name)) {
        let params = CONFORMANCE_PARAMS.iter().find(|p| p.0 == e.name).map_or("", |p| p.1);
        let mut table: toml::Table = params.parse().expect("conformance parameters");
        table.insert("use".into(), e.name.into());
        let make = || fedkit_testkit::build(aggregators(), Kind::Aggregator, &table).0;
        check_aggregator(e.name, &make, !NO_IDENTITY.contains(&e.name));
        if claims_weighted_mean(&e.doc(), &build_default(aggregators(), Kind::Aggregator, e.name).1) {
            check_weighted_mean(e.name, &make);
            weighted.push(e.name);
        }
    }
    assert!(weighted.contains(&"mean"), "`mean` must be recognised as weighted, got {weighted:?}");
}

/// Stages whose defaults do not fit the suite's 3-class toy images: `edge_case` takes the tail
/// of class 9 by default.
const STAGE_PARAMS: &[(&str, &str)] = &[("edge_case", "source = 0\ntarget = 1")];

#[test]
fn every_stage_conforms() {
    for e in stages() {
        let params = STAGE_PARAMS.iter().find(|p| p.0 == e.name).map_or("", |p| p.1);
        let mut table: toml::Table = params.parse().expect("conformance parameters");
        table.insert("use".into(), e.name.into());
        check_stage(e.name, &|| fedkit_testkit::build(stages(), Kind::Stage, &table).0);
    }
}

/// Algorithms checked with other parameters than their defaults: `heterofl`'s sub-models need
/// hidden widths, which the suite's logreg lacks; at rate 1 without the label mask it is FedAvg
/// (its mixed widths are tested in its file and on the mlp in the engine's tests).
const ALGORITHM_PARAMS: &[(&str, &str)] = &[("heterofl", "rates = [1.0]\nmasked_labels = false")];

#[test]
fn every_algorithm_conforms() {
    for e in algorithms() {
        let params = ALGORITHM_PARAMS.iter().find(|p| p.0 == e.name).map_or("", |p| p.1);
        let mut table: toml::Table = params.parse().expect("conformance parameters");
        table.insert("use".into(), e.name.into());
        let make = || fedkit_testkit::build(algorithms(), Kind::Algorithm, &table).0;
        if NOT_PLAIN_SGD.contains(&e.name) {
            check_state_serde(e.name, &make);
        } else {
            check_algorithm(e.name, &make, !CUSTOM_SERVER_RULE.contains(&e.name));
        }
    }
}

#[test]
fn every_method_is_documented() {
    check_registry(algorithms(), Kind::Algorithm);
    check_registry(aggregators(), Kind::Aggregator);
    check_registry(stages(), Kind::Stage);
    check_registry(local_steps(), Kind::LocalStep);
    check_registry(losses(), Kind::Loss);
}
