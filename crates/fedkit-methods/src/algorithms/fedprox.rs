//! FedProx: Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.
//!
//! Each client approximately minimises h_k(w; w_t) = F_k(w) + (mu/2) ||w - w_t||^2: local SGD
//! whose gradient gets the proximal term mu (w - w_t). The server averages the deltas as FedAvg.
//! With mu = 0 it is FedAvg exactly (tested bit for bit).
//!
//! Stragglers (`[sampling] drop_percent`) are not dropped: as in the paper (Section 5.2,
//! "systems heterogeneity"), they send the partial solution of fewer local epochs, drawn
//! uniformly from [1, E - 1] each round.
//!
//! Parameters: `mu` (the proximal coefficient mu >= 0; the paper uses 0.001 to 1, default 0.01).
//!
//! ```toml
//! [algorithm]
//! use = "fedprox"
//! mu = 1.0
//! ```

use fedkit_core::{
    Algorithm, ClientCtx, ClientData, Error, Model, Params, Result, StragglerPolicy, Update, local_update,
};
use serde::{Deserialize, Serialize};

/// FedProx.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedProx {
    /// Proximal coefficient mu.
    pub mu: f64,
}

impl Default for FedProx {
    fn default() -> Self {
        FedProx { mu: 0.01 }
    }
}

impl FedProx {
    /// Check mu.
    pub fn validated(self) -> Result<Self> {
        if !(self.mu >= 0.0 && self.mu.is_finite()) {
            return Err(Error::config("mu", format!("must be a finite number >= 0, got {}", self.mu)));
        }
        Ok(self)
    }
}

impl Algorithm for FedProx {
    type Client = ();
    type Server = ();

    fn straggler_policy(&self) -> StragglerPolicy {
        StragglerPolicy::Partial
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _: &mut ()) -> Result<Update> {
        let (mu, w0) = (self.mu as f32, cx.global.as_slice());
        let mut prox = |_: usize, w: &Params, g: &mut Params| {
            g.as_mut_slice().iter_mut().zip(w.as_slice()).zip(w0).for_each(|((g, w), w0)| *g += mu * (w - w0));
        };
        Ok(local_update(cx, m, d, &mut prox)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::{LinReg, assert_close, random_data, split};
    use fedkit_core::{Batch, Extras, LocalTrain, RngStream};

    // The proximal term itself: with full-batch steps, local training is
    // w_{k+1} = w_k - eta (grad F(w_k) + mu (w_k - w_t)), checked against that recursion written
    // out with the model's own gradients (a sign or scale error in mu (w - w_t) fails here).
    #[test]
    fn each_step_adds_mu_times_the_distance_to_the_global_model() {
        let data = &split(&random_data(12, &[1.0, 2.0], 3), &[12])[0];
        let mut model = LinReg::new(2);
        let w_t = model.params(&[0.5, -0.25], 0.1);
        let (mu, lr, steps) = (0.7f32, 0.05f32, 4);
        let train = LocalTrain { lr: lr as f64, epochs: steps, batch_size: 12, ..LocalTrain::default() };
        let extras = Extras::default();
        let cx = ClientCtx {
            round: 1,
            client: 0,
            seed: 0,
            global: &w_t,
            broadcast: &extras,
            train: &train,
            epochs: steps,
            malicious: false,
            step: &fedkit_core::PlainStep,
            loss: &fedkit_core::CrossEntropyLoss,
            train_hook: None,
        };
        let u = FedProx { mu: mu as f64 }.client_update(&cx, &mut model, data, &mut ()).unwrap();
        let mut batch = Batch::default();
        batch.fill(data, &(0..12).collect::<Vec<_>>(), &mut RngStream::new(0));
        let mut w = w_t.clone();
        for _ in 0..steps {
            let mut g = w.zeros_like();
            model.loss_grad(&mut w.clone(), &batch, &mut g, &mut RngStream::new(0)).unwrap();
            let prox = w.sub(&w_t);
            g.axpy(mu, &prox);
            w.axpy(-lr, &g);
        }
        let mut got = w_t.clone();
        got.axpy(1.0, &u.delta);
        assert_close(got.as_slice(), w.as_slice(), 1e-6);
        // And it is not FedAvg: mu pulls the iterate back towards w_t.
        let plain = FedProx { mu: 0.0 }.client_update(&cx, &mut model, data, &mut ()).unwrap();
        assert!(plain.delta.l2() > u.delta.l2() + 1e-4, "the proximal term shortens the step");
    }
}
