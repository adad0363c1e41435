//! FedDyn: Acar, Zhao, Matas, Mattina, Whatmough, Saligrama, "Federated Learning Based on Dynamic
//! Regularization", ICLR 2021 (Algorithm 1).
//!
//! A dynamic regulariser per client makes the fixed points of local training agree with the
//! stationary points of the global loss sum_k L_k, despite heterogeneous data and partial
//! participation. Client k keeps grad_k (zero at the start); given the server model theta^{t-1}
//! it approximately minimises
//! L_k(theta) - <grad_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2
//! by local SGD (each mini-batch gradient gets -grad_k + alpha (theta - theta^{t-1})), sends
//! theta_k^t - theta^{t-1} and sets grad_k <- grad_k - alpha (theta_k^t - theta^{t-1}) from the
//! delta as sent (after the client-side stages: `Algorithm::commit`), so that
//! h = (1/m) sum_k grad_k holds whatever the pipeline does to the delta (tested with clipping). The server
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
    fn reads_updates(&self) -> bool {
        true
    }
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
        Ok(local_update(cx, m, d, &mut hook)?.0)
    }

    /// grad_k <- grad_k - alpha (theta_k^t - theta^{t-1}), the delta as sent.
    fn commit(&self, cx: &ClientCtx, sent: &Update, grad_k: &mut Option<Params>) -> Result<()> {
        let mut next = stored_or_zeros(grad_k, cx.global)?;
        if sent.delta.len() != next.len() {
            return Err(Error::Shape(format!(
                "feddyn: a delta of {} values for a model of {}",
                sent.delta.len(),
                next.len()
            )));
        }
        next.axpy(-(self.alpha as f32), &sent.delta);
        zero_buffers(&mut next);
        *grad_k = Some(next);
        Ok(())
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
    use crate::algorithms::testing::{Fed, LinReg, assert_close, drifting_pair, random_data, split};
    use fedkit_core::{LocalTrain, RngStream};

    /// The stationary point of sum_k L_k for the drifting pair (equal client sizes: the least
    /// squares solution on the pooled data), from the normal equations.
    fn pooled_least_squares<A: Algorithm>(f: &Fed<A>) -> Vec<f32> {
        let (mut a, mut b) = ([[0.0f64; 3]; 3], [0.0f64; 3]);
        for d in &f.data {
            for &i in d.idx.iter() {
                let x = d.data.features(i as usize);
                let row = [x[0] as f64, x[1] as f64, 1.0];
                for r in 0..3 {
                    b[r] += row[r] * d.data.y[i as usize] as f64;
                    for c in 0..3 {
                        a[r][c] += row[r] * row[c];
                    }
                }
            }
        }
        // Gaussian elimination (the matrix is positive definite).
        for k in 0..3 {
            for r in k + 1..3 {
                let m = a[r][k] / a[k][k];
                for c in k..3 {
                    a[r][c] -= m * a[k][c];
                }
                b[r] -= m * b[k];
            }
        }
        let mut x = [0.0f64; 3];
        for k in (0..3).rev() {
            x[k] = (b[k] - (k + 1..3).map(|c| a[k][c] * x[c]).sum::<f64>()) / a[k][k];
        }
        x.iter().map(|v| *v as f32).collect()
    }

    /// Full-batch gradient of client k's loss at `w`.
    fn client_grad<A: Algorithm>(f: &mut Fed<A>, k: usize, w: &Params) -> Params {
        let d = &f.data[k];
        let mut batch = fedkit_core::Batch::default();
        batch.fill(d, &(0..d.len()).collect::<Vec<_>>(), &mut RngStream::new(0));
        let (mut p, mut g) = (w.clone(), w.zeros_like());
        f.model.loss_grad(&mut p, &batch, &mut g, &mut RngStream::new(0)).unwrap();
        g
    }

    // The defining property: with its dual state at the global stationary point (grad_k =
    // grad L_k(w*), h = (1/m) sum_k grad_k = 0), w* is a fixed point of FedDyn on clients whose
    // own minimisers differ, while FedAvg started there drifts away (client drift).
    #[test]
    fn the_global_stationary_point_is_a_fixed_point_where_fedavg_drifts() {
        let mut f = drifting_pair(FedDyn { alpha: 0.1 });
        let mut avg = drifting_pair(FedAvg {});
        let star = f.model.params(&pooled_least_squares(&f)[..2], pooled_least_squares(&f)[2]);
        (f.global, avg.global) = (star.clone(), star.clone());
        for k in 0..2 {
            let g = client_grad(&mut f, k, &star);
            assert!(g.l2() > 0.1, "client {k}'s own gradient at w* is not zero (heterogeneous clients)");
            f.clients[k] = Some(g);
        }
        for round in 1..=10 {
            f.round(round, &[0, 1]);
            avg.round(round, &[0, 1]);
        }
        assert_close(f.global.as_slice(), star.as_slice(), 1e-4);
        assert!(avg.global.sub(&star).l2() > 1e-2, "FedAvg leaves w*: {}", avg.global.sub(&star).l2());
    }

    // h = (1/m) sum_k grad_k is an invariant of Algorithm 1; it holds when a client-side stage
    // (here clipping every delta to norm 0.05) changes what is sent, because the clients' states
    // follow the delta as sent.
    #[test]
    fn h_stays_the_mean_of_the_client_states_under_clipping() {
        let data = split(&random_data(24, &[1.0, 2.0], 2), &[6, 8, 10]);
        let train = LocalTrain { lr: 0.05, epochs: 2, batch_size: 3, ..LocalTrain::default() };
        let mut f = Fed::new(FedDyn { alpha: 0.5 }, 2, data, train, LinReg::new(2).init(&mut RngStream::new(4)));
        f.stage = Some(|u: &mut Update| {
            let n = u.delta.l2();
            if n > 0.05 {
                u.delta.scale((0.05 / n) as f32);
            }
        });
        for (round, cohort) in [(1, vec![0, 1, 2]), (2, vec![1, 2]), (3, vec![0]), (4, vec![0, 1, 2])] {
            let ups = f.round(round, &cohort);
            assert!(ups.iter().all(|u| u.delta.l2() <= 0.05 + 1e-6), "the stage clipped");
            let m = f.clients.len() as f64;
            let len = f.global.len();
            let mean: Vec<f32> = (0..len)
                .map(|j| (f.clients.iter().flatten().map(|g| g.as_slice()[j] as f64).sum::<f64>() / m) as f32)
                .collect();
            assert_close(f.server.as_ref().unwrap().as_slice(), &mean, 1e-6);
        }
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
