//! pFedMe: T. Dinh, Tran, Nguyen, "Personalized Federated Learning with Moreau Envelopes",
//! NeurIPS 2020 (Algorithm 1).
//!
//! Each client i keeps a personal model theta_i, regularised towards its local copy w of the
//! global model by the Moreau envelope F_i(w) = min_theta f_i(theta) + lambda/2 ||theta - w||^2.
//! A round: the client starts from the global model (w = theta = w_t); for each mini-batch D of the
//! usual shuffled epochs (R = E ceil(n/B) local rounds), it
//! - approximately solves the inner problem by K gradient steps of size `personal_lr` on
//!   h(theta) = f_i(theta; D) + lambda/2 ||theta - w||^2, warm-started from the previous theta;
//! - moves its local model towards it, w <- w - eta lambda (w - theta) (the `[client]` optimiser
//!   with lr eta on the direction lambda (w - theta)).
//! It sends w - w_t. The server mixes, w_{t+1} = (1 - beta) w_t + beta mean_i(w_i) (beta = 1: the
//! FedAvg average), the mean weighted as the aggregator weights (by sample count by default;
//! the paper's is uniform: `[aggregator] weighted = false`). A client's personalised model (per-client evaluation) is its last theta_i.
//! As lambda grows the personal model is pinned to the local model and pFedMe becomes FedAvg
//! with step eta (tested); gradients go through the `[local]` rule.
//!
//! Parameters: `lambda` (lambda, default 15 as the paper's MNIST runs), `personal_lr` (the inner
//! step size, default 0.01; it must satisfy personal_lr * lambda < 2 for the inner steps to
//! converge), `inner_steps` (K, default 5), `beta` (the server's mixing beta, default 1). eta, E
//! and B are `[client] lr, epochs, batch_size`. Batch-norm running statistics follow the theta
//! passes.
//!
//! ```toml
//! [algorithm]
//! use = "pfedme"
//! lambda = 15.0
//! personal_lr = 0.01
//! inner_steps = 5
//! beta = 1.0
//! ```

use std::sync::Mutex;

use fedkit_core::{
    Aggregate, Algorithm, Batch, ClientCtx, ClientData, Error, LocalStep, Metrics, Model, NoHook, Params, Result,
    RngStream, RoundCtx, StepCtx, Update, local_update,
};
use serde::{Deserialize, Serialize};

use super::{Personal, axpy_trainable, copy_buffers, locked};

/// pFedMe's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PFedMe {
    /// The Moreau envelope's regularisation lambda.
    pub lambda: f64,
    /// The inner problem's step size.
    pub personal_lr: f64,
    /// K, inner steps per mini-batch.
    pub inner_steps: usize,
    /// The server's mixing beta.
    pub beta: f64,
}

impl Default for PFedMe {
    fn default() -> Self {
        PFedMe { lambda: 15.0, personal_lr: 0.01, inner_steps: 5, beta: 1.0 }
    }
}

impl PFedMe {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        let positive = |k: &str, v: f64| {
            if v > 0.0 && v.is_finite() { Ok(()) } else { Err(Error::config(k, format!("must be > 0, got {v}"))) }
        };
        positive("lambda", self.lambda)?;
        positive("personal_lr", self.personal_lr)?;
        positive("beta", self.beta)?;
        if self.inner_steps == 0 {
            return Err(Error::config("inner_steps", "must be at least 1"));
        }
        if self.personal_lr * self.lambda >= 2.0 {
            return Err(Error::config(
                "personal_lr",
                format!(
                    "personal_lr * lambda = {} must be below 2, or the inner steps diverge; lower personal_lr",
                    self.personal_lr * self.lambda
                ),
            ));
        }
        Ok(self)
    }
}

/// One pFedMe local round as a local step rule around the configured one: theta lives here.
struct MoreauStep<'a> {
    algo: &'a PFedMe,
    inner: &'a dyn LocalStep,
    theta: Mutex<Params>,
}

impl LocalStep for MoreauStep<'_> {
    fn grad(
        &self,
        sc: &StepCtx,
        model: &mut dyn Model,
        params: &mut Params,
        batch: &mut Batch,
        grad: &mut Params,
        rng: &mut RngStream,
    ) -> Result<f32> {
        let mut theta = locked(&self.theta);
        let (lambda, lr) = (self.algo.lambda as f32, self.algo.personal_lr as f32);
        let mut loss = 0.0;
        for _ in 0..self.algo.inner_steps {
            loss = self.inner.grad(sc, model, &mut theta, batch, grad, rng)?;
            // grad h = grad f(theta) + lambda (theta - w)
            let mut pull = theta.sub(params);
            pull.scale(lambda);
            grad.axpy(1.0, &pull);
            axpy_trainable(&mut theta, -lr, grad);
        }
        // The local model's direction lambda (w - theta); running statistics from the theta passes.
        copy_buffers(params, &theta);
        *grad = params.sub(&theta);
        grad.scale(lambda);
        Ok(loss)
    }
    fn adjust(&self, sc: &StepCtx, w: &Params, g: &mut Params) {
        self.inner.adjust(sc, w, g)
    }
    fn owns_weight_decay(&self) -> bool {
        self.inner.owns_weight_decay()
    }
}

impl Algorithm for PFedMe {
    type Client = Personal;
    type Server = ();

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, st: &mut Personal) -> Result<Update> {
        super::refuse_own_batches(cx, "pfedme")?;
        let step = MoreauStep { algo: self, inner: cx.step, theta: Mutex::new(cx.global.clone()) };
        let ctx = ClientCtx { step: &step, ..*cx };
        let (u, _) = local_update(&ctx, m, d, &mut NoHook)?;
        st.0 = Some(step.theta.into_inner().unwrap_or_else(|e| e.into_inner()));
        Ok(u)
    }

    fn server_update(&self, _r: &RoundCtx, w: &mut Params, _s: &mut (), agg: &Aggregate) -> Result<Metrics> {
        w.axpy(self.beta as f32, &agg.delta);
        Ok(Metrics::new())
    }

    fn personalize(&self, _global: &Params, st: &Personal) -> Option<Params> {
        st.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::{Fed, small_fed};
    use fedkit_core::LocalTrain;

    fn fed<A: Algorithm>(algo: A) -> Fed<A> {
        small_fed(algo, &[12, 12], 6)
    }

    fn after_one_round<A: Algorithm>(algo: A) -> Params {
        let mut f = fed(algo);
        let (_, ups) = f.clients_round(1, &[0, 1]);
        f.server_round(1, &ups);
        f.global
    }

    // lambda -> infinity pins theta to w: theta ~ w - grad f(w) / lambda, so the local step
    // eta lambda (w - theta) ~ eta grad f(w), FedAvg's. The gap shrinks like 1 / lambda.
    #[test]
    fn large_lambda_approaches_fedavg() {
        let fedavg = after_one_round(FedAvg {});
        let gap = |lambda: f64| {
            let algo = PFedMe { lambda, personal_lr: 0.5 / lambda, inner_steps: 40, beta: 1.0 }.validated().unwrap();
            after_one_round(algo).sub(&fedavg).l2()
        };
        let (g10, g100, g1000) = (gap(10.0), gap(100.0), gap(1000.0));
        assert!(g100 < 0.2 * g10 && g1000 < 0.2 * g100, "gaps {g10} {g100} {g1000}");
        assert!(g1000 < 1e-3 * fedavg.l2().max(1.0), "{g1000}");
    }

    // After the K inner steps theta solves min f(theta; D) + lambda/2 ||theta - w||^2: the
    // gradient of that objective vanishes (one full batch, one local step, many inner steps).
    #[test]
    fn the_personal_model_solves_the_moreau_problem() {
        let algo = PFedMe { lambda: 5.0, personal_lr: 0.1, inner_steps: 200, beta: 1.0 }.validated().unwrap();
        let mut f = fed(algo);
        f.train = LocalTrain { lr: 0.05, epochs: 1, batch_size: 12, ..LocalTrain::default() };
        let w0 = f.global.clone();
        f.clients_round(1, &[0]);
        let theta = f.clients[0].0.clone().expect("a personal model");
        let mut batch = Batch::default();
        batch.fill(&f.data[0], &(0..12).collect::<Vec<_>>(), &mut RngStream::new(0));
        let (mut t, mut g) = (theta.clone(), theta.zeros_like());
        f.model.loss_grad(&mut t, &batch, &mut g, &mut RngStream::new(0)).unwrap();
        g.axpy(5.0, &theta.sub(&w0));
        assert!(g.l2() < 1e-4, "stationarity residual {}", g.l2());
        // It is the personalised model; the server mixes with beta.
        assert_eq!(f.algo.personalize(&w0, &f.clients[0]), Some(theta));
        let mut w = w0.clone();
        let u =
            Update { client: 0, delta: w0.clone(), weight: 1.0, extras: Default::default(), metrics: Metrics::new() };
        let agg = crate::aggregators::mean::weighted_mean(&[u], true).unwrap();
        let half = PFedMe { beta: 0.5, ..PFedMe::default() };
        let r =
            RoundCtx { round: 1, cohort: &[0], global: &w0, seed: 0, population: 1, malicious: &[false], draws: &[] };
        half.server_update(&r, &mut w, &mut (), &agg).unwrap();
        let mut want = w0.clone();
        want.axpy(0.5, &w0);
        assert_eq!(w, want);
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        let e = PFedMe { personal_lr: 0.2, lambda: 15.0, ..PFedMe::default() }.validated().unwrap_err().to_string();
        assert!(e.contains("personal_lr") && e.contains("below 2"), "{e}");
        assert!(PFedMe { inner_steps: 0, ..PFedMe::default() }.validated().is_err());
    }
}
