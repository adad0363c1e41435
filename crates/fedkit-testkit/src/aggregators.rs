//! The aggregator suite: permutation invariance, identical updates return that update, `accepted`
//! lists only cohort clients that sent an update, and (for aggregators that promise it) the
//! weighted mean.
//!
//! Each aggregation runs on a fresh aggregator from `make`, so stateful aggregators are compared
//! from the same state.

use std::sync::Arc;

use fedkit_core::{Aggregate, Aggregator, AggregatorView, Batch, Layout, LocalTrain, Model, Params, RngStream, Update};

use crate::{COHORT, assert_close, assert_same_bits, round_ctx, toy_cohort, toy_data, toy_layout, toy_update};

/// The server model of the suite's aggregator view: loss 0.5 ||w - 1||^2 on any batch (gradient
/// w - 1), so a root-set update (FLTrust) points towards the all-ones vector.
struct Quadratic {
    layout: Arc<Layout>,
}

impl Model for Quadratic {
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(Quadratic { layout: self.layout.clone() })
    }
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, _: &mut RngStream) -> Params {
        Params::zeros(self.layout.clone())
    }
    fn loss_grad(&mut self, p: &mut Params, _: &Batch, g: &mut Params, _: &mut RngStream) -> fedkit_core::Result<f32> {
        let mut loss = 0.0;
        for (gi, wi) in g.as_mut_slice().iter_mut().zip(p.as_slice()) {
            *gi = wi - 1.0;
            loss += 0.5 * (wi - 1.0) * (wi - 1.0);
        }
        Ok(loss)
    }
    fn eval_batch(&mut self, _: &Params, _: &Batch) -> fedkit_core::Result<(f64, usize)> {
        Ok((0.0, 0))
    }
}

/// Values per toy update.
const N: usize = 12;

/// Aggregate `updates` for the toy round with a fresh aggregator, and check `accepted`: clients
/// that sent an update (so of the cohort), each at most once.
fn run(name: &str, make: &dyn Fn() -> Box<dyn Aggregator>, updates: &[Update]) -> Aggregate {
    let global = Params::zeros(toy_layout(updates[0].delta.len()));
    let mut model = Quadratic { layout: toy_layout(updates[0].delta.len()) };
    let (data, train) = (toy_data(), LocalTrain { lr: 0.1, epochs: 1, batch_size: 8, ..LocalTrain::default() });
    let mut view = AggregatorView { model: &mut model, server_data: &data, train: &train, workers: None };
    let a = make()
        .aggregate_with(&round_ctx(1, &COHORT, &global), updates, &mut view)
        .unwrap_or_else(|e| panic!("aggregator `{name}`: aggregate failed: {e}"));
    for (i, c) in a.accepted.iter().enumerate() {
        assert!(
            updates.iter().any(|u| u.client == *c) && COHORT.contains(c),
            "aggregator `{name}`: accepted lists client {c}, which sent no update this round (accepted: {:?})",
            a.accepted
        );
        assert!(!a.accepted[..i].contains(c), "aggregator `{name}`: accepted lists client {c} twice");
    }
    a
}

/// Check the properties every aggregator must have (panics naming `name` and the property);
/// `identity`: also that identical updates return that update (false for rules that by design
/// do not: FoolsGold, FLTrust).
pub fn check_aggregator(name: &str, make: &dyn Fn() -> Box<dyn Aggregator>, identity: bool) {
    let updates = toy_cohort(1, &COHORT[..COHORT.len() - 1], N);
    let sorted = |mut a: Aggregate| {
        a.accepted.sort_unstable();
        a
    };
    let base = sorted(run(name, make, &updates));
    let mut rng = fedkit_core::RngStream::new(crate::SEED);
    for k in 0..4 {
        let mut shuffled = updates.clone();
        if k == 0 {
            shuffled.reverse()
        } else {
            rng.shuffle(&mut shuffled)
        }
        let order: Vec<_> = shuffled.iter().map(|u| u.client).collect();
        let what = format!("aggregator `{name}`: permutation invariance (input order {order:?})");
        assert_same_bits(&sorted(run(name, make, &shuffled)), &base, &what);
    }

    if !identity {
        return;
    }
    let same: Vec<Update> = updates.iter().map(|u| Update { delta: updates[0].delta.clone(), ..u.clone() }).collect();
    let a = run(name, make, &same);
    let what = format!("aggregator `{name}`: identical updates return that update");
    assert_close(a.delta.as_slice(), updates[0].delta.as_slice(), 1e-6, &what);
}

/// Check that the aggregate of two updates with weights (1, 3) is their weighted mean, with total
/// weight 4.
pub fn check_weighted_mean(name: &str, make: &dyn Fn() -> Box<dyn Aggregator>) {
    let updates =
        [toy_update(COHORT[0], vec![1.0, 0.0, -2.0, 0.5], 1.0), toy_update(COHORT[1], vec![4.0, 3.0, 2.0, -0.5], 3.0)];
    let a = run(name, make, &updates);
    let what = format!("aggregator `{name}`: weights respected (weights 1 and 3 give the weighted mean)");
    assert_close(a.delta.as_slice(), &[3.25, 2.25, 1.0, -0.25], 1e-6, &what);
    assert_eq!(a.weight, 4.0, "{what}: total weight");
}

/// Whether an aggregator promises the weighted mean: its resolved parameters say
/// `weighted = true`, or (without such a parameter) its summary line says "weighted" and not
/// "unweighted".
pub fn claims_weighted_mean(doc: &str, resolved: &toml::Table) -> bool {
    match resolved.get("weighted") {
        Some(w) => w.as_bool() == Some(true),
        None => {
            let summary = doc.lines().next().unwrap_or("").to_lowercase();
            summary.contains("weighted") && !summary.contains("unweighted")
        }
    }
}
