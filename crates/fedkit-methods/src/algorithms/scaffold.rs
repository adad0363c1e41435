//! SCAFFOLD: Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic Controlled
//! Averaging for Federated Learning", ICML 2020 (Algorithm 1 with option II).
//!
//! Control variates correct the client drift of local SGD on heterogeneous data. The server keeps
//! c and client i keeps c_i, all zero at the start. Client i starts from y_i = x and takes K local
//! steps y_i <- y_i - eta_l (g_i(y_i) - c_i + c); then (option II)
//! c_i+ = c_i - c + (x - y_i) / (K eta_l), with K the local steps it actually took (see the
//! momentum note) and eta_l = `client.lr`. It sends Delta y_i = y_i - x (the update) and
//! Delta c_i = c_i+ - c_i (side payload `delta_c`) and keeps c_i+. The server sets
//! x <- x + eta_g Delta x, with Delta x the aggregate of
//! the Delta y_i, and c <- c + (|S| / N) (1 / |S|) sum_{i in S} Delta c_i, where S are the clients
//! whose updates the aggregator accepted and N is the number of clients in the federation (an
//! exact sum in client-id order, whatever the aggregator). With full participation c stays the
//! mean of the c_i (tested). Each round reports `control_norm` = ||c||.
//!
//! Notes:
//! - Communication doubles: c goes to every client with x (`bytes_down`), Delta c_i comes back with
//!   Delta y_i (`bytes_up`), as the paper says.
//! - The paper's Delta x is the plain mean of the Delta y_i; the default `mean` aggregator weights
//!   by sample count, as NIID-Bench does (`[aggregator] weighted = false` gives the paper's).
//! - Momentum: the correction c - c_i is added to each mini-batch gradient before the `[client]`
//!   optimiser, so with `client.momentum` rho > 0 it goes through the momentum buffer, and option
//!   II's K becomes the total weight momentum SGD puts on its gradients, FedNova's
//!   ||a||_1 = [K - rho (1 - rho^K) / (1 - rho)] / (1 - rho) (Nesterov: rho^2 in place of the first
//!   rho), so that c_i stays an average gradient. (Dividing by K would over-correct by about
//!   1 / (1 - rho); it diverges on the toy problem of the tests. NIID-Bench's `train_net_scaffold`
//!   divides by K but subtracts eta_l (c - c_i) from the weights after each optimiser step, outside
//!   the momentum.) For plain SGD everything is the paper's; with Adam, K is the step count.
//! - Running-statistic buffers carry no control variate.
//! - In its first round (all control variates zero) SCAFFOLD is FedAvg bit for bit (tested); on
//!   clients with different minimisers it then removes the drift of FedAvg's many local steps,
//!   with and without momentum (tested).
//! - Stragglers are dropped, as for FedAvg; partial stragglers (`[sampling] stragglers =
//!   "partial"`) use their own K.
//!
//! Parameters: `server_lr` (the global step size eta_g > 0, default 1.0, as in the paper's
//! experiments).
//!
//! ```toml
//! [algorithm]
//! use = "scaffold"
//! server_lr = 1.0
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, Extra, Extras, LocalTrain, Metrics, Model, NoHook,
    OptimizerKind, Params, Result, RoundCtx, ServerView, Update, local_update,
};
use serde::{Deserialize, Serialize};

use super::fednova::normalizer;
use super::state_vectors::{accepted_sum, params_extra, stored_or_zeros, zero_buffers};

/// The broadcast key of the server control variate c.
pub const CONTROL_KEY: &str = "c";
/// The update key of a client's control-variate change Delta c_i.
pub const DELTA_CONTROL_KEY: &str = "delta_c";

/// SCAFFOLD.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scaffold {
    /// Global step size eta_g.
    pub server_lr: f64,
}

impl Default for Scaffold {
    fn default() -> Self {
        Scaffold { server_lr: 1.0 }
    }
}

impl Scaffold {
    /// Check eta_g.
    pub fn validated(self) -> Result<Self> {
        if !(self.server_lr > 0.0 && self.server_lr.is_finite()) {
            return Err(Error::config("server_lr", format!("must be a finite number > 0, got {}", self.server_lr)));
        }
        Ok(self)
    }
}

/// K in option II: the local steps for plain SGD (and Adam), the total weight ||a||_1 that SGD
/// with momentum puts on its gradients (FedNova's normaliser) otherwise.
fn effective_steps(train: &LocalTrain, steps: usize) -> f64 {
    match train.optimizer {
        OptimizerKind::Sgd => normalizer(steps, train.momentum, train.nesterov),
        OptimizerKind::Adam => steps as f64,
    }
}

impl Algorithm for Scaffold {
    /// The client's control variate c_i (`None`: zero, never participated).
    type Client = Option<Params>;
    /// The server control variate c (`None`: zero, before the first round).
    type Server = Option<Params>;

    fn broadcast(&self, r: &RoundCtx, c: &Option<Params>) -> Extras {
        let mut e = Extras::default();
        e.insert(CONTROL_KEY, Extra::Params(c.clone().unwrap_or_else(|| r.global.zeros_like())));
        e
    }

    fn client_update(
        &self,
        cx: &ClientCtx,
        m: &mut dyn Model,
        d: &ClientData,
        c_i: &mut Option<Params>,
    ) -> Result<Update> {
        let c = params_extra(cx.broadcast, CONTROL_KEY, cx.global, "scaffold")?;
        let ci = stored_or_zeros(c_i, cx.global)?;
        let correction = c.sub(&ci);
        let (mut u, _) = if correction.as_slice().iter().all(|v| *v == 0.0) {
            local_update(cx, m, d, &mut NoHook)?
        } else {
            let corr = correction.as_slice();
            let mut hook = |_: usize, _: &Params, g: &mut Params| {
                g.as_mut_slice().iter_mut().zip(corr).for_each(|(g, c)| *g += c);
            };
            local_update(cx, m, d, &mut hook)?
        };
        // Delta c_i = c_i+ - c_i = -c + (x - y_i) / (K eta_l) = -c - Delta y_i / (K eta_l).
        let steps = u.metrics.get("steps").copied().unwrap_or(0.0);
        let mut delta_c = u.delta.zeros_like();
        if steps > 0.0 {
            let k_lr = effective_steps(cx.train, steps as usize) * cx.train.lr;
            let out = delta_c.as_mut_slice().iter_mut().zip(c.as_slice()).zip(u.delta.as_slice());
            out.for_each(|((dc, c), dy)| *dc = (-(*c as f64) - *dy as f64 / k_lr) as f32);
        }
        zero_buffers(&mut delta_c);
        let mut ci_next = ci;
        ci_next.axpy(1.0, &delta_c);
        *c_i = Some(ci_next);
        u.extras.insert(DELTA_CONTROL_KEY, Extra::Params(delta_c));
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        c: &mut Option<Params>,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        let (sum, _) = accepted_sum(view.updates, &agg.accepted, w.len(), |u| {
            params_extra(&u.extras, DELTA_CONTROL_KEY, w, "scaffold")
        })?;
        let mut c_next = stored_or_zeros(c, w)?;
        let n = r.population.max(1) as f64;
        c_next.as_mut_slice().iter_mut().zip(&sum).for_each(|(c, s)| *c = (*c as f64 + s / n) as f32);
        w.axpy(self.server_lr as f32, &agg.delta);
        let mut metrics = Metrics::new();
        metrics.insert("control_norm".into(), c_next.l2());
        *c = Some(c_next);
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::{Fed, drifting_pair, random_data, split};
    use fedkit_core::{AnyState, DynAlgorithm, LocalTrain, RngStream};

    const FEATURES: usize = 3;

    /// Three clients with different feature scales and sizes (heterogeneous), several local steps.
    fn fed<A: Algorithm>(algo: A) -> Fed<A> {
        let data = split(&random_data(36, &[1.0, 0.5, 2.0], 1), &[8, 12, 16]);
        let train = LocalTrain { lr: 0.05, epochs: 2, batch_size: 4, ..LocalTrain::default() };
        let global = crate::algorithms::testing::LinReg::new(FEATURES).init(&mut RngStream::new(3));
        Fed::new(algo, FEATURES, data, train, global)
    }

    fn mean_of(ps: &[&Params]) -> Vec<f32> {
        let n = ps.len() as f64;
        (0..ps[0].len()).map(|j| (ps.iter().map(|p| p.as_slice()[j] as f64).sum::<f64>() / n) as f32).collect()
    }

    #[test]
    fn first_round_is_fedavg_bit_for_bit() {
        let (mut s, mut a) = (fed(Scaffold::default()), fed(FedAvg {}));
        let cohort = [0, 1, 2];
        let (us, ua) = (s.round(1, &cohort), a.round(1, &cohort));
        for (x, y) in us.iter().zip(&ua) {
            assert_eq!(x.delta, y.delta, "client {}: same local update as FedAvg", x.client);
            assert_eq!(x.weight, y.weight);
        }
        assert_eq!(s.global, a.global, "same new global model as FedAvg");
        assert!(s.server.as_ref().is_some_and(|c| c.l2() > 0.0), "the server variate moved");
        // From the second round on, the control variates change the local updates.
        let (us, ua) = (s.round(2, &cohort), a.round(2, &cohort));
        assert!(us.iter().zip(&ua).all(|(x, y)| x.delta != y.delta), "round 2 differs from FedAvg");
    }

    #[test]
    fn full_participation_keeps_c_the_mean_of_the_client_variates() {
        let mut s = fed(Scaffold::default());
        for round in 1..=4 {
            s.round(round, &[0, 1, 2]);
            let cis: Vec<&Params> = s.clients.iter().map(|c| c.as_ref().unwrap()).collect();
            let c = s.server.as_ref().unwrap();
            let worst = c.as_slice().iter().zip(mean_of(&cis)).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-6, "round {round}: c differs from mean(c_i) by {worst}");
            assert!(c.l2() > 1e-3, "c is not trivially zero");
        }
    }

    #[test]
    fn client_variates_follow_option_ii_persist_and_are_used() {
        let mut s = fed(Scaffold::default());
        let ups = s.round(1, &[0, 1]);
        // Option II from zero variates: c_i = (x - y_i) / (K eta_l) = -Delta y_i / (K eta_l).
        for u in &ups {
            let k_lr = u.metrics["steps"] * s.train.lr;
            let ci = s.clients[u.client as usize].as_ref().unwrap();
            let want: Vec<f32> = u.delta.as_slice().iter().map(|d| (-(*d as f64) / k_lr) as f32).collect();
            crate::algorithms::testing::assert_close(ci.as_slice(), &want, 1e-6);
            assert!(ci.l2() > 1e-3, "client {}: c_i is nonzero after participating", u.client);
        }
        assert!(s.clients[2].is_none(), "a client that did not participate keeps no variate");
        // Partial participation: c = (1/N) sum of the cohort's Delta c_i, N = 3.
        let c = s.server.as_ref().unwrap();
        let sum: Vec<f32> = mean_of(&[s.clients[0].as_ref().unwrap(), s.clients[1].as_ref().unwrap()]);
        let want: Vec<f32> = sum.iter().map(|v| v * 2.0 / 3.0).collect();
        crate::algorithms::testing::assert_close(c.as_slice(), &want, 1e-6);

        // The state survives a bincode round trip, and client 0's next update uses it.
        let bytes = AnyState::to_bytes(&s.clients[0]).unwrap();
        let restored = DynAlgorithm::client_state_from_bytes(&s.algo, &bytes).unwrap();
        let restored = restored.as_any().downcast_ref::<Option<Params>>().unwrap().clone();
        assert_eq!(restored, s.clients[0]);
        let mut fresh = fed(Scaffold::default());
        (fresh.global, fresh.server) = (s.global.clone(), s.server.clone());
        fresh.clients[0] = restored;
        let (_, with_state) = s.clients_round(2, &[0]);
        let (_, from_bytes) = fresh.clients_round(2, &[0]);
        assert_eq!(with_state[0].delta, from_bytes[0].delta, "restored state gives the same update");
        fresh.clients[0] = None;
        let (_, without) = fresh.clients_round(2, &[0]);
        assert_ne!(with_state[0].delta, without[0].delta, "c_i is used in the next round");
    }

    #[test]
    fn control_variates_remove_client_drift() {
        let (mut s, mut a) = (drifting_pair(Scaffold::default()), drifting_pair(FedAvg {}));
        for round in 1..=200 {
            s.round(round, &[0, 1]);
            a.round(round, &[0, 1]);
        }
        let (gs, ga) = (s.global_grad_norm(), a.global_grad_norm());
        assert!(gs < 1e-4, "SCAFFOLD reaches the stationary point of sum_k L_k: |grad| = {gs}");
        assert!(ga > 1e-2, "FedAvg with many local steps does not (client drift): |grad| = {ga}");
    }

    #[test]
    fn with_momentum_the_variates_are_normalised_by_the_solver_weights() {
        // Dividing by K instead of ||a||_1 would over-correct by 1 / (1 - rho) and diverge here.
        let (mut s, mut a) = (drifting_pair(Scaffold::default()), drifting_pair(FedAvg {}));
        (s.train.momentum, a.train.momentum, s.train.lr, a.train.lr) = (0.9, 0.9, 0.01, 0.01);
        for round in 1..=100 {
            s.round(round, &[0, 1]);
            a.round(round, &[0, 1]);
        }
        let (gs, ga) = (s.global_grad_norm(), a.global_grad_norm());
        assert!(gs < 1e-4, "SCAFFOLD with momentum reaches the stationary point: |grad| = {gs}");
        assert!(ga > 1e-2, "FedAvg with momentum does not: |grad| = {ga}");
    }
}
