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
