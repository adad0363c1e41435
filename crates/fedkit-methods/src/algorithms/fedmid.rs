//! FedMid (Federated Mirror Descent): Yuan, Zaheer, Reddi, "Federated Composite Optimization",
//! ICML 2021 (Algorithm 1), for F(w) + lambda ||w||_1.
//!
//! The primal extension of FedAvg to a non-smooth regulariser psi = lambda ||.||_1, with the mirror
//! map h = 1/2 ||.||^2 (so the mirror step is a proximal step and its prox is soft-thresholding
//! soft(z, t) = sign(z) max(|z| - t, 0)). Each client runs K steps of proximal SGD from the
//! server model x_r: x_{r,k+1} = soft(x_{r,k} - eta_c g_{r,k}, eta_c lambda); the server takes a
//! proximal step along the mean delta Delta_r = mean_m (x^m_{r,K} - x_r):
//! x_{r+1} = soft(x_r + eta_s Delta_r, eta_s eta_c K lambda). The clients' models are sparse on
//! different supports, so their average is dense (the "curse of primal averaging", tested); the
//! server prox makes it sparse again but the shrinkage is paid twice a round (on the clients and
//! on the server), and FedMid settles at a more shrunk model with a higher composite objective
//! than `feddualavg` (tested on a sparse regression).
//!
//! fedkit details: L1 covers weights and embeddings, not biases, norm parameters or buffers
//! (buffers are averaged: x += Delta). eta_c K is what each client reports (`lr_steps`, the sum of
//! its local learning rates; the mean over the cohort when clients take different numbers of
//! steps). The local proximal step runs on the shared SGD loop (the gradient is rewritten so that
//! the SGD step lands on the prox point), so it needs plain local SGD: `client.optimizer = "sgd"`,
//! `client.momentum = 0`, `client.weight_decay = 0` (checked; a `[local]` rule that changes the
//! step after the algorithm's hook, such as FedNAR's co-clipping, does not compose with it and is
//! reported as an error).
//! With lambda = 0 and eta_s = 1 it is FedAvg exactly (tested).
//!
//! Parameters:
//! - `l1` (lambda >= 0, default 1e-3, the value of the paper's federated fMRI experiment).
//! - `server_lr` (eta_s > 0, default 1.0).
//!
//! ```toml
//! [algorithm]
//! use = "fedmid"
//! l1 = 0.001
//! server_lr = 1.0
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, Metrics, Model, Params, Result, RoundCtx, ServerView, Update,
    local_update,
};
use serde::{Deserialize, Serialize};

use super::composite::{
    CompositeHook, Coordinates, check_landed, check_plain_sgd, finish_update, mean_lr_steps, soft_threshold,
    validate_params,
};

/// FedMid.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedMid {
    /// L1 weight lambda.
    pub l1: f64,
    /// Server learning rate eta_s.
    pub server_lr: f64,
}

impl Default for FedMid {
    fn default() -> Self {
        FedMid { l1: 1e-3, server_lr: 1.0 }
    }
}

impl FedMid {
    /// Check the ranges.
    pub fn validated(self) -> Result<Self> {
        validate_params(self.l1, self.server_lr)?;
        Ok(self)
    }

    /// The server's proximal step with the cohort's mean eta_c K `lr_steps`.
    fn server_rule(&self, w: &mut Params, agg: &Aggregate, lr_steps: f64) -> Result<Metrics> {
        if w.len() != agg.delta.len() {
            return Err(Error::Shape(format!("aggregate has {} values, the model {}", agg.delta.len(), w.len())));
        }
        let coords = Coordinates::of(w.layout(), self.l1);
        let (eta_s, t) = (self.server_lr as f32, (self.server_lr * lr_steps * self.l1) as f32);
        let (x, d) = (w.as_mut_slice(), agg.delta.as_slice());
        coords.buffers.iter().flat_map(Clone::clone).for_each(|i| x[i] += d[i]);
        coords.plain.iter().flat_map(Clone::clone).for_each(|i| x[i] += eta_s * d[i]);
        coords.regularised.iter().flat_map(Clone::clone).for_each(|i| x[i] = soft_threshold(x[i] + eta_s * d[i], t));
        Ok(Metrics::from([("prox_threshold".to_string(), t as f64)]))
    }
}

impl Algorithm for FedMid {
    type Client = ();
    type Server = ();
    fn reads_updates(&self) -> bool {
        true
    }

    fn supports_masks(&self) -> bool {
        false
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _: &mut ()) -> Result<Update> {
        check_plain_sgd("fedmid", cx.train)?;
        let lr = cx.train.lr as f32;
        let t = lr * self.l1 as f32;
        let coords = Coordinates::of(cx.global.layout(), self.l1);
        let mut hook = CompositeHook::new(cx.global.clone(), lr, coords, |_, y| {
            let x = soft_threshold(y, t);
            (x, x)
        });
        let (mut u, w) = local_update(cx, m, d, &mut hook)?;
        let steps = hook.steps;
        let x = hook.finish(&w);
        check_landed("fedmid", &w, &x, &Coordinates::of(w.layout(), self.l1))?;
        finish_update(&mut u, cx.global, &x, cx.train.lr, steps);
        Ok(u)
    }

    fn server_update(&self, _: &RoundCtx, w: &mut Params, _: &mut (), agg: &Aggregate) -> Result<Metrics> {
        self.server_rule(w, agg, mean_lr_steps("fedmid", agg, &[])?)
    }

    fn server_step(
        &self,
        _: &RoundCtx,
        w: &mut Params,
        _: &mut (),
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        self.server_rule(w, agg, mean_lr_steps("fedmid", agg, view.updates)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::composite::LR_STEPS;
    use super::super::composite::testing::{assert_runs_like_fedavg, lasso_fed, zero_weights};
    use super::super::server_opt::testing::with_round;
    use super::*;
    use fedkit_core::{Batch, Extra, Extras, Layout, LocalTrain, ParamKind, RngStream};
    use std::sync::Arc;

    #[test]
    fn zero_l1_is_fedavg_bit_for_bit() {
        assert_runs_like_fedavg(FedMid { l1: 0.0, server_lr: 1.0 });
    }

    #[test]
    fn a_local_step_is_a_proximal_sgd_step() {
        let mut fed = lasso_fed(FedMid { l1: 2.0, server_lr: 1.0 });
        fed.train = LocalTrain { max_steps: 1, batch_size: 30, ..fed.train.clone() };
        let global = fed.global.clone();
        let (mut batch, mut g) = (Batch::default(), global.zeros_like());
        batch.fill(&fed.data[0], &(0..30).collect::<Vec<_>>(), &mut RngStream::new(0));
        fed.model.loss_grad(&mut global.clone(), &batch, &mut g, &mut RngStream::new(0)).unwrap();
        let (_, ups) = fed.clients_round(1, &[0]);
        let mut x = global.clone();
        x.axpy(1.0, &ups[0].delta);
        let (lr, t) = (0.05f32, 0.05f32 * 2.0);
        let n = x.len();
        for (i, (&got, (&w, &g))) in x.as_slice().iter().zip(global.as_slice().iter().zip(g.as_slice())).enumerate() {
            let want = if i + 1 == n { w - lr * g } else { soft_threshold(w - lr * g, t) };
            assert!((got - want).abs() <= 1e-6, "value {i}: {got} vs {want}");
        }
        assert!(zero_weights(&x) >= 10, "exact zeros in the client model: {}", zero_weights(&x));
        assert_eq!(ups[0].extras.scalar(LR_STEPS), Some(0.05), "eta_c K with K = 1");
    }

    #[test]
    fn the_server_step_is_a_prox_of_the_mean_delta() {
        let mut l = Layout::new();
        l.push("w", &[3], ParamKind::Weight);
        l.push("b", &[1], ParamKind::Bias);
        l.push("running_var", &[1], ParamKind::Buffer);
        let l = Arc::new(l);
        let p = |v: Vec<f32>| Params::from_vec(l.clone(), v).unwrap();
        let mut extras = Extras::default();
        extras.insert(LR_STEPS, Extra::Scalar(0.5));
        let agg = Aggregate {
            delta: p(vec![0.3, -0.05, -1.0, 0.2, 0.4]),
            weight: 2.0,
            extras,
            accepted: vec![0, 1],
            metrics: Metrics::new(),
            weighting: fedkit_core::Weighting::UpdateWeights,
        };
        let a = FedMid { l1: 0.2, server_lr: 2.0 };
        let mut w = p(vec![0.1, 0.1, 0.1, 1.0, 1.0]);
        // threshold eta_s eta_c K lambda = 2 * 0.5 * 0.2 = 0.2; x + 2 Delta = 0.7, 0.0, -1.9.
        let m = with_round(1, 2, &w.clone(), |r| a.server_update(r, &mut w, &mut (), &agg)).unwrap();
        let want = [0.5f32, 0.0, -1.7, 1.4, 1.4];
        w.as_slice().iter().zip(want).for_each(|(g, w)| assert!((g - w).abs() < 1e-6, "{g} vs {w}"));
        assert!((m["prox_threshold"] - 0.2).abs() < 1e-7);
        let no_steps = Aggregate { extras: Extras::default(), ..agg };
        assert!(with_round(1, 2, &w.clone(), |r| a.server_update(r, &mut w, &mut (), &no_steps)).is_err());
    }
}
