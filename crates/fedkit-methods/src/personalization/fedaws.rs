//! FedAwS (Federated Averaging with Spreadout): Yu, Rawat, Menon, Kumar, "Federated Learning
//! with Only Positive Labels", ICML 2020 (Algorithm 1).
//!
//! Each client sees only positive labels: typically one class per client (`[data.partition]
//! use = "label_quantity"`, `k = 1`), so it can neither form a softmax over the classes nor push
//! other classes away. The model is a feature map g and class embeddings w_c (the output
//! layer's weight columns). A client trains g and the embeddings of its own classes on the
//! positive part of the cosine contrastive loss,
//!   l_pos(x, y) = max(0, nu_pos - cos(g(x), w_y))^2,
//! which never moves another class's embedding (but for weight decay, if configured). It is
//! the client's training loss (the configured `[loss]` must be the default cross-entropy it
//! replaces), computed inside the model's gradient, so local step rules (DP-SGD's per-example
//! clipping, SAM) see all of it. Trained alone (FedAvg of this loss) every
//! embedding and every feature collapse onto one direction. The server therefore, after the
//! usual averaging, takes `spread_steps` projected gradient steps of size `spread_lr` on the
//! spreadout regulariser over the unit-normalised embeddings u_c = w_c / |w_c|,
//!   R(W) = sum_c sum_{c' != c} max(0, nu - d(u_c, u_c'))^2,  d = (1 - cos) / 2,
//! which pushes every pair closer than nu apart (the paper's "lambda eta grad reg_sp"; the step
//! is on the sphere, renormalised after each step). The server keeps the embeddings at unit
//! norm and the output bias at 0, so the model's logits w_c^T g(x) are |g(x)| times the cosine
//! similarities the loss trains, and the predicted class is the most similar embedding.
//!
//! Round metrics: `fedaws_cos_max` (the largest cosine between two class embeddings after the
//! spreadout) and `fedaws_spread_before` (R before it).
//!
//! Parameters: `nu_pos` (positive margin, default 0.9), `nu` (spreadout margin in cosine
//! distance, default 0.5: pairs are pushed to at least orthogonal), `spread_lr` (default 0.1)
//! and `spread_steps` (default 10; 0 is FedAvg of the positive loss, the collapsing baseline,
//! with the server still normalising the embeddings and zeroing the output bias).
//! The model needs an output layer (weight `[features, classes]`, bias `[classes]`) whose input
//! is its features, as every registered classifier has.
//!
//! ```toml
//! [algorithm]
//! use = "fedaws"
//! nu_pos = 0.9
//! nu = 0.5
//! spread_lr = 0.1
//! spread_steps = 10
//!
//! [data.partition]
//! use = "label_quantity"
//! k = 1
//! ```

use std::ops::Range;
use std::sync::Arc;

use fedkit_core::{
    Aggregate, Algorithm, BATCH_STREAM, Batch, ClientCtx, ClientData, Error, Head, Metrics, Model, NoHook, OutputGrads,
    Outputs, Params, Result, RoundCtx, Update, local_update_from,
};
use serde::{Deserialize, Serialize};

/// FedAwS's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAws {
    /// The positive loss's margin on the cosine similarity.
    pub nu_pos: f64,
    /// The spreadout margin on the cosine distance (1 - cos) / 2.
    pub nu: f64,
    /// The spreadout step size.
    pub spread_lr: f64,
    /// Spreadout steps per round.
    pub spread_steps: usize,
}

impl Default for FedAws {
    fn default() -> Self {
        FedAws { nu_pos: 0.9, nu: 0.5, spread_lr: 0.1, spread_steps: 10 }
    }
}

impl FedAws {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.nu_pos > -1.0 && self.nu_pos <= 1.0) {
            return Err(Error::config("nu_pos", format!("{}: a cosine margin in (-1, 1]", self.nu_pos)));
        }
        if !(self.nu > 0.0 && self.nu <= 1.0) {
            return Err(Error::config("nu", format!("{}: a cosine-distance margin in (0, 1]", self.nu)));
        }
        if !(self.spread_lr > 0.0 && self.spread_lr.is_finite()) {
            return Err(Error::config("spread_lr", format!("{}: must be positive", self.spread_lr)));
        }
        Ok(self)
    }
}

fn own_loss_error() -> Error {
    Error::config(
        "loss.use",
        "fedaws trains its own positive-only loss, which replaces the configured one: use loss.use = \"cross_entropy\"",
    )
}

/// Column `c` of a row-major `[dim, classes]` matrix.
fn column(w: &[f32], classes: usize, c: usize) -> Vec<f64> {
    w.iter().skip(c).step_by(classes).map(|&v| v as f64).collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The class embeddings (columns of `w`, `[dim, classes]`) normalised to unit length (a zero
/// column stays zero).
fn unit_columns(w: &[f32], classes: usize) -> Vec<Vec<f64>> {
    (0..classes)
        .map(|c| {
            let v = column(w, classes, c);
            let n = norm(&v);
            if n > 0.0 { v.iter().map(|x| x / n).collect() } else { v }
        })
        .collect()
}

/// The spreadout regulariser R over unit embeddings `u` and its gradient with respect to each.
pub fn spreadout(u: &[Vec<f64>], nu: f64) -> (f64, Vec<Vec<f64>>) {
    let mut value = 0.0;
    let mut grad: Vec<Vec<f64>> = u.iter().map(|v| vec![0.0; v.len()]).collect();
    for a in 0..u.len() {
        for b in 0..u.len() {
            if a == b {
                continue;
            }
            let cos: f64 = u[a].iter().zip(&u[b]).map(|(x, y)| x * y).sum();
            let gap = nu - (1.0 - cos) / 2.0;
            if gap > 0.0 {
                value += gap * gap;
                // d gap^2 / d u_a = 2 gap (1/2) u_b, and the pair (b, a) adds the same for u_a.
                for (g, y) in grad[a].iter_mut().zip(&u[b]) {
                    *g += 2.0 * gap * y;
                }
            }
        }
    }
    (value, grad)
}

/// The largest cosine between two of the unit embeddings `u`.
fn max_cosine(u: &[Vec<f64>]) -> f64 {
    if u.len() < 2 {
        return 0.0;
    }
    let mut m = f64::NEG_INFINITY;
    for a in 0..u.len() {
        for b in a + 1..u.len() {
            m = m.max(u[a].iter().zip(&u[b]).map(|(x, y)| x * y).sum());
        }
    }
    m
}

/// The positive cosine loss on a batch's features, against the class embeddings `w` (the output
/// weight `[features, classes]` at the point the gradient is taken); its gradient with respect
/// to `w` is left in `grad_w` (the logits get none).
struct PositiveHead {
    nu_pos: f64,
    classes: usize,
    w: Vec<f32>,
    grad_w: Vec<f32>,
}

impl Head for PositiveHead {
    fn value_grad(&mut self, out: &Outputs, batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        let (c, dim, n) = (self.classes, out.feature_dim, batch.len());
        if out.classes != c || self.w.len() != dim * c {
            return Err(Error::Shape(format!(
                "fedaws: {} features and {} classes for an output layer of {} values",
                dim,
                out.classes,
                self.w.len()
            )));
        }
        fedkit_core::model::check_labels(batch, c, "fedaws (its spreadout regulariser)")?;
        g.logits.clear();
        g.logits.resize(out.logits.len(), 0.0);
        g.features.clear();
        g.features.resize(out.features.len(), 0.0);
        self.grad_w.clear();
        self.grad_w.resize(self.w.len(), 0.0);
        let mut total = 0.0f64;
        for (i, &y) in batch.y.iter().enumerate() {
            let y = y as usize;
            let h: Vec<f64> = out.features_of(i).iter().map(|&v| v as f64).collect();
            let w = column(&self.w, c, y);
            let (nh, nw) = (norm(&h), norm(&w));
            if nh < 1e-12 || nw < 1e-12 {
                total += self.nu_pos.max(0.0).powi(2);
                continue;
            }
            let cos = h.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / (nh * nw);
            let gap = self.nu_pos - cos;
            if gap <= 0.0 {
                continue;
            }
            total += gap * gap;
            let coef = -2.0 * gap / n as f64;
            let gf = &mut g.features[i * dim..(i + 1) * dim];
            for k in 0..dim {
                let (hk, wk) = (h[k] / nh, w[k] / nw);
                gf[k] = (coef * (wk - cos * hk) / nh) as f32;
                self.grad_w[k * c + y] += (coef * (hk - cos * wk) / nw) as f32;
            }
        }
        Ok((total / n.max(1) as f64) as f32)
    }
}

/// The client's model with the positive loss as its training loss: `loss_grad` reads the class
/// embeddings from the parameters it is given and returns the loss's whole gradient (the
/// feature map's by back-propagation, the embeddings' from the head). So every local step rule
/// (DP-SGD's per-example clipping, SAM's perturbed point) sees the complete gradient.
struct PositiveModel<'a> {
    inner: &'a mut dyn Model,
    head: PositiveHead,
    weight: Range<usize>,
}

impl Model for PositiveModel<'_> {
    fn clone_box(&self) -> Box<dyn Model> {
        self.inner.clone_box()
    }
    fn layout(&self) -> Arc<fedkit_core::Layout> {
        self.inner.layout()
    }
    fn init(&self, rng: &mut fedkit_core::RngStream) -> Params {
        self.inner.init(rng)
    }
    fn forward(&mut self, params: &Params, batch: &Batch, mode: fedkit_core::Mode, out: &mut Outputs) -> Result<()> {
        self.inner.forward(params, batch, mode, out)
    }
    fn loss_grad(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        grad: &mut Params,
        rng: &mut fedkit_core::RngStream,
    ) -> Result<f32> {
        self.head.w.clear();
        self.head.w.extend_from_slice(&params.as_slice()[self.weight.clone()]);
        let value = self.inner.vjp(params, batch, fedkit_core::Mode::Train, &mut self.head, Some(grad), None, rng)?;
        grad.as_mut_slice()[self.weight.clone()].iter_mut().zip(&self.head.grad_w).for_each(|(a, b)| *a += b);
        Ok(value)
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        self.inner.eval_batch(params, batch)
    }
}

impl Algorithm for FedAws {
    type Client = ();
    type Server = ();

    fn check_setup(&self, m: &dyn Model, loss_is_cross_entropy: bool) -> Result<()> {
        if !loss_is_cross_entropy {
            return Err(own_loss_error());
        }
        m.layout().output_layer().map(|_| ()).map_err(|e| Error::config("model.use", format!("fedaws: {e}")))
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _st: &mut ()) -> Result<Update> {
        if !cx.loss.is_cross_entropy() {
            return Err(own_loss_error());
        }
        let (weight, _, classes) = cx.global.layout().output_layer()?;
        let head = PositiveHead { nu_pos: self.nu_pos, classes, w: Vec::new(), grad_w: Vec::new() };
        let mut model = PositiveModel { inner: m, head, weight };
        Ok(local_update_from(cx, cx.global.clone(), BATCH_STREAM, &mut model, d, &mut NoHook)?.0)
    }

    fn server_update(&self, _r: &RoundCtx, w: &mut Params, _s: &mut (), agg: &Aggregate) -> Result<Metrics> {
        w.axpy(1.0, &agg.delta);
        let (weight, bias, classes) = w.layout().output_layer()?;
        let dim = weight.len() / classes;
        let mut u = unit_columns(&w.as_slice()[weight.clone()], classes);
        let before = spreadout(&u, self.nu).0;
        for _ in 0..self.spread_steps {
            let (_, grad) = spreadout(&u, self.nu);
            for (v, g) in u.iter_mut().zip(&grad) {
                v.iter_mut().zip(g).for_each(|(x, d)| *x -= self.spread_lr * d);
                let n = norm(v);
                if n > 0.0 {
                    v.iter_mut().for_each(|x| *x /= n);
                }
            }
        }
        let ws = &mut w.as_mut_slice()[weight];
        for (c, v) in u.iter().enumerate() {
            for k in 0..dim {
                ws[k * classes + c] = v[k] as f32;
            }
        }
        w.as_mut_slice()[bias].fill(0.0);
        let mut m = Metrics::new();
        m.insert("fedaws_cos_max".into(), max_cosine(&u));
        m.insert("fedaws_spread_before".into(), before);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::{SoftmaxReg, dataset, split};
    use fedkit_core::{Extras, LocalTrain, RngStream};

    fn unit(v: Vec<f64>) -> Vec<f64> {
        let n = norm(&v);
        v.into_iter().map(|x| x / n).collect()
    }

    // The regulariser's gradient is its derivative, and steps on it push close embeddings
    // apart until every pair is at least nu apart; pairs already far apart feel nothing.
    #[test]
    fn the_spreadout_regulariser_pushes_class_embeddings_apart() {
        let mut rng = RngStream::new(3);
        let mut u: Vec<Vec<f64>> =
            (0..4).map(|_| unit((0..5).map(|k| 1.0 + 0.1 * rng.normal() + k as f64).collect())).collect();
        let (r, g) = spreadout(&u, 0.5);
        for a in 0..4 {
            for k in 0..5 {
                let mut v = u.clone();
                v[a][k] += 1e-6;
                let num = (spreadout(&v, 0.5).0 - r) / 1e-6;
                assert!((num - g[a][k]).abs() < 1e-4, "{num} vs {}", g[a][k]);
            }
        }
        let start = max_cosine(&u);
        assert!(start > 0.95, "nearly collapsed: {start}");
        for _ in 0..500 {
            let (_, g) = spreadout(&u, 0.5);
            for (v, d) in u.iter_mut().zip(&g) {
                v.iter_mut().zip(d).for_each(|(x, y)| *x -= 0.1 * y);
                *v = unit(v.clone());
            }
        }
        assert!(max_cosine(&u) < 0.05, "every pair about orthogonal or beyond: {}", max_cosine(&u));
        let far = vec![vec![1.0, 0.0], vec![-1.0, 0.0]];
        assert_eq!(spreadout(&far, 0.5).0, 0.0);
    }

    // The positive loss's gradients with respect to the features and to the class embeddings
    // are its derivatives.
    #[test]
    fn the_positive_loss_gradients_match_finite_differences() {
        let (dim, c) = (4, 3);
        let mut rng = RngStream::new(8);
        let feats: Vec<f32> = (0..2 * dim).map(|_| rng.normal() as f32).collect();
        let w: Vec<f32> = (0..dim * c).map(|_| rng.normal() as f32).collect();
        let batch = Batch { x: vec![0.0; 2], y: vec![2, 0], feature_shape: vec![1], classes: c, targets: Vec::new() };
        let value = |feats: &[f32], w: &[f32], g: &mut OutputGrads| -> (f64, Vec<f32>) {
            let mut head = PositiveHead { nu_pos: 1.0, classes: c, w: w.to_vec(), grad_w: Vec::new() };
            let out = Outputs { logits: vec![0.0; 2 * c], classes: c, features: feats.to_vec(), feature_dim: dim };
            (head.value_grad(&out, &batch, g).unwrap() as f64, head.grad_w)
        };
        let mut g = OutputGrads::default();
        let (v0, gw) = value(&feats, &w, &mut g);
        assert!(v0 > 0.0 && g.logits.iter().all(|&z| z == 0.0));
        let eps = 1e-3f32;
        for k in 0..feats.len() {
            let (mut up, mut down) = (feats.clone(), feats.clone());
            up[k] += eps;
            down[k] -= eps;
            let num = (value(&up, &w, &mut OutputGrads::default()).0 - value(&down, &w, &mut OutputGrads::default()).0)
                / (2.0 * eps as f64);
            assert!((num - g.features[k] as f64).abs() < 1e-3, "feature {k}: {num} vs {}", g.features[k]);
        }
        for k in 0..w.len() {
            let (mut up, mut down) = (w.clone(), w.clone());
            up[k] += eps;
            down[k] -= eps;
            let num = (value(&feats, &up, &mut OutputGrads::default()).0
                - value(&feats, &down, &mut OutputGrads::default()).0)
                / (2.0 * eps as f64);
            assert!((num - gw[k] as f64).abs() < 1e-3, "weight {k}: {num} vs {}", gw[k]);
        }
        // Class 1 has no sample: its embedding gets no gradient.
        assert!((0..dim).all(|j| gw[j * c + 1] == 0.0));
    }

    // A client of one class trains with the positive loss: its class's embedding turns towards
    // its features and no other class's embedding or bias moves.
    #[test]
    fn a_positive_only_client_moves_its_own_class_embedding_only() {
        let x: Vec<Vec<f32>> = (0..8).map(|i| vec![1.0 + 0.1 * i as f32, 0.5, -0.2]).collect();
        let y = vec![1u32; 8];
        let data = split(&dataset(&x, &y), &[8]);
        let mut model = SoftmaxReg::input_major(3, 4);
        let mut rng = RngStream::new(1);
        let global = model.init(&mut rng);
        let train = LocalTrain { lr: 0.5, epochs: 3, batch_size: 4, ..LocalTrain::default() };
        // nu_pos = 1: every sample pulls until its features and embedding align exactly.
        let algo = FedAws { nu_pos: 1.0, ..FedAws::default() };
        let extras = Extras::default();
        let cx = ClientCtx {
            round: 1,
            client: 0,
            seed: 1,
            global: &global,
            broadcast: &extras,
            train: &train,
            epochs: train.epochs,
            malicious: false,
            step: &fedkit_core::PlainStep,
            loss: &fedkit_core::CrossEntropyLoss,
            train_hook: None,
        };
        let u = algo.client_update(&cx, &mut model, &data[0], &mut ()).unwrap();
        let (weight, bias, c) = global.layout().output_layer().unwrap();
        let d = &u.delta.as_slice()[weight.clone()];
        for (k, v) in d.iter().enumerate() {
            if k % c != 1 {
                assert_eq!(*v, 0.0, "another class's embedding moved");
            }
        }
        assert!(u.delta.as_slice()[bias].iter().all(|&b| b == 0.0));
        let mut after = global.clone();
        after.axpy(1.0, &u.delta);
        let cos = |p: &Params| {
            let w = column(&p.as_slice()[weight.clone()], c, 1);
            let h = [1.35f64, 0.5, -0.2];
            h.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / (norm(&h) * norm(&w))
        };
        assert!(cos(&after) > 0.99 && cos(&after) > cos(&global), "{} -> {}", cos(&global), cos(&after));
    }

    // The server normalises the embeddings, zeroes the output bias and spreads collapsed
    // embeddings; with no spreadout steps it only normalises.
    #[test]
    fn the_server_spreads_and_normalises_the_embeddings() {
        let model = SoftmaxReg::input_major(3, 4);
        let mut w = model.init(&mut RngStream::new(2));
        let (weight, bias, c) = w.layout().output_layer().unwrap();
        for (k, v) in w.as_mut_slice()[weight.clone()].iter_mut().enumerate() {
            *v = 1.0 + 0.01 * (k % c) as f32 + (k / c) as f32;
        }
        let agg = Aggregate {
            delta: w.zeros_like(),
            weight: 1.0,
            extras: Extras::default(),
            accepted: vec![],
            metrics: Metrics::new(),
            weighting: fedkit_core::Weighting::UpdateWeights,
        };
        let r =
            RoundCtx { round: 1, cohort: &[], global: &w.clone(), seed: 1, population: 1, malicious: &[], draws: &[] };
        let mut none = w.clone();
        let m0 = FedAws { spread_steps: 0, ..FedAws::default() }.server_update(&r, &mut none, &mut (), &agg).unwrap();
        let mut spread = w.clone();
        let m = FedAws { spread_steps: 50, ..FedAws::default() }.server_update(&r, &mut spread, &mut (), &agg).unwrap();
        assert!(m0["fedaws_cos_max"] > 0.99 && m["fedaws_cos_max"] < 0.5, "{m0:?} {m:?}");
        for p in [&none, &spread] {
            assert!(p.as_slice()[bias.clone()].iter().all(|&b| b == 0.0));
            for k in 0..c {
                assert!((norm(&column(&p.as_slice()[weight.clone()], c, k)) - 1.0).abs() < 1e-5);
            }
        }
    }
}
