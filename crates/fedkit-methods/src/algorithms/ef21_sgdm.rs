//! `ef21_sgdm`: error feedback with momentum, Fatkhullin, Tyurin, Richtárik, "Momentum Provably
//! Improves Error Feedback!", NeurIPS 2023, on EF21 (Richtárik, Sokolov, Fatkhullin, "EF21: A
//! New, Simpler, Theoretically Better, and Practically Faster Error Feedback", NeurIPS 2021).
//!
//! FedSGD-style: one stochastic gradient a round per sampled client, at the global model x.
//! - Client i: v_i = (1 - eta) v_i + eta grad f_i(x; xi) (momentum; v_i starts at the first
//!   gradient), c_i = TopK(v_i - g_i) (a contractive compressor), g_i = g_i + c_i. It sends c_i,
//!   a sparse wire block (`docs/wire.md`), so `bytes_up` counts k indices and values.
//! - Server: g = g + (1 / n) sum_i c_i over the round's senders, x = x - gamma g.
//! - eta = 1 is EF21 (with stochastic gradients: EF21-SGD).
//!
//! Partial participation follows EF21-PP (Fatkhullin et al., "EF21 with Bells & Whistles",
//! 2021): clients not sampled keep their g_i and v_i, and the server's g stays the mean of all n
//! clients' g_i. With full participation this is the paper's algorithm. The compressor is
//! inside the algorithm (its state needs the sent c_i), so add no compressor stage.
//!
//! Initialisation and limits: g_i and g start at 0 (the paper's experiments may start g_i at a
//! first gradient); a client commits g_i when it sends, so an update that a robust aggregator
//! rejects leaves g short of the clients' mean (use `mean`).
//!
//! Parameters (the paper's symbols): `lr` (gamma > 0, the server step, default 0.1),
//! `momentum` (eta in (0, 1], default 0.1), `fraction` (k / d of top-k, default 0.01).
//! `client.batch_size` sets the stochastic gradient's batch; `client.lr` and local epochs are
//! not used.
//!
//! ```toml
//! [algorithm]
//! use = "ef21_sgdm"
//! lr = 0.1
//! momentum = 0.1
//! fraction = 0.01
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, LocalTrain, Metrics, Model, NoHook, OptimizerKind, Params,
    Result, RoundCtx, ServerView, Update, local_update,
};
use serde::{Deserialize, Serialize};

use super::state_vectors::stored_or_zeros;
use crate::compression::{check_fraction, compressed_update, k_of, topk::top_k_block};

/// EF21-SGDM.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ef21Sgdm {
    pub lr: f64,
    pub momentum: f64,
    pub fraction: f64,
}

impl Default for Ef21Sgdm {
    fn default() -> Self {
        Ef21Sgdm { lr: 0.1, momentum: 0.1, fraction: 0.01 }
    }
}

impl Ef21Sgdm {
    pub fn validated(self) -> Result<Self> {
        crate::privacy::dp_fixed_clip::check_positive("lr", self.lr)?;
        if !(self.momentum > 0.0 && self.momentum <= 1.0) {
            return Err(Error::config("momentum", format!("must be in (0, 1], got {}", self.momentum)));
        }
        check_fraction(self.fraction)?;
        Ok(self)
    }
}

/// A client's momentum v_i and gradient estimate g_i.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ef21Client {
    v: Option<Params>,
    g: Option<Params>,
}

/// One stochastic gradient at the global model: a single SGD step of lr 1 from it gives -grad.
pub(crate) fn stochastic_gradient(cx: &ClientCtx, m: &mut dyn Model, d: &ClientData) -> Result<Params> {
    let one = LocalTrain {
        lr: 1.0,
        epochs: 1,
        max_steps: 1,
        optimizer: OptimizerKind::Sgd,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
        ..cx.train.clone()
    };
    let cx1 = ClientCtx { train: &one, epochs: 1, ..*cx };
    let (u, _) = local_update(&cx1, m, d, &mut NoHook)?;
    let mut g = u.delta;
    g.scale(-1.0);
    Ok(g)
}

impl Algorithm for Ef21Sgdm {
    type Client = Ef21Client;
    /// The mean g of all clients' g_i.
    type Server = Option<Params>;

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, st: &mut Ef21Client) -> Result<Update> {
        let grad = stochastic_gradient(cx, m, d)?;
        let eta = self.momentum as f32;
        let v = match st.v.take() {
            Some(mut v) => {
                v.scale(1.0 - eta);
                v.axpy(eta, &grad);
                v
            }
            None => grad.clone(),
        };
        let g = stored_or_zeros(&st.g, cx.global)?;
        let diff: Vec<f32> = v.as_slice().iter().zip(g.as_slice()).map(|(a, b)| a - b).collect();
        st.v = Some(v);
        compressed_update(cx, vec![top_k_block(&diff, k_of(self.fraction, diff.len()))])
    }

    /// g_i = g_i + c_i, with c_i as sent.
    fn commit(&self, cx: &ClientCtx, sent: &Update, st: &mut Ef21Client) -> Result<()> {
        let mut g = stored_or_zeros(&st.g, cx.global)?;
        g.axpy(1.0, &sent.delta);
        st.g = Some(g);
        Ok(())
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        g: &mut Option<Params>,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        // sum_i c_i = |S| mean_i c_i (every update has weight 1).
        let senders = view.updates.len() as f32;
        let mut next = stored_or_zeros(g, w)?;
        next.axpy(senders / r.population.max(1) as f32, &agg.delta);
        w.axpy(-(self.lr as f32), &next);
        let mut m = Metrics::new();
        m.insert("ef21_g_norm".into(), next.l2());
        *g = Some(next);
        Ok(m)
    }
}
