//! FedDualAvg (Federated Dual Averaging): Yuan, Zaheer, Reddi, "Federated Composite
//! Optimization", ICML 2021 (Algorithm 2), for F(w) + lambda ||w||_1.
//!
//! A primal-dual method that averages in the dual space, which avoids FedMid's "curse of primal
//! averaging" and keeps the global model exactly sparse. With the mirror map h = 1/2 ||.||^2 the
//! dual of x is x itself and the primal of a dual z is the soft-thresholding
//! x = soft(z, eta~ lambda) = sign(z) max(|z| - eta~ lambda, 0). The server keeps a dual z_r
//! (z_0 = x_0) and sends it to the round's clients; client m sets z_{r,0} = z_r and for
//! k = 0..K-1 takes x_{r,k} = soft(z_{r,k}, eta~_{r,k} lambda), g = grad f(x_{r,k}; xi),
//! z_{r,k+1} = z_{r,k} - eta_c g, with eta~_{r,k} = eta_s eta_c K r + eta_c k; it sends
//! Delta^m = z_{r,K} - z_{r,0} (as its update's delta, so any aggregator combines it). The server
//! sets z_{r+1} = z_r + eta_s Delta_r and the global model x_{r+1} = soft(z_{r+1},
//! eta~_{r+1,0} lambda): the threshold grows with the rounds, so every coordinate whose average
//! gradient stays below lambda is exactly 0.
//!
//! fedkit details: L1 covers weights and embeddings, not biases, norm parameters or buffers
//! (buffers are averaged: x += Delta). eta_s eta_c K r is kept as a running sum of eta_s times the
//! cohort's mean eta_c K (each client reports its `lr_steps`), which is the paper's value when
//! every client takes K steps. The downlink carries z besides the global model (extras `dual`,
//! `eta_tilde`). The local dual step runs on the shared SGD loop (the gradient is rewritten so
//! that the SGD step lands on the next primal point), so it needs plain local SGD:
//! `client.optimizer = "sgd"`, `client.momentum = 0`, `client.weight_decay = 0` (checked; a
//! `[local]` rule that changes the step after the algorithm's hook, such as FedNAR's co-clipping,
//! does not compose with it and is reported as an error). With lambda = 0 and eta_s = 1 it is
//! FedAvg exactly (tested).
//!
//! Parameters:
//! - `l1` (lambda >= 0, default 1e-3, the value of the paper's federated fMRI experiment).
//! - `server_lr` (eta_s > 0, default 1.0).
//!
//! ```toml
//! [algorithm]
//! use = "feddualavg"
//! l1 = 0.001
//! server_lr = 1.0
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, Extra, Extras, Metrics, Model, Params, Result, RoundCtx,
    ServerView, Update, local_update_from,
};
use serde::{Deserialize, Serialize};

use super::composite::{
    CompositeHook, Coordinates, check_landed, check_plain_sgd, finish_update, mean_lr_steps, soft_threshold,
    validate_params,
};

/// The broadcast extra holding the server dual z_r.
const DUAL: &str = "dual";
/// The broadcast extra holding eta~_{r,0} = eta_s eta_c K r.
const ETA_TILDE: &str = "eta_tilde";

/// FedDualAvg.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedDualAvg {
    /// L1 weight lambda.
    pub l1: f64,
    /// Server learning rate eta_s.
    pub server_lr: f64,
}

impl Default for FedDualAvg {
    fn default() -> Self {
        FedDualAvg { l1: 1e-3, server_lr: 1.0 }
    }
}

/// The server's dual state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FedDualAvgState {
    /// The dual z_r (`None` before the first round: z_0 = x_0).
    pub dual: Option<Params>,
    /// eta~_{r,0} = eta_s eta_c K r, summed over the rounds so far.
    pub eta_tilde: f64,
}

impl FedDualAvg {
    /// Check the ranges.
    pub fn validated(self) -> Result<Self> {
        validate_params(self.l1, self.server_lr)?;
        Ok(self)
    }

    /// The primal of the dual `z` at threshold `eta_tilde * l1`: soft-thresholding on the
    /// regularised coordinates, the identity elsewhere.
    fn primal(&self, z: &Params, eta_tilde: f64) -> Params {
        let mut x = z.clone();
        let t = (eta_tilde * self.l1) as f32;
        let xs = x.as_mut_slice();
        Coordinates::of(z.layout(), self.l1).regularised.iter().flat_map(Clone::clone).for_each(|i| {
            xs[i] = soft_threshold(xs[i], t);
        });
        x
    }

    /// The server's dual step with the cohort's mean eta_c K `lr_steps`.
    fn server_rule(&self, w: &mut Params, s: &mut FedDualAvgState, agg: &Aggregate, lr_steps: f64) -> Result<Metrics> {
        let z = s.dual.get_or_insert_with(|| w.clone());
        if z.len() != w.len() || agg.delta.len() != w.len() {
            return Err(Error::Shape(format!(
                "feddualavg: dual has {} values, aggregate {}, model {}",
                z.len(),
                agg.delta.len(),
                w.len()
            )));
        }
        s.eta_tilde += self.server_lr * lr_steps;
        let coords = Coordinates::of(w.layout(), self.l1);
        let eta_s = self.server_lr as f32;
        let (zs, ws, d) = (z.as_mut_slice(), w.as_mut_slice(), agg.delta.as_slice());
        for i in coords.buffers.iter().flat_map(Clone::clone) {
            ws[i] += d[i];
            zs[i] = ws[i];
        }
        for i in coords.plain.iter().chain(&coords.regularised).flat_map(Clone::clone) {
            zs[i] += eta_s * d[i];
        }
        *w = self.primal(z, s.eta_tilde);
        Ok(Metrics::from([("prox_threshold".to_string(), s.eta_tilde * self.l1)]))
    }
}

impl Algorithm for FedDualAvg {
    type Client = ();
    type Server = FedDualAvgState;
    fn reads_updates(&self) -> bool {
        true
    }

    fn supports_masks(&self) -> bool {
        false
    }

    fn broadcast(&self, r: &RoundCtx, s: &FedDualAvgState) -> Extras {
        let mut e = Extras::default();
        e.insert(DUAL, Extra::Params(s.dual.clone().unwrap_or_else(|| r.global.clone())));
        e.insert(ETA_TILDE, Extra::Scalar(s.eta_tilde));
        e
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _: &mut ()) -> Result<Update> {
        check_plain_sgd("feddualavg", cx.train)?;
        let missing = |k: &str| Error::Method(format!("feddualavg: the broadcast carries no `{k}`"));
        let z0 = cx.broadcast.params(DUAL).ok_or_else(|| missing(DUAL))?;
        let eta0 = cx.broadcast.scalar(ETA_TILDE).ok_or_else(|| missing(ETA_TILDE))?;
        let (lr, l1) = (cx.train.lr, self.l1);
        let coords = Coordinates::of(z0.layout(), l1);
        let mut hook = CompositeHook::new(z0.clone(), lr as f32, coords, |k, z| {
            (z, soft_threshold(z, ((eta0 + lr * (k + 1) as f64) * l1) as f32))
        });
        let (mut u, w) = local_update_from(cx, self.primal(z0, eta0), "batches", m, d, &mut hook)?;
        let steps = hook.steps;
        let z = hook.finish(&w);
        let x = self.primal(&z, eta0 + lr * steps as f64);
        check_landed("feddualavg", &w, &x, &Coordinates::of(w.layout(), l1))?;
        finish_update(&mut u, z0, &z, lr, steps);
        Ok(u)
    }

    fn server_update(&self, _: &RoundCtx, w: &mut Params, s: &mut FedDualAvgState, agg: &Aggregate) -> Result<Metrics> {
        self.server_rule(w, s, agg, mean_lr_steps("feddualavg", agg, &[])?)
    }

    fn server_step(
        &self,
        _: &RoundCtx,
        w: &mut Params,
        s: &mut FedDualAvgState,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        self.server_rule(w, s, agg, mean_lr_steps("feddualavg", agg, view.updates)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::composite::testing::{
        CLIENTS, FEATURES, assert_runs_like_fedavg, lasso_fed, objective, zero_weights,
    };
    use super::super::fedavg::FedAvg;
    use super::super::fedmid::FedMid;
    use super::*;
    use crate::aggregators::mean::weighted_mean;

    const ROUNDS: u32 = 20;

    fn all() -> Vec<u32> {
        (0..CLIENTS as u32).collect()
    }

    #[test]
    fn global_model_is_exactly_sparse_where_primal_averaging_is_dense() {
        let mut da = lasso_fed(FedDualAvg { l1: 0.1, server_lr: 1.0 });
        let mut mid = lasso_fed(FedMid { l1: 0.1, server_lr: 1.0 });
        let mut avg = lasso_fed(FedAvg {});
        let (mut client_zeros, mut average_zeros) = (Vec::new(), 0);
        for round in 1..=ROUNDS {
            da.round(round, &all());
            avg.round(round, &all());
            let (_, ups) = mid.clients_round(round, &all());
            let model = |delta: &Params| {
                let mut x = mid.global.clone();
                x.axpy(1.0, delta);
                x
            };
            client_zeros = ups.iter().map(|u| zero_weights(&model(&u.delta))).collect();
            average_zeros = zero_weights(&model(&weighted_mean(&ups, true).unwrap().delta));
            mid.server_round(round, &ups);
        }
        // 37 of the 40 features carry no signal on average: dual averaging zeroes (nearly) all of
        // them exactly and keeps the three that do.
        let x = da.global.as_slice();
        assert!(zero_weights(&da.global) >= 35, "feddualavg zeros: {} of {FEATURES}", zero_weights(&da.global));
        assert!(x[0] > 1.5 && x[1] < -1.0 && x[2] > 0.5, "the signal survives: {:?}", &x[..3]);
        // The curse of primal averaging: FedMid's client models are sparse, on different supports,
        // so their average is dense.
        assert!(client_zeros.iter().sum::<usize>() >= 3 * CLIENTS, "client zeros {client_zeros:?}");
        assert!(average_zeros <= 2, "the average of sparse client models has {average_zeros} zeros");
        assert_eq!(zero_weights(&avg.global), 0, "fedavg (no L1) is dense");
    }

    #[test]
    fn reaches_a_lower_composite_objective_than_fedmid() {
        let l1 = 0.1;
        let mut da = lasso_fed(FedDualAvg { l1, server_lr: 1.0 });
        let mut mid = lasso_fed(FedMid { l1, server_lr: 1.0 });
        for round in 1..=ROUNDS {
            da.round(round, &all());
            mid.round(round, &all());
        }
        let (f_da, f_mid) = (objective(&mut da, l1), objective(&mut mid, l1));
        assert!(f_da < f_mid - 0.01, "F + l1 |w|_1: feddualavg {f_da} vs fedmid {f_mid}");
    }

    #[test]
    fn zero_l1_is_fedavg_bit_for_bit() {
        assert_runs_like_fedavg(FedDualAvg { l1: 0.0, server_lr: 1.0 });
    }

    #[test]
    fn the_threshold_grows_by_eta_s_eta_c_k_a_round() {
        let mut da = lasso_fed(FedDualAvg { l1: 0.1, server_lr: 0.5 });
        for round in 1..=3 {
            da.round(round, &all());
            // K = 2 epochs x 30 / 5 = 12 steps of eta_c = 0.05: eta~ = r * 0.5 * 0.05 * 12.
            assert!((da.server.eta_tilde - round as f64 * 0.3).abs() < 1e-9, "{}", da.server.eta_tilde);
            let z = da.server.dual.as_ref().unwrap();
            assert_eq!(da.global, da.algo.primal(z, da.server.eta_tilde), "x_r = soft(z_r, eta~_r lambda)");
        }
        let b = da.clients_round(4, &[0]).0;
        assert_eq!(b.scalar(ETA_TILDE), Some(da.server.eta_tilde));
        assert_eq!(b.params(DUAL), da.server.dual.as_ref());
    }
}
