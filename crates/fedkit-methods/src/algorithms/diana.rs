//! `diana`: compressed gradient differences, Mishchenko, Gorbunov, Takáč, Richtárik,
//! "Distributed Learning with Compressed Gradient Differences", 2019; with `[downlink]` (primal
//! error feedback) it is EF21-P + DIANA, Gruntkowska, Tyurin, Richtárik, "EF21-P and Friends:
//! Improved Theoretical Communication Complexity for Distributed Optimization with
//! Bidirectional Compression", ICML 2023 (Algorithm 1).
//!
//! FedSGD-style, one stochastic gradient a round per sampled client, at the model w the client
//! holds (the `[downlink]` shadow when the broadcast is compressed):
//! - Client i: m_i = C(grad f_i(w) - h_i) with C unbiased random-k (values scaled by d / k, so
//!   E C(x) = x), sent as a sparse wire block; h_i = h_i + beta m_i.
//! - Server: m = the senders' mean of m_i, g = h + m, x = x - gamma g, and
//!   h = h + beta (|S| / n) m, so that h stays the mean of all n clients' h_i.
//!
//! With every client every round this is the paper's algorithm; unsampled clients keep h_i
//! (partial participation is not in the paper). h_i and h start at 0.
//!
//! Parameters (the paper's symbols): `lr` (gamma > 0, default 0.05), `beta` (in (0, 1]; 0, the
//! default, for 1 / (omega + 1) with omega = d / k - 1, the paper's choice), `fraction` (k / d
//! of random-k, default 0.1). The unbiased compressor's variance grows as d / k: a small
//! fraction needs a small step (the paper's gamma is at most n / (160 omega L_max)).
//!
//! ```toml
//! [algorithm]
//! use = "diana"
//! lr = 0.05
//! beta = 0.0
//! fraction = 0.1
//! ```

use fedkit_core::wire::Block;
use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, Metrics, Model, Params, Result, RoundCtx, ServerView, Update,
};
use serde::{Deserialize, Serialize};

use super::ef21_sgdm::stochastic_gradient;
use super::state_vectors::stored_or_zeros;
use crate::compression::{check_fraction, compressed_update, k_of};

/// DIANA.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Diana {
    pub lr: f64,
    pub beta: f64,
    pub fraction: f64,
}

impl Default for Diana {
    fn default() -> Self {
        Diana { lr: 0.05, beta: 0.0, fraction: 0.1 }
    }
}

impl Diana {
    pub fn validated(self) -> Result<Self> {
        crate::privacy::dp_fixed_clip::check_positive("lr", self.lr)?;
        if !(0.0..=1.0).contains(&self.beta) {
            return Err(Error::config("beta", format!("must be in [0, 1] (0: 1 / (omega + 1)), got {}", self.beta)));
        }
        check_fraction(self.fraction)?;
        Ok(self)
    }

    /// beta, or 1 / (omega + 1) = k / d for random-k.
    fn beta_for(&self, d: usize) -> f32 {
        if self.beta > 0.0 { self.beta as f32 } else { (k_of(self.fraction, d) as f64 / d.max(1) as f64) as f32 }
    }
}

impl Algorithm for Diana {
    /// h_i.
    type Client = Option<Params>;
    /// h, the mean of all clients' h_i.
    type Server = Option<Params>;

    fn client_update(
        &self,
        cx: &ClientCtx,
        m: &mut dyn Model,
        d: &ClientData,
        h_i: &mut Option<Params>,
    ) -> Result<Update> {
        let grad = stochastic_gradient(cx, m, d)?;
        let h = stored_or_zeros(h_i, cx.global)?;
        let dim = grad.len();
        let k = k_of(self.fraction, dim);
        let mut idx: Vec<u32> = cx.rng("diana").choose(dim, k).into_iter().map(|i| i as u32).collect();
        idx.sort_unstable();
        let scale = dim as f32 / k as f32;
        let values = idx.iter().map(|&i| (grad.as_slice()[i as usize] - h.as_slice()[i as usize]) * scale).collect();
        compressed_update(cx, vec![Block::Sparse { len: dim as u32, indices: idx, values }])
    }

    /// h_i = h_i + beta m_i, with m_i as sent.
    fn commit(&self, cx: &ClientCtx, sent: &Update, h_i: &mut Option<Params>) -> Result<()> {
        let mut h = stored_or_zeros(h_i, cx.global)?;
        h.axpy(self.beta_for(h.len()), &sent.delta);
        *h_i = Some(h);
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
        let mut next = stored_or_zeros(h, w)?;
        // g = h + m; x = x - gamma g.
        let mut g = next.clone();
        g.axpy(1.0, &agg.delta);
        w.axpy(-(self.lr as f32), &g);
        let share = view.updates.len() as f32 / r.population.max(1) as f32;
        next.axpy(self.beta_for(w.len()) * share, &agg.delta);
        let mut m = Metrics::new();
        m.insert("diana_h_norm".into(), next.l2());
        *h = Some(next);
        Ok(m)
    }
}
