//! Shared pieces of the composite (L1-regularised) methods `fedmid` and `feddualavg` (Yuan,
//! Zaheer, Reddi, "Federated Composite Optimization", ICML 2021): the soft-thresholding prox, which
//! coordinates the L1 term covers, the `lr_steps` side payload, and [`CompositeHook`], which runs a
//! proximal or dual-averaging local step on top of the shared plain-SGD training loop. Not a
//! registered method.

use std::ops::Range;

use fedkit_core::{
    Aggregate, Error, Extra, GradHook, Layout, LocalTrain, OptimizerKind, ParamKind, Params, Result, Update,
};

/// The extra each client sends: eta_c K, the sum of its local learning rates over its K local
/// steps (the server's proximal threshold and dual-averaging weight grow by eta_s times its mean).
pub const LR_STEPS: &str = "lr_steps";

/// soft(z, t) = sign(z) max(|z| - t, 0), the proximal map of t ||.||_1 (NaN stays NaN).
pub fn soft_threshold(z: f32, t: f32) -> f32 {
    if z > t {
        z - t
    } else if z < -t {
        z + t
    } else if z.is_nan() {
        z
    } else {
        0.0
    }
}

/// Check `l1` (finite, >= 0) and `server_lr` (finite, > 0).
pub fn validate_params(l1: f64, server_lr: f64) -> Result<()> {
    if !(l1.is_finite() && l1 >= 0.0) {
        return Err(Error::config("l1", format!("must be a finite number >= 0, got {l1}")));
    }
    super::server_opt::validate_server_lr(server_lr)
}

/// The coordinates of a layout by their role in the composite objective F(w) + l1 ||w||_1.
#[derive(Clone, Debug, Default)]
pub struct Coordinates {
    /// Running statistics: averaged, never trained or regularised.
    pub buffers: Vec<Range<usize>>,
    /// Trained without the L1 term: biases, norm parameters (and everything when l1 = 0).
    pub plain: Vec<Range<usize>>,
    /// Trained with the L1 term: weights and embeddings (when l1 > 0).
    pub regularised: Vec<Range<usize>>,
}

impl Coordinates {
    /// The roles of `layout`'s coordinates for the L1 weight `l1`.
    pub fn of(layout: &Layout, l1: f64) -> Self {
        let mut c = Coordinates::default();
        for e in layout.entries() {
            let to = match e.kind {
                ParamKind::Buffer => &mut c.buffers,
                ParamKind::Weight | ParamKind::Embedding if l1 > 0.0 => &mut c.regularised,
                _ => &mut c.plain,
            };
            to.push(e.range());
        }
        c
    }
}

/// Check that the client runs plain SGD (no momentum, no weight decay), which [`CompositeHook`]
/// needs to land exactly on the method's local iterate; errors name the `client.<key>` at fault.
pub fn check_plain_sgd(method: &str, train: &LocalTrain) -> Result<()> {
    let why = "the local step is a proximal / dual-averaging step on top of plain SGD";
    if train.optimizer != OptimizerKind::Sgd {
        return Err(Error::config("client.optimizer", format!("{method} needs `sgd` ({why})")));
    }
    if train.momentum != 0.0 {
        return Err(Error::config("client.momentum", format!("{method} needs momentum = 0 ({why})")));
    }
    if train.weight_decay != 0.0 {
        return Err(Error::config(
            "client.weight_decay",
            format!("{method} needs weight_decay = 0 ({why}; the regulariser is the method's `l1`)"),
        ));
    }
    Ok(())
}

/// A composite local run as a [`GradHook`] over plain SGD. It keeps the method's exact local
/// iterate `state` (FedMid: the primal x; FedDualAvg: the dual z) and at local step k, with
/// y = state - eta_c g, sets (state, target) = rule(k, y) on the regularised coordinates and
/// rewrites the gradient as g' = (w - target) / eta_c, so that the SGD step w - eta_c g' lands on
/// the primal target (up to one rounding; the next target is computed from `state`, so rounding
/// never accumulates). Plain coordinates take the unchanged SGD step, bit for bit the same in
/// `state` and in the model.
pub struct CompositeHook<F> {
    /// The exact local iterate (buffers: as at the start).
    pub state: Params,
    /// Local steps taken.
    pub steps: usize,
    lr: f32,
    coords: Coordinates,
    rule: F,
}

impl<F: FnMut(usize, f32) -> (f32, f32)> CompositeHook<F> {
    /// A hook starting from `state`, with client learning rate `lr` (eta_c) and `rule`.
    pub fn new(state: Params, lr: f32, coords: Coordinates, rule: F) -> Self {
        CompositeHook { state, steps: 0, lr, coords, rule }
    }

    /// The final iterate, with the running statistics of the trained model `w`.
    pub fn finish(mut self, w: &Params) -> Params {
        let (s, w) = (self.state.as_mut_slice(), w.as_slice());
        self.coords.buffers.iter().for_each(|r| s[r.clone()].copy_from_slice(&w[r.clone()]));
        self.state
    }
}

impl<F: FnMut(usize, f32) -> (f32, f32)> GradHook for CompositeHook<F> {
    fn on_grad(&mut self, step: usize, w: &Params, g: &mut Params) {
        let (s, w, g, lr) = (self.state.as_mut_slice(), w.as_slice(), g.as_mut_slice(), self.lr);
        for i in self.coords.plain.iter().flat_map(Clone::clone) {
            s[i] -= lr * g[i];
        }
        for i in self.coords.regularised.iter().flat_map(Clone::clone) {
            let (next, target) = (self.rule)(step, s[i] - lr * g[i]);
            s[i] = next;
            g[i] = (w[i] - target) / lr;
        }
        self.steps = step + 1;
    }
}

/// Check that local training left the model `w` on the method's last primal iterate `target`
/// (up to rounding): it does not when a `[local]` rule changes the step after the algorithm's
/// hook (FedNAR's co-clipping), which would silently turn the method into something else.
pub fn check_landed(method: &str, w: &Params, target: &Params, coords: &Coordinates) -> Result<()> {
    let (w, x) = (w.as_slice(), target.as_slice());
    for i in coords.regularised.iter().flat_map(Clone::clone) {
        if (w[i] - x[i]).abs() > 1e-5 * (1.0 + w[i].abs() + x[i].abs()) {
            return Err(Error::Method(format!(
                "{method}: a local step did not land on the proximal point ({} instead of {}); the `[local]` \
                 step rule must not change the step after the algorithm's hook (use `plain`, SAM or WRM)",
                w[i], x[i]
            )));
        }
    }
    Ok(())
}

/// Replace `u`'s delta by `end - start` and attach eta_c K (the [`LR_STEPS`] extra).
pub fn finish_update(u: &mut Update, start: &Params, end: &Params, lr: f64, steps: usize) {
    u.delta = end.sub(start);
    u.extras.insert(LR_STEPS, Extra::Scalar(lr * steps as f64));
}

/// The cohort's mean eta_c K: the aggregate's [`LR_STEPS`] extra (the `mean` aggregator averages
/// it with the update weights) or, for aggregators that drop extras, the weighted mean over the
/// accepted `updates`.
pub fn mean_lr_steps(method: &str, agg: &Aggregate, updates: &[Update]) -> Result<f64> {
    if let Some(x) = agg.extras.scalar(LR_STEPS) {
        return Ok(x);
    }
    let (mut sum, mut total) = (0.0, 0.0);
    for u in updates.iter().filter(|u| agg.accepted.contains(&u.client)) {
        if let Some(x) = u.extras.scalar(LR_STEPS) {
            sum += u.weight as f64 * x;
            total += u.weight as f64;
        }
    }
    if total > 0.0 {
        Ok(sum / total)
    } else {
        Err(Error::Method(format!("{method}: no update carries the `{LR_STEPS}` extra its server step needs")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn soft_threshold_is_the_l1_prox() {
        assert_eq!(soft_threshold(0.5, 0.2), 0.3);
        assert_eq!(soft_threshold(-0.5, 0.2), -0.3);
        assert_eq!(soft_threshold(0.2, 0.2), 0.0);
        assert_eq!(soft_threshold(-0.1, 0.2), 0.0);
        assert_eq!(soft_threshold(-0.1, 0.0), -0.1);
        assert!(soft_threshold(f32::NAN, 0.2).is_nan());
    }

    #[test]
    fn hook_lands_sgd_on_the_rule_and_keeps_plain_coordinates_exact() {
        let mut l = Layout::new();
        l.push("w", &[3], ParamKind::Weight);
        l.push("b", &[1], ParamKind::Bias);
        l.push("running_mean", &[1], ParamKind::Buffer);
        let l = Arc::new(l);
        let p = |v: Vec<f32>| Params::from_vec(l.clone(), v).unwrap();
        let coords = Coordinates::of(&l, 0.1);
        assert_eq!((coords.regularised.len(), coords.plain.len(), coords.buffers.len()), (1, 1, 1));
        let (lr, t) = (0.1f32, 0.05f32);
        let mut hook = CompositeHook::new(p(vec![0.1, -0.02, 1.0, 0.7, 9.0]), lr, coords, |_, y| {
            let x = soft_threshold(y, t);
            (x, x)
        });
        let mut w = hook.state.clone();
        let mut opt = fedkit_core::optim::Optimizer::new(&LocalTrain::default(), &l);
        for step in 0..3 {
            let mut g = p(vec![0.3, -0.3, -2.0, 0.25, 0.0]);
            hook.on_grad(step, &w, &mut g);
            opt.step(w.as_mut_slice(), g.as_slice(), lr);
            for (a, b) in w.as_slice()[..3].iter().zip(&hook.state.as_slice()[..3]) {
                assert!((a - b).abs() <= 1e-6, "the model lands on the prox iterate: {a} vs {b}");
            }
            assert_eq!(w.as_slice()[3], hook.state.as_slice()[3], "plain coordinates: the same SGD bits");
        }
        // |g| < l1 = 0.5 drives the first two coordinates to exactly 0 (0.1 -> 0.02 -> 0 -> 0 and
        // -0.02 -> 0); the third grows by 0.2 - 0.05 = 0.15 a step.
        let x = hook.state.as_slice();
        assert_eq!(x[0], 0.0);
        assert_eq!(x[1], 0.0);
        assert!((x[2] - 1.45).abs() < 1e-6);
        assert_eq!(hook.steps, 3);
        w.as_mut_slice()[4] = 8.0;
        assert_eq!(hook.finish(&w).as_slice()[4], 8.0, "buffers come from the trained model");
    }

    #[test]
    fn a_step_changed_after_the_hook_is_caught() {
        let mut l = Layout::new();
        l.push("w", &[2], ParamKind::Weight);
        l.push("b", &[1], ParamKind::Bias);
        let l = Arc::new(l);
        let p = |v: Vec<f32>| Params::from_vec(l.clone(), v).unwrap();
        let coords = Coordinates::of(&l, 0.1);
        let target = p(vec![0.0, 0.5, 3.0]);
        assert!(check_landed("fedmid", &p(vec![1e-9, 0.5000001, 7.0]), &target, &coords).is_ok(), "rounding only");
        let e = check_landed("fedmid", &p(vec![0.0, 0.49, 3.0]), &target, &coords).unwrap_err();
        assert!(e.to_string().contains("[local]"), "{e}");
    }

    #[test]
    fn mean_lr_steps_falls_back_to_the_accepted_updates() {
        let l = Arc::new({
            let mut l = Layout::new();
            l.push("w", &[1], ParamKind::Weight);
            l
        });
        let up = |client: u32, weight: f32, lr_steps: f64| {
            let mut u = Update {
                client,
                delta: Params::zeros(l.clone()),
                weight,
                extras: fedkit_core::Extras::default(),
                metrics: fedkit_core::Metrics::new(),
            };
            u.extras.insert(LR_STEPS, Extra::Scalar(lr_steps));
            u
        };
        let ups = [up(1, 1.0, 0.5), up(2, 3.0, 1.5), up(3, 100.0, 99.0)];
        let mut agg = crate::aggregators::mean::weighted_mean(&ups[..2], true).unwrap();
        assert_eq!(mean_lr_steps("m", &agg, &[]).unwrap(), 1.25, "the mean aggregator carries it");
        agg.extras = fedkit_core::Extras::default();
        assert_eq!(mean_lr_steps("m", &agg, &ups).unwrap(), 1.25, "client 3 was not accepted");
        assert!(mean_lr_steps("m", &agg, &[]).is_err());
    }

    #[test]
    fn plain_sgd_is_required() {
        let ok = LocalTrain::default();
        assert!(check_plain_sgd("fedmid", &ok).is_ok());
        let e = check_plain_sgd("fedmid", &LocalTrain { momentum: 0.9, ..ok.clone() }).unwrap_err();
        assert!(e.to_string().contains("client.momentum"), "{e}");
        let e = check_plain_sgd("fedmid", &LocalTrain { optimizer: OptimizerKind::Adam, ..ok.clone() }).unwrap_err();
        assert!(e.to_string().contains("client.optimizer"), "{e}");
        let e = check_plain_sgd("fedmid", &LocalTrain { weight_decay: 1e-4, ..ok }).unwrap_err();
        assert!(e.to_string().contains("client.weight_decay"), "{e}");
    }
}

/// A sparse federated regression for the composite methods' tests.
#[cfg(test)]
pub(crate) mod testing {
    use fedkit_core::{Algorithm, ClientData, LocalTrain, Params, RngStream};

    use crate::algorithms::testing::{Fed, LinReg, dataset};

    /// Features of the regression; only the first three matter on average.
    pub const FEATURES: usize = 40;
    /// Clients of the federation.
    pub const CLIENTS: usize = 8;

    /// Client c holds 30 samples x ~ N(0, 1) with labels max(0, round(12 + x . (w* + e_c))),
    /// w* = (2, -1.5, 1, 0, ..., 0) and e_c ~ N(0, 0.1^2) per coordinate (the client's own
    /// perturbation of the optimum): the clients' own optima are dense, their average is nearly
    /// sparse.
    pub fn lasso_clients() -> Vec<ClientData> {
        let mut rng = RngStream::new(2021);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..CLIENTS {
            let w: Vec<f64> = (0..FEATURES)
                .map(|j| [2.0, -1.5, 1.0].get(j).copied().unwrap_or(0.0) + rng.gaussian(0.0, 0.1))
                .collect();
            for _ in 0..30 {
                let row: Vec<f64> = (0..FEATURES).map(|_| rng.normal()).collect();
                let label = 12.0 + row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>();
                x.push(row.iter().map(|v| *v as f32).collect::<Vec<f32>>());
                y.push(label.round().max(0.0) as u32);
            }
        }
        crate::algorithms::testing::split(&dataset(&x, &y), &[30; CLIENTS])
    }

    /// A federation of [`lasso_clients`] running `algo` from w = 0 with 12 local SGD steps per
    /// round (30 samples, 2 epochs of batch 5, lr 0.05).
    pub fn lasso_fed<A: Algorithm>(algo: A) -> Fed<A> {
        let train = LocalTrain { lr: 0.05, epochs: 2, batch_size: 5, ..LocalTrain::default() };
        let global = LinReg::new(FEATURES).params(&[0.0; FEATURES], 0.0);
        Fed::new(algo, FEATURES, lasso_clients(), train, global)
    }

    /// The composite objective F(w) + l1 ||w||_1 (weights only) of `fed`'s global model on all
    /// of its clients' data.
    pub fn objective<A: Algorithm>(fed: &mut Fed<A>, l1: f64) -> f64 {
        let (mut loss, mut n) = (0.0, 0);
        for d in &fed.data {
            let s = fedkit_core::evaluate_range(&mut fed.model, &fed.global, d, 0..d.len(), 64).unwrap();
            (loss, n) = (loss + s.loss_sum, n + s.count);
        }
        let norm: f64 = fed.global.as_slice()[..FEATURES].iter().map(|v| v.abs() as f64).sum();
        loss / n as f64 + l1 * norm
    }

    /// Assert that `algo` (with l1 = 0 and server_lr = 1) moves the global model exactly as
    /// FedAvg over six rounds of changing cohorts.
    pub fn assert_runs_like_fedavg<A: Algorithm>(algo: A) {
        let (mut fed, mut avg) = (lasso_fed(algo), lasso_fed(crate::algorithms::fedavg::FedAvg {}));
        for round in 1..=6 {
            let cohort: Vec<u32> = if round % 2 == 0 { (0..5).collect() } else { (3..CLIENTS as u32).collect() };
            fed.round(round, &cohort);
            avg.round(round, &cohort);
            assert_eq!(fed.global.as_slice(), avg.global.as_slice(), "round {round}");
        }
    }

    /// Exact zeros among the weights (not the bias) of `p`.
    pub fn zero_weights(p: &Params) -> usize {
        p.as_slice()[..FEATURES].iter().filter(|v| **v == 0.0).count()
    }
}
