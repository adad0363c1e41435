//! FedHeNN: Makhija, Ho, Ghosh, "Architecture Agnostic Federated Learning for Neural
//! Networks", ICML 2022.
//!
//! Every client keeps a model of its own, whose architecture may differ from the other
//! clients' (`[[model.per_client]]`): mlp, cnn and lenet in one federation. No parameters are
//! shared. What travels is each model's representation of a common proxy set X_p: the server
//! holds `proxy_samples` unlabeled samples (drawn once, in round 1, from the training samples no
//! client holds: `data.subsample < 1`, `data.unlabeled_share` of them) and sends them once to every client (which keeps them),
//! and broadcasts the global representation kernel K̄ every round. Client j trains its model W_j on
//!   f_j(W_j) + eta_t (1 - CKA(K(W_j; X_p), K̄)),
//! the cross-entropy on a local batch plus the alignment term on the whole proxy set at every
//! step, where K(W; X) = H R Rᵀ H is the (centred) linear kernel of the representations R (the
//! features the output layer reads, n_p x d_j: any width, so any architecture) and
//! CKA(K, L) = <K, L>_F / (||K||_F ||L||_F) is linear centred kernel alignment (Kornblith et
//! al., ICML 2019). After training it sends K(W_j; X_p) / ||K||_F (n_p² values, whatever its
//! architecture); the server's K̄ is the clients' sample-weighted mean of these kernels. In the
//! first round there is no proxy set yet and in the second no K̄: clients train on their loss
//! alone until the server has both.
//!
//! Departures, stated: the paper draws a fresh proxy set every round (which needs a second
//! exchange per round to get every client's representation of it); here the proxy set is fixed
//! for the run, so one message each way suffices. The client normalises its kernel before
//! sending (CKA is scale-invariant, and then no architecture's scale dominates the mean). The
//! alignment weight may ramp up: eta_t = eta min(1, t / eta_rounds) (`eta_rounds = 0`: constant),
//! since the paper increases it over training. The global model of the run is not trained
//! (each client's own model is what `[eval] clients` measures); `bytes_down` counts K̄ and
//! each client's one download of the proxy set, `bytes_up` the kernel. A client starts from
//! its architecture's initial model (which it derives from the run seed: no model goes down).
//!
//! Parameters: `eta` (the alignment weight η, default 1), `eta_rounds` (rounds of the ramp,
//! default 0), `proxy_samples` (n_p, default 128).
//!
//! ```toml
//! [algorithm]
//! use = "fedhenn"
//! eta = 1.0
//! proxy_samples = 128
//!
//! [model]
//! use = "mlp"
//!
//! [[model.per_client]]
//! use = "lenet"
//! share = 0.5
//! ```

use std::sync::Arc;

use fedkit_core::{
    Aggregate, Algorithm, BATCH_STREAM, Batch, ClientCtx, ClientData, ClientId, Error, Extra, Extras, Layout, Metrics,
    Mode, Model, NoHook, OutputGrads, Outputs, Params, PersonalDownlink, Result, RngStream, RoundCtx, ServerView,
    Update, local_update_from,
};
use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

/// FedHeNN's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedHenn {
    /// The alignment weight η.
    pub eta: f64,
    /// Rounds over which η ramps up linearly from 0 (0: constant).
    pub eta_rounds: u32,
    /// Samples in the proxy set, n_p.
    pub proxy_samples: usize,
}

impl Default for FedHenn {
    fn default() -> Self {
        FedHenn { eta: 1.0, eta_rounds: 0, proxy_samples: 128 }
    }
}

impl FedHenn {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(Error::config("eta", format!("must be a finite number >= 0, got {}", self.eta)));
        }
        if self.proxy_samples < 2 {
            return Err(Error::config(
                "proxy_samples",
                format!("must be at least 2 (a kernel of one sample has no centred part), got {}", self.proxy_samples),
            ));
        }
        Ok(self)
    }

    /// η at `round`.
    fn eta_at(&self, round: u32) -> f64 {
        match self.eta_rounds {
            0 => self.eta,
            n => self.eta * (round as f64 / n as f64).min(1.0),
        }
    }
}

/// The server's proxy set (row-major inputs), the global kernel K̄ (empty until a round
/// brought kernels) and the clients that hold the proxy set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyState {
    pub proxy: Vec<f32>,
    pub kernel: Vec<f32>,
    pub holders: BTreeSet<ClientId>,
}

/// A client's own model (`None` before its first round) and its copy of the proxy set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HennClient {
    pub model: Option<Params>,
    pub proxy: Vec<f32>,
}

const PROXY: &str = "fedhenn_proxy";
const KERNEL: &str = "fedhenn_kernel";

/// The centred linear kernel H R Rᵀ H of `n` representations of width `d` (row-major), in f64.
pub fn centred_kernel(r: &[f32], n: usize, d: usize) -> Vec<f64> {
    let c = centred(r, n, d);
    let mut k = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v: f64 = c[i * d..(i + 1) * d].iter().zip(&c[j * d..(j + 1) * d]).map(|(a, b)| a * b).sum();
            k[i * n + j] = v;
            k[j * n + i] = v;
        }
    }
    k
}

/// The rows of `r` minus their mean row.
fn centred(r: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut mean = vec![0.0f64; d];
    for row in r.chunks_exact(d) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64 / n as f64);
    }
    r.chunks_exact(d).flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| v as f64 - m)).collect()
}

fn frobenius(k: &[f64]) -> f64 {
    k.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Linear CKA of two centred kernels: <K, L> / (||K|| ||L||); 0 when either vanishes.
pub fn cka(k: &[f64], l: &[f64]) -> f64 {
    let (nk, nl) = (frobenius(k), frobenius(l));
    if nk == 0.0 || nl == 0.0 {
        return 0.0;
    }
    k.iter().zip(l).map(|(a, b)| a * b).sum::<f64>() / (nk * nl)
}

/// The alignment term eta (1 - CKA(K(R), K̄)) on a proxy batch's features, and its gradient
/// with respect to them: with s = <K, K̄>, dL/dK = -eta (K̄ / (||K|| ||K̄||) - s K / (||K||³ ||K̄||)),
/// dL/dC = 2 (dL/dK) C for the centred features C, and dL/dR = H dL/dC.
struct AlignmentHead<'a> {
    target: &'a [f64],
    eta: f64,
    /// CKA at the last call.
    cka: f64,
}

impl fedkit_core::Head for AlignmentHead<'_> {
    fn value_grad(&mut self, out: &Outputs, _batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        let (n, d) = (out.len(), out.feature_dim);
        if n * n != self.target.len() {
            return Err(Error::Shape(format!(
                "fedhenn: {n} proxy samples for a kernel of {} values",
                self.target.len()
            )));
        }
        let c = centred(&out.features, n, d);
        let k = centred_kernel(&out.features, n, d);
        let (nk, nt) = (frobenius(&k), frobenius(self.target));
        g.logits = vec![0.0; out.logits.len()];
        g.features = vec![0.0; out.features.len()];
        if nk == 0.0 || nt == 0.0 {
            self.cka = 0.0;
            return Ok(self.eta as f32);
        }
        let s: f64 = k.iter().zip(self.target).map(|(a, b)| a * b).sum();
        self.cka = s / (nk * nt);
        let gk: Vec<f64> = k
            .iter()
            .zip(self.target)
            .map(|(kv, t)| -self.eta * (t / (nk * nt) - s * kv / (nk * nk * nk * nt)))
            .collect();
        // dL/dC = 2 G C, then centre over the samples.
        let mut gc = vec![0.0f64; n * d];
        for i in 0..n {
            for j in 0..n {
                let a = 2.0 * gk[i * n + j];
                if a != 0.0 {
                    gc[i * d..(i + 1) * d].iter_mut().zip(&c[j * d..(j + 1) * d]).for_each(|(o, v)| *o += a * v);
                }
            }
        }
        let mut mean = vec![0.0f64; d];
        for row in gc.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / n as f64);
        }
        for (o, (v, m)) in g.features.iter_mut().zip(gc.iter().zip(mean.iter().cycle())) {
            *o = (v - m) as f32;
        }
        Ok((self.eta * (1.0 - self.cka)) as f32)
    }
}

/// The client's model with the alignment term added to every training gradient, so any local
/// step rule sees the whole objective's gradient.
struct AlignedModel<'a> {
    inner: &'a mut dyn Model,
    proxy: Batch,
    target: Vec<f64>,
    eta: f64,
    scratch: Option<Params>,
}

impl Model for AlignedModel<'_> {
    fn clone_box(&self) -> Box<dyn Model> {
        self.inner.clone_box()
    }
    fn layout(&self) -> Arc<Layout> {
        self.inner.layout()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        self.inner.init(rng)
    }
    fn forward(&mut self, params: &Params, batch: &Batch, mode: Mode, out: &mut Outputs) -> Result<()> {
        self.inner.forward(params, batch, mode, out)
    }
    fn vjp(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        mode: Mode,
        head: &mut dyn fedkit_core::Head,
        grad: Option<&mut Params>,
        gx: Option<&mut Vec<f32>>,
        rng: &mut RngStream,
    ) -> Result<f32> {
        self.inner.vjp(params, batch, mode, head, grad, gx, rng)
    }
    fn loss_grad(&mut self, params: &mut Params, batch: &Batch, grad: &mut Params, rng: &mut RngStream) -> Result<f32> {
        let value = self.inner.loss_grad(params, batch, grad, rng)?;
        let scratch = self.scratch.get_or_insert_with(|| grad.zeros_like());
        let mut head = AlignmentHead { target: &self.target, eta: self.eta, cka: 0.0 };
        self.inner.vjp(params, &self.proxy, Mode::TrainFrozen, &mut head, Some(scratch), None, rng)?;
        grad.axpy(1.0, scratch);
        Ok(value)
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        self.inner.eval_batch(params, batch)
    }
}

/// The proxy set as a batch of the client's data set's shape (labels unused).
fn proxy_batch(x: &[f32], d: &ClientData) -> Result<Batch> {
    let len = d.data.feature_len();
    if len == 0 || x.len() % len != 0 {
        return Err(Error::Shape(format!("fedhenn: a proxy set of {} values for samples of {len}", x.len())));
    }
    let n = x.len() / len;
    Ok(Batch {
        x: x.to_vec(),
        y: vec![0; n],
        feature_shape: d.data.feature_shape.clone(),
        classes: d.data.classes,
        targets: Vec::new(),
    })
}

/// K(W; X_p) / ||K||_F of the model `w` (evaluation mode), in f32 for the wire.
fn normalised_kernel(m: &mut dyn Model, w: &Params, proxy: &Batch) -> Result<Vec<f64>> {
    let mut out = Outputs::default();
    m.forward(w, proxy, Mode::Eval, &mut out)?;
    let k = centred_kernel(&out.features, out.len(), out.feature_dim);
    let nk = frobenius(&k);
    Ok(if nk > 0.0 { k.iter().map(|v| v / nk).collect() } else { k })
}

fn vector<'a>(e: &'a Extras, key: &str) -> Option<&'a [f32]> {
    match e.get(key) {
        Some(Extra::Vector(v)) if !v.is_empty() => Some(v),
        _ => None,
    }
}

impl Algorithm for FedHenn {
    type Client = HennClient;
    type Server = ProxyState;

    fn keeps_client_models(&self) -> bool {
        true
    }

    fn supports_architectures(&self) -> bool {
        true
    }

    fn reads_updates(&self) -> bool {
        true
    }

    fn needs_unlabeled_data(&self) -> bool {
        true
    }

    fn check_setup(&self, m: &dyn Model, loss_is_cross_entropy: bool) -> Result<()> {
        if !loss_is_cross_entropy {
            return Err(Error::config(
                "loss.use",
                "fedhenn adds its alignment term to the cross-entropy: use loss.use = \"cross_entropy\"",
            ));
        }
        let layout = m.layout();
        let (w, b, _) = layout.output_layer().map_err(|e| Error::config("model.use", format!("fedhenn: {e}")))?;
        if w.len() + b.len() == layout.trainable() {
            return Err(Error::config(
                "model.use",
                "fedhenn aligns the representation the output layer reads, and this model has none to train (its features are its inputs): use a model with a hidden layer (mlp, lenet, cnn)",
            ));
        }
        Ok(())
    }

    fn combines_updates_itself(&self) -> bool {
        true
    }

    fn broadcast(&self, _r: &RoundCtx, s: &ProxyState) -> Extras {
        let mut e = Extras::default();
        if !s.kernel.is_empty() {
            e.insert(KERNEL, Extra::Vector(s.kernel.clone()));
        }
        e
    }

    fn personal_downlink(
        &self,
        _r: &RoundCtx,
        s: &ProxyState,
        client: ClientId,
        _m: &dyn Model,
    ) -> Result<Option<PersonalDownlink>> {
        // No model ever goes down; the proxy set once.
        let mut extras = Extras::default();
        if !s.proxy.is_empty() && !s.holders.contains(&client) {
            extras.insert(PROXY, Extra::Vector(s.proxy.clone()));
        }
        Ok(Some(PersonalDownlink { extras, model_values: Some(0) }))
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, st: &mut HennClient) -> Result<Update> {
        super::refuse_own_batches(cx, "fedhenn")?;
        let start = st.model.clone().unwrap_or_else(|| cx.global.clone());
        if let Some(x) = vector(cx.broadcast, PROXY) {
            st.proxy = x.to_vec();
        }
        let proxy = (!st.proxy.is_empty()).then(|| proxy_batch(&st.proxy, d)).transpose()?;
        let target = vector(cx.broadcast, KERNEL).map(|k| k.iter().map(|&v| v as f64).collect::<Vec<f64>>());
        let local = ClientCtx { global: &start, ..*cx };
        let (mut u, w) = match (&proxy, target) {
            (Some(p), Some(target)) if self.eta_at(cx.round) > 0.0 => {
                let mut aligned = AlignedModel {
                    inner: &mut *m,
                    proxy: p.clone(),
                    target,
                    eta: self.eta_at(cx.round),
                    scratch: None,
                };
                local_update_from(&local, start.clone(), BATCH_STREAM, &mut aligned, d, &mut NoHook)?
            }
            _ => local_update_from(&local, start.clone(), BATCH_STREAM, m, d, &mut NoHook)?,
        };
        if let Some(p) = &proxy {
            let k = normalised_kernel(m, &w, p)?;
            if let Some(t) = vector(cx.broadcast, KERNEL) {
                let t: Vec<f64> = t.iter().map(|&v| v as f64).collect();
                u.metrics.insert("cka".into(), cka(&k, &t));
            }
            u.extras.insert(KERNEL, Extra::Vector(k.into_iter().map(|v| v as f32).collect()));
        }
        // Only the kernel goes up: the model stays on the client.
        u.delta = Params::zeros(Arc::new(Layout::new()));
        st.model = Some(w);
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        _w: &mut Params,
        s: &mut ProxyState,
        _agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        let mut metrics = Metrics::new();
        if !s.proxy.is_empty() {
            s.holders.extend(view.updates.iter().map(|u| u.client));
        }
        let (mut sum, mut total) = (Vec::<f64>::new(), 0.0f64);
        for u in view.updates {
            let Some(k) = vector(&u.extras, KERNEL) else { continue };
            if !sum.is_empty() && sum.len() != k.len() {
                return Err(Error::Method(format!(
                    "fedhenn: client {} sent a kernel of {} values, others {}",
                    u.client,
                    k.len(),
                    sum.len()
                )));
            }
            sum.resize(k.len(), 0.0);
            sum.iter_mut().zip(k).for_each(|(a, &v)| *a += u.weight as f64 * v as f64);
            total += u.weight as f64;
        }
        if total > 0.0 {
            let mean: Vec<f64> = sum.iter().map(|v| v / total).collect();
            let (mut c, mut n) = (0.0, 0usize);
            for u in view.updates {
                if let Some(k) = vector(&u.extras, KERNEL) {
                    let k: Vec<f64> = k.iter().map(|&v| v as f64).collect();
                    c += cka(&k, &mean);
                    n += 1;
                }
            }
            metrics.insert("fedhenn_cka_to_mean".into(), c / n.max(1) as f64);
            s.kernel = mean.into_iter().map(|v| v as f32).collect();
        }
        if s.proxy.is_empty() {
            let data = view.unlabeled.filter(|d| d.len() >= 2).ok_or_else(|| {
                Error::config(
                    "data.subsample",
                    "fedhenn's proxy set is drawn from the training samples no client holds, and there are fewer than 2: set data.subsample below 1 (or data.unlabeled_share higher)",
                )
            })?;
            let mut rng = r.rng("fedhenn_proxy");
            let ids = rng.choose(data.len(), self.proxy_samples.min(data.len()));
            let mut b = Batch::default();
            b.fill(data, &ids, &mut rng);
            s.proxy = b.x;
        }
        Ok(metrics)
    }

    fn personalize(&self, _global: &Params, st: &HennClient) -> Option<Params> {
        st.model.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::Head;

    fn features(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = RngStream::new(seed);
        (0..n * d).map(|_| rng.normal() as f32).collect()
    }

    fn outputs(f: &[f32], n: usize, d: usize) -> Outputs {
        Outputs { logits: vec![0.0; n * 2], classes: 2, features: f.to_vec(), feature_dim: d }
    }

    // CKA is invariant to orthogonal transforms and isotropic scaling of the representations,
    // and compares representations of different widths (Kornblith et al., section 3).
    #[test]
    fn cka_is_invariant_to_rotation_and_scale_and_spans_widths() {
        let (n, d) = (12, 3);
        let r = features(n, d, 1);
        // A rotation in the (0, 1) plane, a scale of 5, and a zero fourth column.
        let (c, s) = (0.6f32, 0.8f32);
        let mut q = Vec::new();
        for row in r.chunks_exact(d) {
            q.extend_from_slice(&[5.0 * (c * row[0] - s * row[1]), 5.0 * (s * row[0] + c * row[1]), 5.0 * row[2], 0.0]);
        }
        let (k, l) = (centred_kernel(&r, n, d), centred_kernel(&q, n, 4));
        assert!((cka(&k, &l) - 1.0).abs() < 1e-9, "{}", cka(&k, &l));
        let other = centred_kernel(&features(n, d, 2), n, d);
        assert!(cka(&k, &other) < 0.9);
    }

    // The head's feature gradient matches central finite differences of eta (1 - CKA).
    #[test]
    fn alignment_gradient_matches_finite_differences() {
        let (n, d) = (6, 4);
        let target = centred_kernel(&features(n, 3, 9), n, 3);
        let f = features(n, d, 3);
        let mut head = AlignmentHead { target: &target, eta: 0.7, cka: 0.0 };
        let mut g = OutputGrads::default();
        head.value_grad(&outputs(&f, n, d), &Batch::default(), &mut g).unwrap();
        let h = 1e-3f32;
        for i in 0..n * d {
            let (mut up, mut down) = (f.clone(), f.clone());
            up[i] += h;
            down[i] -= h;
            let mut gg = OutputGrads::default();
            let vu = head.value_grad(&outputs(&up, n, d), &Batch::default(), &mut gg).unwrap() as f64;
            let vd = head.value_grad(&outputs(&down, n, d), &Batch::default(), &mut gg).unwrap() as f64;
            let fd = (vu - vd) / (2.0 * h as f64);
            assert!((fd - g.features[i] as f64).abs() < 2e-3, "feature {i}: {fd} vs {}", g.features[i]);
        }
    }

    #[test]
    fn eta_ramps_up_then_holds() {
        let f = FedHenn { eta: 2.0, eta_rounds: 4, ..FedHenn::default() };
        assert_eq!((f.eta_at(1), f.eta_at(2), f.eta_at(4), f.eta_at(9)), (0.5, 1.0, 2.0, 2.0));
        assert_eq!(FedHenn::default().eta_at(1), 1.0);
    }
}
