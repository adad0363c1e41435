//! FedNova: Wang, Liu, Liang, Joshi, Poor, "Tackling the Objective Inconsistency Problem in
//! Heterogeneous Federated Optimization", NeurIPS 2020.
//!
//! When clients take different numbers of local steps tau_i (different data sizes or epochs,
//! stragglers), FedAvg implicitly weights client i by p_i tau_i and converges to a stationary
//! point of a mismatched objective. FedNova normalises each client's progress: client i runs its
//! local solver from x to y_i and reports d_i = (x - y_i) / a_i with a_i = ||a_i||_1, the sum of the
//! weights its solver puts on its local gradients:
//! - plain SGD: a_i = tau_i;
//! - SGD with momentum rho (`client.momentum`, PyTorch's heavy ball):
//!   a_i = [tau_i - rho (1 - rho^tau_i) / (1 - rho)] / (1 - rho);
//! - Nesterov momentum (`client.nesterov`): a_i = [tau_i - rho^2 (1 - rho^tau_i) / (1 - rho)] / (1 - rho).
//!
//! The server sets x <- x - eta_g tau_eff sum_i p_i d_i with p_i = n_i / n over the cohort and
//! tau_eff = sum_i p_i a_i: each client counts with its data share p_i, whatever its tau_i. With
//! equal tau_i and plain SGD this is FedAvg (tested).
//!
//! In fedkit a client sends -d_i = (y_i - x) / a_i as its update (a delta's usual sign) and a_i as
//! the side payload `a`, weighted by n_i; the `mean` aggregator's weighted mean then yields both
//! sum_i p_i (-d_i) and tau_eff (reported as the metric `tau_eff`), so any aggregator that averages
//! side payloads works.
//!
//! Notes: a_i ignores `client.weight_decay`, as the authors' code (JYWa/FedNova) and NIID-Bench do;
//! Adam has no a_i and is rejected; the proximal (FedProx + FedNova) variant is not included.
//! Stragglers send partial work (FedNova is built for heterogeneous tau_i).
//!
//! Parameters: `server_lr` (the global step size eta_g > 0, default 1.0 as in the paper).
//!
//! ```toml
//! [algorithm]
//! use = "fednova"
//! server_lr = 1.0
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, Extra, LocalTrain, Metrics, Model, NoHook, OptimizerKind,
    Params, Result, RoundCtx, StragglerPolicy, Update, local_update,
};
use serde::{Deserialize, Serialize};

/// The update key of a client's normaliser a_i.
pub const NORMALIZER_KEY: &str = "a";

/// FedNova.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedNova {
    /// Global step size eta_g.
    pub server_lr: f64,
}

impl Default for FedNova {
    fn default() -> Self {
        FedNova { server_lr: 1.0 }
    }
}

impl FedNova {
    /// Check eta_g.
    pub fn validated(self) -> Result<Self> {
        if !(self.server_lr > 0.0 && self.server_lr.is_finite()) {
            return Err(Error::config("server_lr", format!("must be a finite number > 0, got {}", self.server_lr)));
        }
        Ok(self)
    }
}

/// a_i = ||a_i||_1 for `tau` local steps of SGD with momentum `rho` (0: plain SGD), heavy-ball or
/// Nesterov: the total weight the local solver puts on its gradients.
pub fn normalizer(tau: usize, rho: f64, nesterov: bool) -> f64 {
    if rho == 0.0 {
        return tau as f64;
    }
    let lead = if nesterov { rho * rho } else { rho };
    (tau as f64 - lead * (1.0 - rho.powf(tau as f64)) / (1.0 - rho)) / (1.0 - rho)
}

/// The client optimiser's a_i for `tau` steps, or a config error for an optimiser without one.
fn client_normalizer(train: &LocalTrain, tau: usize) -> Result<f64> {
    match train.optimizer {
        OptimizerKind::Sgd => Ok(normalizer(tau, train.momentum, train.nesterov)),
        OptimizerKind::Adam => Err(Error::config(
            "client.optimizer",
            "fednova needs `sgd` (a_i is defined for SGD with or without momentum)",
        )),
    }
}

impl Algorithm for FedNova {
    type Client = ();
    type Server = ();

    fn straggler_policy(&self) -> StragglerPolicy {
        StragglerPolicy::Partial
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _: &mut ()) -> Result<Update> {
        client_normalizer(cx.train, 0)?;
        let (mut u, _) = local_update(cx, m, d, &mut NoHook)?;
        let tau = u.metrics.get("steps").copied().unwrap_or(0.0) as usize;
        let a = client_normalizer(cx.train, tau)?;
        if a > 0.0 {
            u.delta.as_mut_slice().iter_mut().for_each(|v| *v = (*v as f64 / a) as f32);
        }
        u.extras.insert(NORMALIZER_KEY, Extra::Scalar(a));
        Ok(u)
    }

    fn server_update(&self, _r: &RoundCtx, w: &mut Params, _s: &mut (), agg: &Aggregate) -> Result<Metrics> {
        let tau_eff = agg.extras.scalar(NORMALIZER_KEY).ok_or_else(|| {
            Error::Method(
                "fednova: the aggregate carries no `a` (tau_eff); use an aggregator that averages side payloads, \
                 e.g. `mean`"
                    .into(),
            )
        })?;
        w.axpy((self.server_lr * tau_eff) as f32, &agg.delta);
        Ok(Metrics::from([("tau_eff".to_string(), tau_eff)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::{Fed, LinReg, assert_close, random_data, split};
    use fedkit_core::{Layout, ParamKind, RngStream};

    const FEATURES: usize = 3;

    /// Clients of the given sizes (heterogeneous features), batch 4, `epochs` epochs.
    fn fed<A: Algorithm>(algo: A, sizes: &[usize], epochs: usize) -> Fed<A> {
        let data = split(&random_data(sizes.iter().sum(), &[1.0, 0.5, 2.0], 5), sizes);
        let train = LocalTrain { lr: 0.05, epochs, batch_size: 4, ..LocalTrain::default() };
        let global = LinReg::new(FEATURES).init(&mut RngStream::new(9));
        Fed::new(algo, FEATURES, data, train, global)
    }

    #[test]
    fn equal_step_counts_with_plain_sgd_give_fedavg() {
        let (mut n, mut a) = (fed(FedNova::default(), &[12, 12, 12], 2), fed(FedAvg {}, &[12, 12, 12], 2));
        let start = n.global.clone();
        let ups = n.round(1, &[0, 1, 2]);
        a.round(1, &[0, 1, 2]);
        assert!(ups.iter().all(|u| u.extras.scalar(NORMALIZER_KEY) == Some(6.0)), "a_i = tau_i = 6");
        assert_close(n.global.as_slice(), a.global.as_slice(), 1e-6);
        assert!(n.global.sub(&start).l2() > 1e-2, "the round moved the model (the equality is not trivial)");
    }

    #[test]
    fn unequal_step_counts_weight_clients_by_data_share_only() {
        let sizes = [4, 12, 20]; // tau_i = 1, 3, 5 steps of batch 4
        let (mut n, mut a) = (fed(FedNova::default(), &sizes, 1), fed(FedAvg {}, &sizes, 1));
        let x = n.global.clone();
        n.round(1, &[0, 1, 2]);
        let (_, plain) = a.clients_round(1, &[0, 1, 2]); // the same local runs: y_i - x
        let total: f64 = sizes.iter().sum::<usize>() as f64;
        let p: Vec<f64> = sizes.iter().map(|&s| s as f64 / total).collect();
        let tau: Vec<f64> = plain.iter().map(|u| u.metrics["steps"]).collect();
        assert_eq!(tau, vec![1.0, 3.0, 5.0]);
        let tau_eff: f64 = p.iter().zip(&tau).map(|(p, t)| p * t).sum();
        // x - tau_eff sum_i p_i d_i with d_i = (x - y_i) / tau_i.
        let want: Vec<f32> = (0..x.len())
            .map(|j| {
                let step: f64 = (0..3).map(|i| p[i] * plain[i].delta.as_slice()[j] as f64 / tau[i]).sum();
                (x.as_slice()[j] as f64 + tau_eff * step) as f32
            })
            .collect();
        assert_close(n.global.as_slice(), &want, 1e-6);
        // FedAvg instead weights by p_i tau_i, and lands elsewhere.
        a.server_round(1, &plain);
        assert!(a.global.sub(&n.global).l2() > 1e-3, "FedNova differs from FedAvg with unequal tau_i");
    }

    #[test]
    fn momentum_normalizer_is_the_l1_norm_of_the_solver_weights() {
        for rho in [0.0f64, 0.5, 0.9, 0.99] {
            for tau in 1..=30usize {
                // Heavy ball: the gradient of step k (1-based) enters the next tau - k + 1 steps with
                // weights 1, rho, rho^2, ...: sum_{k=1}^{tau} sum_{j<k} rho^j.
                let series: f64 = (1..=tau).map(|k| (0..k).map(|j| rho.powi(j as i32)).sum::<f64>()).sum();
                let got = normalizer(tau, rho, false);
                assert!((got - series).abs() <= 1e-9 * series, "rho {rho}, tau {tau}: {got} vs {series}");
                // Against fedkit's own optimiser: tau steps on gradient 1 move w by lr * a_i.
                for nesterov in [false, true] {
                    if nesterov && rho == 0.0 {
                        continue;
                    }
                    let mut l = Layout::new();
                    l.push("w", &[1], ParamKind::Weight);
                    let cfg = LocalTrain { momentum: rho, nesterov, lr: 1.0, ..LocalTrain::default() };
                    let mut opt = fedkit_core::optim::Optimizer::new(&cfg, &l);
                    let mut w = [0.0f32];
                    (0..tau).for_each(|_| opt.step(&mut w, &[1.0], 1.0));
                    let want = -w[0] as f64;
                    let got = normalizer(tau, rho, nesterov);
                    assert!(
                        (got - want).abs() <= 1e-5 * want,
                        "rho {rho}, tau {tau}, nesterov {nesterov}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn adam_is_rejected() {
        let mut n = fed(FedNova::default(), &[4], 1);
        n.train.optimizer = OptimizerKind::Adam;
        let b = fedkit_core::Extras::default();
        let cx = ClientCtx {
            round: 1,
            client: 0,
            seed: 0,
            global: &n.global,
            broadcast: &b,
            train: &n.train,
            epochs: 1,
            malicious: false,
            step: &fedkit_core::PlainStep,
            loss: &fedkit_core::CrossEntropyLoss,
            train_hook: None,
        };
        let err = n.algo.client_update(&cx, &mut n.model, &n.data[0], &mut ()).unwrap_err();
        assert!(err.to_string().contains("client.optimizer"), "{err}");
    }
}
