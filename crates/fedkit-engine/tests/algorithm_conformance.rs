//! Conformance of every registered algorithm inside the engine:
//! - with its default settings it trains a heterogeneous federation with unequal client sizes
//!   about as well as FedAvg (a method that diverges where FedAvg converges fails here: SCAFFOLD
//!   did, before its server step was normalised by the local work);
//! - an update the aggregator rejects has no influence on the global model or the server state,
//!   whatever it contains (every server rule honours `Aggregate::accepted`).

use fedkit_core::{Aggregate, Aggregator, ClientCtx, Extra, Extras, Result, RoundCtx, Stage, Update, Weighting};
use fedkit_engine::config::{Scope, StageSlot};
use fedkit_engine::{Engine, RunConfig};
use fedkit_methods::aggregators::mean::weighted_mean;
use fedkit_methods::algorithms;

/// Synthetic(1,1) with its 30 natural users (45 to 790 samples each), 10 per round, E = 5,
/// B = 10, lr 0.01: the federation on which SCAFFOLD's loss ended at 69 (FedAvg: 0.43).
fn heterogeneous(algorithm: &str, rounds: u32) -> RunConfig {
    let sets: Vec<String> = [
        "seed=3".to_string(),
        format!("rounds={rounds}"),
        "client.epochs=5".into(),
        "client.batch_size=10".into(),
        "client.lr=0.01".into(),
        "sampling.per_round=10".into(),
        "eval.every=1000".into(),
        "eval.initial=false".into(),
    ]
    .into_iter()
    .chain(algorithm_sets(algorithm))
    .collect();
    RunConfig::load(None, &sets).unwrap()
}

/// `algorithm.use` and what an algorithm needs on the suite's logreg federation: FedHeNN
/// aligns hidden representations, so it trains an mlp; FedDF and
/// FedBE distil on the samples no client holds; HeteroFL's sub-models need hidden widths,
/// which logreg lacks, so it runs its full-width level (the mixed widths run on the mlp in
/// tests/engine.rs), without the masked label loss: masking trains each client on its own
/// classes only, which here ends the global model at train loss 0.70 against FedAvg's 0.43.
fn algorithm_sets(algorithm: &str) -> Vec<String> {
    let mut sets = vec![
        format!("algorithm.use=\"{algorithm}\""),
        format!("data.subsample={}", if ["feddf", "fedbe", "fedhenn"].contains(&algorithm) { 0.8 } else { 1.0 }),
    ];
    if algorithm == "heterofl" {
        sets.extend(["algorithm.rates=[1.0]".into(), "algorithm.masked_labels=false".into()]);
    }
    if algorithm == "fedhenn" {
        // It aligns hidden representations, which logreg has none of.
        sets.extend(["model.use=\"mlp\"".into(), "model.hidden=[16]".into()]);
    }
    sets
}

fn final_train_loss(cfg: RunConfig) -> f64 {
    let mut e = Engine::new(cfg).unwrap();
    while e.round < e.cfg.rounds {
        e.run_round().unwrap_or_else(|err| panic!("round {}: {err}", e.round + 1));
    }
    e.records.last().and_then(|r| r.get("train_loss")).expect("a final evaluation")
}

/// Algorithms whose default run is not comparable with FedAvg's training loss, so they only
/// have to make progress without diverging: the composite methods minimise F(w) + l1 ||w||_1
/// (their l1 = 0 case is FedAvg bit for bit, tested in their files); AFL and DRFA minimise the
/// worst client mixture's loss, not the average; H-SGD's rounds are `local_period` local steps
/// (default 1), not `[client]` epochs; FedAwS descends a positive-only cosine loss and keeps
/// the class embeddings at unit norm, so its cross-entropy is not what it minimises.
const OTHER_OBJECTIVE: &[&str] = &["fedmid", "feddualavg", "afl", "drfa", "hsgd", "fedaws"];

/// FedSGD-style algorithms take one compressed stochastic gradient a round (EF21-SGDM): after 40
/// rounds they only have to be below the loss FedAvg has after one round of full epochs.
const ONE_GRADIENT_A_ROUND: &[&str] = &["ef21_sgdm", "diana"];

/// Clustered algorithms (IFCA): the global model is one of k cluster models, trained by the
/// clients that chose it, so its loss over every client's data only has to be below the start.
const ONE_CLUSTER_OF_K: &[&str] = &["ifca"];

/// Algorithms whose clients train models of their own, so the global model is a by-product
/// that only must not end worse than the untrained model: RFFL's is the running sum of clipped aggregates (slow by design,
/// Gamma bounds every step), FedFomo's the mean of the personal models, and standalone training
/// (`local`) and FedHeNN (which shares representations, not parameters) never move it. Their
/// personal models are measured in their own tests and in docs/results.md.
const OWN_MODELS: &[&str] = &["rffl", "fedfomo", "local", "fedhenn"];

/// FedBE distils into the Bayesian model average of probabilities (the clients, their mean and
/// models sampled around them). On this very heterogeneous federation those averaged
/// probabilities are soft and often favour other clients' classes, so it ends well above
/// FedAvg's loss (0.83 against 0.43; FedDF's logit average gets 0.40). It only must not end worse
/// than the untrained model; docs/results.md reports what it does on Fashion-MNIST.
const SOFT_TARGETS: &[&str] = &["fedbe"];

#[test]
fn every_algorithm_with_defaults_trains_about_as_well_as_fedavg() {
    let rounds = 40;
    let fedavg = final_train_loss(heterogeneous("fedavg", rounds));
    let losses: Vec<(&str, f64)> =
        algorithms().iter().map(|e| (e.name, final_train_loss(heterogeneous(e.name, rounds)))).collect();
    let report: Vec<String> = losses.iter().map(|(n, l)| format!("{n}: {l:.3}")).collect();
    eprintln!("fedavg {fedavg:.3}\n{}", report.join("\n"));
    let initial = final_train_loss(heterogeneous("fedavg", 1)).max(2.0);
    for (name, loss) in &losses {
        // Within 50% of FedAvg's loss, or for the others at least well below the loss after one
        // round (2.3 here): none may blow up.
        let bound = if OWN_MODELS.contains(name) || SOFT_TARGETS.contains(name) {
            // No worse than the untrained model (standalone training never moves it).
            1.1 * losses.iter().find(|(n, _)| *n == "local").map_or(initial, |l| l.1)
        } else if OTHER_OBJECTIVE.contains(name) {
            0.5 * initial
        } else if ONE_GRADIENT_A_ROUND.contains(name) || ONE_CLUSTER_OF_K.contains(name) {
            initial
        } else {
            1.5 * fedavg
        };
        assert!(
            loss.is_finite() && *loss <= bound,
            "`{name}` ends at train loss {loss:.3} against FedAvg's {fedavg:.3} with default settings\n{}",
            report.join("\n")
        );
    }
}

// Every registered loss, with its default parameters, trains the heterogeneous federation: the
// training cross-entropy after 15 rounds is below the one after the first round.
#[test]
fn every_loss_trains() {
    for e in fedkit_methods::losses() {
        let with = |rounds: u32| {
            let mut cfg = heterogeneous("fedavg", rounds);
            cfg.loss = toml::Table::from_iter([("use".to_string(), toml::Value::String(e.name.into()))]);
            final_train_loss(cfg)
        };
        let (first, last) = (with(1), with(15));
        assert!(
            last.is_finite() && last < 0.7 * first,
            "loss `{}`: train loss {first:.3} after round 1, {last:.3} after 15",
            e.name
        );
    }
}

/// Keeps the `mean` of every update but those of malicious clients, which it lists as rejected.
struct RejectMalicious;

impl Aggregator for RejectMalicious {
    fn aggregate(&mut self, r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let kept: Vec<Update> = updates.iter().filter(|u| !r.malicious[u.client as usize]).cloned().collect();
        let mut agg = weighted_mean(&kept, true)?;
        agg.weighting = Weighting::UpdateWeights;
        Ok(agg)
    }
}

/// Replaces everything a client sends with `scale` times itself and huge metrics.
struct Corrupt {
    scale: f32,
}

impl Stage for Corrupt {
    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        u.delta.scale(self.scale);
        for v in u.extras.0.values_mut() {
            match v {
                Extra::Params(p) => p.scale(self.scale),
                Extra::Scalar(x) => *x *= self.scale as f64,
                Extra::Vector(x) => x.iter_mut().for_each(|v| *v *= self.scale),
                Extra::Bytes(_) => {}
            }
        }
        u.metrics.values_mut().for_each(|m| *m *= self.scale as f64);
        u.weight *= self.scale.abs();
        Ok(())
    }
}

/// The global model and server state after 3 rounds in which the malicious clients' updates are
/// corrupted by `scale` and rejected by the aggregator.
fn with_rejected(algorithm: &str, scale: f32) -> (Vec<u32>, Vec<u8>) {
    let sets: Vec<String> = [
        "rounds=3".to_string(),
        "data.synthetic.users=8".into(),
        "sampling.per_round=8".into(),
        "client.epochs=2".into(),
        "client.batch_size=10".into(),
        "client.lr=0.05".into(),
        "threat.malicious_fraction=0.25".into(),
        "eval.every=1000".into(),
        "eval.initial=false".into(),
    ]
    .into_iter()
    .chain(algorithm_sets(algorithm))
    .collect();
    let mut e = Engine::new(RunConfig::load(None, &sets).unwrap()).unwrap();
    e.aggregator = Box::new(RejectMalicious);
    e.stages.push(StageSlot { stage: Box::new(Corrupt { scale }), on: Scope::Malicious });
    while e.round < e.cfg.rounds {
        e.run_round().unwrap_or_else(|err| panic!("`{algorithm}` round {}: {err}", e.round + 1));
    }
    assert!(e.records.iter().any(|r| r.get("accepted") < r.get("participants")), "`{algorithm}`: someone was rejected");
    (e.global.as_slice().iter().map(|v| v.to_bits()).collect(), e.server.to_bytes().unwrap())
}

#[test]
fn every_server_rule_ignores_rejected_updates() {
    for e in algorithms() {
        let a = with_rejected(e.name, 1000.0);
        let b = with_rejected(e.name, -3.0);
        assert!(a == b, "`{}`: a rejected update changed the global model or the server state", e.name);
    }
}
