//! Per-FedAvg: Fallah, Mokhtari, Ozdaglar, "Personalized Federated Learning with Theoretical
//! Guarantees: A Model-Agnostic Meta-Learning Approach", NeurIPS 2020 (Algorithm 1).
//!
//! FedAvg on the MAML objective F_i(w) = f_i(w - alpha grad f_i(w)): the global model is a good
//! starting point for one step of local adaptation. Each local step of client i, at w, draws
//! three independent mini-batches D, D' and D'' of B samples:
//! - the adapted point w~ = w - alpha grad f_i(w; D);
//! - FO (first order, `variant = "fo"`): the direction g = grad f_i(w~; D');
//! - HF (Hessian-free, `variant = "hf"`): g = (I - alpha H_i(w; D'')) grad f_i(w~; D'), the
//!   Hessian-vector product by central differences of gradients,
//!   H v ~ ||v|| (grad f(w + delta u; D'') - grad f(w - delta u; D'')) / (2 delta), u = v / ||v||
//!   (exact for quadratic losses; no second-order autodiff needed);
//! and the `[client]` optimiser steps w with g (beta = `client.lr`, the paper's outer step). D' is
//! the batch of the usual shuffled epoch (so the number of steps is FedAvg's: E epochs of
//! ceil(n/B)); D and D'' are drawn from a separate stream (seed, "perfedavg_batches", round,
//! client). The server averages the models as FedAvg does. With alpha = 0, FO is FedAvg bit for
//! bit (tested). Gradients go through the `[local]` rule, so SAM composes. Batch-norm running
//! statistics are those of the D' pass at w~.
//!
//! Evaluation (`[eval] clients = true`), as in the paper: each client's model is the global model
//! after one adaptation step, w - alpha grad f_i(w; D_eval), D_eval a mini-batch of B samples of
//! its own training data drawn from (seed, "perfedavg_eval", round, client); clients that never
//! trained adapt too.
//!
//! Parameters: `alpha` (the adaptation step size alpha, default 0.01; the paper uses 0.001 to
//! 0.01 with beta larger), `variant` (`"fo"` or `"hf"`, default `"fo"`), `delta` (HF's finite
//! difference radius delta, default 1e-3). beta, E and B are `[client] lr, epochs, batch_size`.
//!
//! ```toml
//! [algorithm]
//! use = "perfedavg"
//! alpha = 0.01
//! variant = "hf"
//! delta = 0.001
//! ```

use std::sync::Mutex;

use fedkit_core::{
    AdaptCtx, Algorithm, Batch, ClientCtx, ClientData, Error, LocalStep, Model, NoHook, Params, Result, RngStream,
    StepCtx, Update, local_update,
};
use serde::{Deserialize, Serialize};

use super::{axpy_trainable, copy_buffers, locked, sample_batch};
use crate::local_steps::trainable_norm;

/// First-order or Hessian-free Per-FedAvg.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    #[default]
    Fo,
    Hf,
}

/// Per-FedAvg's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerFedAvg {
    /// The adaptation step size alpha.
    pub alpha: f64,
    /// `fo` or `hf`.
    pub variant: Variant,
    /// HF's finite-difference radius delta.
    pub delta: f64,
}

impl Default for PerFedAvg {
    fn default() -> Self {
        PerFedAvg { alpha: 0.01, variant: Variant::Fo, delta: 1e-3 }
    }
}

impl PerFedAvg {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return Err(Error::config("alpha", format!("must be a finite number >= 0, got {}", self.alpha)));
        }
        if !(self.delta > 0.0 && self.delta.is_finite()) {
            return Err(Error::config("delta", format!("must be a finite number > 0, got {}", self.delta)));
        }
        Ok(self)
    }
}

/// H v at `w` on `batch` by central differences of the `[local]` rule's gradients (see the
/// module docs); `v` only moves the trainable entries.
#[allow(clippy::too_many_arguments)]
pub fn hessian_vector(
    inner: &dyn LocalStep,
    sc: &StepCtx,
    model: &mut dyn Model,
    w: &Params,
    batch: &mut Batch,
    v: &Params,
    delta: f64,
    rng: &mut RngStream,
) -> Result<Params> {
    let norm = trainable_norm(v);
    let mut hv = w.zeros_like();
    if !(norm > 0.0 && norm.is_finite()) {
        return Ok(hv);
    }
    let step = (delta / norm) as f32;
    let (mut plus, mut minus) = (w.clone(), w.clone());
    axpy_trainable(&mut plus, step, v);
    axpy_trainable(&mut minus, -step, v);
    let (mut gp, mut gm) = (w.zeros_like(), w.zeros_like());
    inner.grad(sc, model, &mut plus, batch, &mut gp, rng)?;
    inner.grad(sc, model, &mut minus, batch, &mut gm, rng)?;
    // (gp - gm) / (2 step) = (gp - gm) ||v|| / (2 delta): the product with the unnormalised v.
    let scale = (norm / (2.0 * delta)) as f32;
    let layout = w.layout().clone();
    let (h, p, m) = (hv.as_mut_slice(), gp.as_slice(), gm.as_slice());
    for r in layout.trainable_ranges() {
        for i in r {
            h[i] = (p[i] - m[i]) * scale;
        }
    }
    Ok(hv)
}

/// One Per-FedAvg local step as a local step rule around the configured one.
struct MetaStep<'a> {
    algo: &'a PerFedAvg,
    inner: &'a dyn LocalStep,
    data: &'a ClientData,
    batch_size: usize,
    /// The stream of the extra batches D and D''.
    draws: Mutex<RngStream>,
}

impl LocalStep for MetaStep<'_> {
    fn grad(
        &self,
        sc: &StepCtx,
        model: &mut dyn Model,
        params: &mut Params,
        batch: &mut Batch,
        grad: &mut Params,
        rng: &mut RngStream,
    ) -> Result<f32> {
        let mut draws = locked(&self.draws);
        let mut d = sample_batch(self.data, self.batch_size, &mut draws);
        let mut tilde = params.clone();
        let mut g = params.zeros_like();
        self.inner.grad(sc, model, &mut tilde, &mut d, &mut g, &mut draws)?;
        // The adapted point keeps w's running statistics: only the D' pass updates them.
        tilde.as_mut_slice().copy_from_slice(params.as_slice());
        axpy_trainable(&mut tilde, -(self.algo.alpha as f32), &g);
        let loss = self.inner.grad(sc, model, &mut tilde, batch, grad, rng)?;
        copy_buffers(params, &tilde);
        if self.algo.variant == Variant::Hf && self.algo.alpha > 0.0 {
            let mut d2 = sample_batch(self.data, self.batch_size, &mut draws);
            let v = grad.clone();
            let hv = hessian_vector(self.inner, sc, model, params, &mut d2, &v, self.algo.delta, &mut draws)?;
            axpy_trainable(grad, -(self.algo.alpha as f32), &hv);
        }
        Ok(loss)
    }
    fn adjust(&self, sc: &StepCtx, w: &Params, g: &mut Params) {
        self.inner.adjust(sc, w, g)
    }
    fn owns_weight_decay(&self) -> bool {
        self.inner.owns_weight_decay()
    }
}

impl Algorithm for PerFedAvg {
    type Client = ();
    type Server = ();

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _st: &mut ()) -> Result<Update> {
        super::refuse_own_batches(cx, "perfedavg")?;
        let step = MetaStep {
            algo: self,
            inner: cx.step,
            data: d,
            batch_size: cx.train.batch_size,
            draws: Mutex::new(cx.rng("perfedavg_batches")),
        };
        let cx = ClientCtx { step: &step, ..*cx };
        Ok(local_update(&cx, m, d, &mut NoHook)?.0)
    }

    fn adapt(&self, a: &AdaptCtx, _: &(), _: Option<&()>, m: &mut dyn Model, d: &ClientData) -> Result<Option<Params>> {
        if d.is_empty() || self.alpha == 0.0 {
            return Ok(None);
        }
        let mut rng = a.rng("perfedavg_eval");
        let batch = sample_batch(d, a.train.batch_size, &mut rng);
        let (mut w, mut g) = (a.global.clone(), a.global.zeros_like());
        m.loss_grad(&mut w, &batch, &mut g, &mut rng)?;
        let mut out = a.global.clone();
        axpy_trainable(&mut out, -(self.alpha as f32), &g);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::{Fed, LinReg, assert_close, dataset, random_data, small_fed, split};
    use fedkit_core::{LocalTrain, PlainStep};

    fn fed<A: Algorithm>(algo: A) -> Fed<A> {
        small_fed(algo, &[12, 12], 4)
    }

    // alpha = 0: w~ = w, so every FO step is FedAvg's step on the same batch D'.
    #[test]
    fn fo_with_zero_alpha_is_fedavg_bit_for_bit() {
        let (mut a, mut b) = (fed(PerFedAvg { alpha: 0.0, ..PerFedAvg::default() }), fed(FedAvg {}));
        for round in 1..=3 {
            let (_, ua) = a.clients_round(round, &[0, 1]);
            let (_, ub) = b.clients_round(round, &[0, 1]);
            for (x, y) in ua.iter().zip(&ub) {
                assert_eq!(x.delta, y.delta, "round {round}");
                assert_eq!(x.metrics["loss"].to_bits(), y.metrics["loss"].to_bits());
            }
            a.server_round(round, &ua);
            b.server_round(round, &ub);
        }
        assert_eq!(a.global, b.global);
        // And alpha > 0 is not FedAvg.
        let mut c = fed(PerFedAvg { alpha: 0.1, ..PerFedAvg::default() });
        let (_, uc) = c.clients_round(1, &[0]);
        let (_, ub) = fed(FedAvg {}).clients_round(1, &[0]);
        assert_ne!(uc[0].delta, ub[0].delta);
    }

    // The loss of LinReg is quadratic, H = (1/n) sum z z^T with z = [x, 1]: the central difference
    // is exact up to f32 rounding.
    #[test]
    fn hessian_vector_product_matches_the_exact_one() {
        let x: Vec<Vec<f32>> = vec![vec![1.0, 2.0], vec![-0.5, 1.5], vec![2.0, -1.0]];
        let data = split(&dataset(&x, &[1, 0, 2]), &[3]);
        let mut model = LinReg::new(2);
        let w = model.params(&[0.4, -0.3], 0.2);
        let v = model.params(&[1.0, -2.0], 0.5);
        let mut batch = Batch::default();
        batch.fill(&data[0], &[0, 1, 2], &mut RngStream::new(0));
        let sc = StepCtx { round: 1, step: 0, lr: 0.1, weight_decay: 0.0 };
        for delta in [1e-3, 1e-2] {
            let hv =
                hessian_vector(&PlainStep, &sc, &mut model, &w, &mut batch, &v, delta, &mut RngStream::new(0)).unwrap();
            let z: Vec<[f32; 3]> = x.iter().map(|r| [r[0], r[1], 1.0]).collect();
            let vv = v.as_slice();
            let want: Vec<f32> = (0..3)
                .map(|i| z.iter().map(|z| z[i] * (z[0] * vv[0] + z[1] * vv[1] + z[2] * vv[2])).sum::<f32>() / 3.0)
                .collect();
            assert_close(hv.as_slice(), &want, 2e-3);
        }
    }

    // Evaluation adapts the global model by one step of size alpha on a batch of the client's data.
    #[test]
    fn adapt_takes_one_step_from_the_global_model() {
        let algo = PerFedAvg { alpha: 0.5, ..PerFedAvg::default() };
        let data = split(&random_data(6, &[1.0, 1.0], 9), &[6]);
        let mut model = LinReg::new(2);
        let global = model.params(&[0.1, 0.2], 0.0);
        let train = LocalTrain { batch_size: 6, ..LocalTrain::default() };
        let a = AdaptCtx { round: 3, client: 0, seed: 1, global: &global, train: &train };
        let got = algo.adapt(&a, &(), None, &mut model, &data[0]).unwrap().unwrap();
        let mut batch = Batch::default();
        batch.fill(&data[0], &(0..6).collect::<Vec<_>>(), &mut RngStream::new(0));
        let (mut w, mut g) = (global.clone(), global.zeros_like());
        model.loss_grad(&mut w, &batch, &mut g, &mut RngStream::new(0)).unwrap();
        let mut want = global.clone();
        want.axpy(-0.5, &g);
        // A batch of all 6 samples in another order: the same gradient up to summation order.
        assert_close(got.as_slice(), want.as_slice(), 1e-6);
        assert!(PerFedAvg { alpha: 0.0, ..algo }.adapt(&a, &(), None, &mut model, &data[0]).unwrap().is_none());
    }

    // HF corrects FO by -alpha H g: on a quadratic the two directions differ by that much.
    #[test]
    fn hf_differs_from_fo_by_the_hessian_term() {
        let mut fo = fed(PerFedAvg { alpha: 0.2, variant: Variant::Fo, delta: 1e-3 });
        let mut hf = fed(PerFedAvg { alpha: 0.2, variant: Variant::Hf, delta: 1e-3 });
        let (_, a) = fo.clients_round(1, &[0]);
        let (_, b) = hf.clients_round(1, &[0]);
        let diff = a[0].delta.sub(&b[0].delta).l2();
        assert!(diff > 1e-4 && diff < 0.5 * a[0].delta.l2(), "FO and HF differ by {diff}");
    }

    /// A step rule that draws its own batches, as dp_sgd does.
    struct OwnBatches;
    impl LocalStep for OwnBatches {
        fn epoch_batches(&self, n: usize, _b: usize, _rng: &mut RngStream) -> Option<Vec<Vec<usize>>> {
            Some(vec![(0..n).collect()])
        }
    }

    #[test]
    fn refuses_a_rule_with_its_own_batches() {
        let f = fed(PerFedAvg::default());
        let extras = fedkit_core::Extras::default();
        let cx = ClientCtx {
            round: 1,
            client: 0,
            seed: 0,
            global: &f.global,
            broadcast: &extras,
            train: &f.train,
            epochs: 1,
            malicious: false,
            step: &OwnBatches,
            loss: &fedkit_core::CrossEntropyLoss,
            train_hook: None,
        };
        let mut model = LinReg::new(2);
        let e = f.algo.client_update(&cx, &mut model, &f.data[0], &mut ()).unwrap_err().to_string();
        assert!(e.contains("dp_sgd"), "{e}");
        let p = crate::personalization::pfedme::PFedMe::default();
        let e = p.client_update(&cx, &mut model, &f.data[0], &mut Default::default()).unwrap_err().to_string();
        assert!(e.contains("pfedme") && e.contains("dp_sgd"), "{e}");
    }
}
