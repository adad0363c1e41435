//! FedDyn: Acar, Zhao, Matas, Mattina, Whatmough, Saligrama, "Federated Learning Based on Dynamic
//! Regularization", ICLR 2021 (Algorithm 1).
//!
//! A dynamic regulariser per client makes the fixed points of local training agree with the
//! stationary points of the global loss sum_k L_k, despite heterogeneous data and partial
//! participation. Client k keeps grad_k (zero at the start); given the server model theta^{t-1}
//! it approximately minimises
//! L_k(theta) - <grad_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2
//! by local SGD (each mini-batch gradient gets -grad_k + alpha (theta - theta^{t-1})), sends
//! theta_k^t - theta^{t-1} and sets grad_k <- grad_k - alpha (theta_k^t - theta^{t-1}). The server
//! keeps h (zero at the start) and sets
//! h <- h - alpha (1/m) sum_{k in P_t} (theta_k^t - theta^{t-1}) and
//! theta^t = (1/|P_t|) sum_{k in P_t} theta_k^t - (1/alpha) h,
//! with P_t the clients whose updates the aggregator accepted (an exact, unweighted mean, as in the
//! paper and the authors' code) and m the number of clients in the federation. Each round
//! reports `h_norm` = ||h||.
//!
//! Notes:
//! - The authors' code (alpemreacar/FedDyn) also clips local gradients to norm 10 and, with
//!   unbalanced data, scales alpha per client by mean(n)/n_k; neither is part of Algorithm 1 and
//!   neither is done here.
//! - Running-statistic buffers carry no state (grad_k and h are zero there): they are averaged.
//! - From zero state the first local run is plain local SGD.
//! - Tested: on two clients with different minimisers and curvatures, full-batch local steps
//!   converge to the stationary point of sum_k L_k, where FedAvg stops short (client drift).
//!
//! Parameters: `alpha` (the regularisation coefficient alpha > 0, default 0.01; the paper tries
//! 0.1, 0.01 and 0.001).
//!
//! ```toml
//! [algorithm]
//! use = "feddyn"
//! alpha = 0.01
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, Metrics, Model, Params, Result, RoundCtx, ServerView, Update,
    local_update,
};
use serde::{Deserialize, Serialize};

use super::state_vectors::{accepted_sum, stored_or_zeros, zero_buffers};

/// FedDyn.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedDyn {
    /// Regularisation coefficient alpha.
    pub alpha: f64,
}

impl Default for FedDyn {
    fn default() -> Self {
        FedDyn { alpha: 0.01 }
    }
}

impl FedDyn {
    /// Check alpha.
    pub fn validated(self) -> Result<Self> {
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(Error::config("alpha", format!("must be a finite number > 0, got {}", self.alpha)));
        }
        Ok(self)
    }
}

impl Algorithm for FedDyn {
    /// The client's grad_k (`None`: zero, never participated).
    type Client = Option<Params>;
    /// The server's h (`None`: zero, before the first round).
    type Server = Option<Params>;

    fn client_update(
        &self,
        cx: &ClientCtx,
        m: &mut dyn Model,
        d: &ClientData,
        grad_k: &mut Option<Params>,
    ) -> Result<Update> {
        let alpha = self.alpha as f32;
        let g_k = stored_or_zeros(grad_k, cx.global)?;
        let (start, lin) = (cx.global.as_slice(), g_k.as_slice());
        let mut hook = |_: usize, w: &Params, g: &mut Params| {
            let terms = g.as_mut_slice().iter_mut().zip(w.as_slice()).zip(start).zip(lin);
            terms.for_each(|(((g, w), w0), gk)| *g += alpha * (w - w0) - gk);
        };
        let (u, _) = local_update(cx, m, d, &mut hook)?;
        let mut next = g_k;
        next.axpy(-alpha, &u.delta);
        zero_buffers(&mut next);
        *grad_k = Some(next);
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        h: &mut Option<Params>,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        let (sum, n) = accepted_sum(view.updates, &agg.accepted, w.len(), |u| Ok(&u.delta))?;
        if n == 0 {
            return Ok(Metrics::new());
        }
        let (alpha, m) = (self.alpha, r.population.max(1) as f64);
        let mut h_next = stored_or_zeros(h, w)?;
        h_next.as_mut_slice().iter_mut().zip(&sum).for_each(|(h, s)| *h = (*h as f64 - alpha / m * s) as f32);
        zero_buffers(&mut h_next);
        let terms = w.as_mut_slice().iter_mut().zip(&sum).zip(h_next.as_slice());
        terms.for_each(|((w, s), h)| *w = (*w as f64 + s / n as f64 - *h as f64 / alpha) as f32);
        let metrics = Metrics::from([("h_norm".to_string(), h_next.l2())]);
        *h = Some(h_next);
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::{Fed, LinReg, assert_close, dataset, drifting_pair, random_data, split};
    use fedkit_core::{ClientId, LocalTrain, RngStream};

    /// Labels y = 1 + x0 + 2 x1 exactly, on the 3 x 3 grid of x in {0, 1, 2}^2 (twice), dealt to three
    /// clients of different sizes: every client's loss is minimised at w* = (1, 2), b* = 1.
    fn shared_minimiser() -> Fed<FedDyn> {
        let grid: Vec<Vec<f32>> = (0..18).map(|i| vec![(i % 3) as f32, (i / 3 % 3) as f32]).collect();
        let y: Vec<u32> = grid.iter().map(|x| 1 + x[0] as u32 + 2 * x[1] as u32).collect();
        let data = split(&dataset(&grid, &y), &[4, 6, 8]);
        let train = LocalTrain { lr: 0.05, epochs: 2, batch_size: 2, ..LocalTrain::default() };
        let start = LinReg::new(2).params(&[1.0, 2.0], 1.0);
        Fed::new(FedDyn { alpha: 0.1 }, 2, data, train, start)
    }

    #[test]
    fn a_shared_minimiser_is_a_fixed_point() {
        let mut f = shared_minimiser();
        let w_star = f.global.clone();
        for round in 1..=5 {
            let cohort: &[ClientId] = if round % 2 == 0 { &[0, 2] } else { &[0, 1, 2] };
            f.round(round, cohort);
            assert_close(f.global.as_slice(), w_star.as_slice(), 1e-6);
        }
        for (k, g) in f.clients.iter().enumerate() {
            assert!(g.as_ref().is_some_and(|g| g.l2() < 1e-6), "client {k}: grad_k stays 0");
        }
        assert!(f.server.as_ref().is_some_and(|h| h.l2() < 1e-6), "h stays 0");
    }

    #[test]
    fn h_and_grad_k_accumulate_as_algorithm_1() {
        let data = split(&random_data(24, &[1.0, 2.0], 2), &[6, 8, 10]);
        let train = LocalTrain { lr: 0.05, epochs: 1, batch_size: 3, ..LocalTrain::default() };
        let alpha = 0.5;
        let mut f = Fed::new(FedDyn { alpha }, 2, data, train, LinReg::new(2).init(&mut RngStream::new(4)));
        let (m, len) = (3.0, f.global.len());
        let mut h = vec![0.0f64; len];
        let mut grad = vec![vec![0.0f64; len]; 3];
        for (round, cohort) in [(1, [0, 1]), (2, [1, 2])] {
            let x = f.global.clone();
            let (_, ups) = f.clients_round(round, &cohort);
            f.server_round(round, &ups);
            let d = |i: usize, j: usize| ups[i].delta.as_slice()[j] as f64;
            for (i, u) in ups.iter().enumerate() {
                let g = &mut grad[u.client as usize];
                (0..len).for_each(|j| g[j] -= alpha * d(i, j));
            }
            (0..len).for_each(|j| h[j] -= alpha / m * (d(0, j) + d(1, j)));
            let want: Vec<f32> =
                (0..len).map(|j| (x.as_slice()[j] as f64 + (d(0, j) + d(1, j)) / 2.0 - h[j] / alpha) as f32).collect();
            assert_close(f.global.as_slice(), &want, 1e-6);
            let to32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
            assert_close(f.server.as_ref().unwrap().as_slice(), &to32(&h), 1e-6);
            for &c in &cohort {
                assert_close(f.clients[c as usize].as_ref().unwrap().as_slice(), &to32(&grad[c as usize]), 1e-6);
            }
        }
        assert!(h.iter().any(|v| v.abs() > 1e-3), "h is not trivially zero");
    }

    #[test]
    fn heterogeneous_clients_converge_to_the_global_stationary_point() {
        let (mut feddyn, mut avg) = (drifting_pair(FedDyn { alpha: 0.1 }), drifting_pair(FedAvg {}));
        for round in 1..=300 {
            feddyn.round(round, &[0, 1]);
            avg.round(round, &[0, 1]);
        }
        let (gd, ga) = (feddyn.global_grad_norm(), avg.global_grad_norm());
        assert!(gd < 1e-4, "FedDyn reaches the stationary point of sum_k L_k: |grad| = {gd}");
        assert!(ga > 1e-2, "FedAvg with many local steps does not (client drift): |grad| = {ga}");
    }
}
