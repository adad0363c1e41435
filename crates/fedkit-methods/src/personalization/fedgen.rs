//! FedGen: Zhu, Hong, Zhou, "Data-Free Knowledge Distillation for Heterogeneous Federated
//! Learning", ICML 2021 (Algorithm 1).
//!
//! The server learns a lightweight generator G_w(eps, y) that maps noise eps ~ N(0, I) and a
//! label y to the feature space, the input of the model's output layer (the predictor h). It
//! is trained so that the ensemble of the clients' predictors labels its output y:
//!   min_w E_{y ~ p(y)} E_eps [ CE( sum_k alpha_{k,y} h(G_w(eps, y); theta_k), y ) ],
//! (Eq. 4 with the ensemble's logits weighted by each client's share of the label, a
//! departure: the paper averages the logits, the reference code sums weighted per-client
//! cross-entropies),
//! where p(y) is the label distribution of the round's clients (they send their label counts
//! with their update, extra `fedgen_label_counts`) and alpha_{k,y} = n_k(y) / sum_k' n_k'(y)
//! weights client k's logits by its share of label y. The generator uses only the predictors
//! (the output layers of the uploaded models) and the counts: no data and no features.
//!
//! The server sends the generator and p(y) with the model. Each local step adds to the
//! client's loss the generator's knowledge (Eq. 5):
//!   alpha * E_{y ~ p(y)} E_eps [ CE( h(G_w(eps, y); theta_k), y ) ],
//! on a fresh batch of `client.batch_size` generated features each step (a gradient hook: SAM's
//! perturbation and DP-SGD's clipping do not apply to this term, which reads no client data), so the client's predictor learns the
//! whole label distribution while its feature map learns from its own data. The global model
//! is the FedAvg average; the generator only shapes the clients' training.
//!
//! The generator: [eps; onehot(y)] -> Linear(noise + classes, hidden) -> ReLU -> Linear(hidden,
//! features), trained with Adam for `generator_steps` steps of `generator_batch` samples a
//! round, its state (and Adam's) kept on the server. Round metrics: `fedgen_loss_before` and
//! `fedgen_loss_after` (the ensemble cross-entropy on a fixed probe batch around the steps).
//!
//! Parameters: `alpha` (the weight of the generated-feature loss, default 1; 0 is FedAvg bit
//! for bit, tested), `noise_dim` (default 32), `hidden` (default 256), `generator_steps`
//! (default 20), `generator_batch` (default 64), `generator_lr` (Adam, default 1e-3).
//! The label counts are sent in the clear, so DP stages are refused (at config time for the
//! server-side ones, whose noise the generator would bypass; DP-SGD refuses the extra).
//! Not built: the reference code's extra terms (a latent KL between real and generated
//! outputs, a diversity loss on the generator, decaying alphas), and the partial-model
//! variant that shares only the predictor.
//!
//! ```toml
//! [algorithm]
//! use = "fedgen"
//! alpha = 1.0
//! generator_steps = 20
//! ```

use std::ops::Range;
use std::sync::Arc;

use fedkit_core::optim::Optimizer;
use fedkit_core::{
    Aggregate, Algorithm, BATCH_STREAM, ClientCtx, ClientData, Error, Extra, Extras, GradHook, Layout, LocalTrain,
    Metrics, Model, OptimizerKind, ParamKind, Params, Result, RngStream, RoundCtx, ServerView, Update,
    local_update_from,
};
use serde::{Deserialize, Serialize};

const GENERATOR: &str = "fedgen_generator";
const PRIOR: &str = "fedgen_prior";
const COUNTS: &str = "fedgen_label_counts";

/// FedGen's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedGen {
    /// The weight of the generated-feature loss on the clients.
    pub alpha: f64,
    /// The generator's noise dimensions.
    pub noise_dim: usize,
    /// The generator's hidden width.
    pub hidden: usize,
    /// Adam steps on the generator per round.
    pub generator_steps: usize,
    /// Generated samples per generator step.
    pub generator_batch: usize,
    /// The generator's Adam learning rate.
    pub generator_lr: f64,
}

impl Default for FedGen {
    fn default() -> Self {
        FedGen { alpha: 1.0, noise_dim: 32, hidden: 256, generator_steps: 20, generator_batch: 64, generator_lr: 1e-3 }
    }
}

impl FedGen {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return Err(Error::config("alpha", format!("{}: must be >= 0", self.alpha)));
        }
        for (field, v) in
            [("noise_dim", self.noise_dim), ("hidden", self.hidden), ("generator_batch", self.generator_batch)]
        {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if !(self.generator_lr > 0.0 && self.generator_lr.is_finite()) {
            return Err(Error::config("generator_lr", format!("{}: must be positive", self.generator_lr)));
        }
        Ok(self)
    }
}

/// The generator's architecture: noise and label in, features out.
#[derive(Clone, Debug)]
pub struct Generator {
    pub noise: usize,
    pub classes: usize,
    pub hidden: usize,
    pub features: usize,
    layout: Arc<Layout>,
}

/// A generated batch and what the backward pass needs.
pub struct Generated {
    /// `[n, noise + classes]` inputs.
    input: Vec<f32>,
    /// `[n, hidden]` post-ReLU activations.
    hidden: Vec<f32>,
    /// `[n, features]` outputs.
    pub features: Vec<f32>,
}

impl Generator {
    pub fn new(noise: usize, classes: usize, hidden: usize, features: usize) -> Generator {
        let mut l = Layout::new();
        l.push("gen1.weight", &[noise + classes, hidden], ParamKind::Weight);
        l.push("gen1.bias", &[hidden], ParamKind::Bias);
        l.push("gen2.weight", &[hidden, features], ParamKind::Weight);
        l.push("gen2.bias", &[features], ParamKind::Bias);
        Generator { noise, classes, hidden, features, layout: Arc::new(l) }
    }
    /// The parameter layout.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }
    /// PyTorch's default initialisation of the two linear layers: U(-1/sqrt(fan_in), +).
    pub fn init(&self, rng: &mut RngStream) -> Params {
        let mut p = Params::zeros(self.layout.clone());
        let (i, h) = (self.noise + self.classes, self.hidden);
        let bounds =
            [1.0 / (i as f64).sqrt(), 1.0 / (i as f64).sqrt(), 1.0 / (h as f64).sqrt(), 1.0 / (h as f64).sqrt()];
        let ranges: Vec<Range<usize>> = self.layout.entries().iter().map(|e| e.range()).collect();
        for (r, b) in ranges.into_iter().zip(bounds) {
            p.as_mut_slice()[r].iter_mut().for_each(|v| *v = ((2.0 * rng.uniform() - 1.0) * b) as f32);
        }
        p
    }
    fn split<'a>(&self, p: &'a [f32]) -> [&'a [f32]; 4] {
        let e = self.layout.entries();
        [&p[e[0].range()], &p[e[1].range()], &p[e[2].range()], &p[e[3].range()]]
    }
    /// The generator's outputs for `labels`, with noise from `rng`.
    pub fn forward(&self, p: &Params, labels: &[u32], rng: &mut RngStream) -> Generated {
        let (d, h, f) = (self.noise + self.classes, self.hidden, self.features);
        let mut input = vec![0.0f32; labels.len() * d];
        for (row, &y) in input.chunks_exact_mut(d).zip(labels) {
            row[..self.noise].iter_mut().for_each(|v| *v = rng.normal() as f32);
            row[self.noise + y as usize] = 1.0;
        }
        let [w1, b1, w2, b2] = self.split(p.as_slice());
        let hidden = affine(&input, w1, b1, d, h, true);
        let features = affine(&hidden, w2, b2, h, f, false);
        Generated { input, hidden, features }
    }
    /// The gradient of a loss with respect to the parameters, given its gradient `gf`
    /// (`[n, features]`) with respect to the outputs of `g`.
    pub fn backward(&self, p: &Params, g: &Generated, gf: &[f32]) -> Params {
        let (d, h, f) = (self.noise + self.classes, self.hidden, self.features);
        let [_, _, w2, _] = self.split(p.as_slice());
        let mut grad = Params::zeros(self.layout.clone());
        let e: Vec<Range<usize>> = self.layout.entries().iter().map(|e| e.range()).collect();
        let gs = grad.as_mut_slice();
        let n = gf.len() / f;
        let mut gh = vec![0.0f32; h];
        for s in 0..n {
            let (x, hs, go) = (&g.input[s * d..(s + 1) * d], &g.hidden[s * h..(s + 1) * h], &gf[s * f..(s + 1) * f]);
            for j in 0..h {
                let mut acc = 0.0f32;
                for k in 0..f {
                    gs[e[2].start + j * f + k] += hs[j] * go[k];
                    acc += w2[j * f + k] * go[k];
                }
                gh[j] = if hs[j] > 0.0 { acc } else { 0.0 };
            }
            for k in 0..f {
                gs[e[3].start + k] += go[k];
            }
            for (i, &xi) in x.iter().enumerate() {
                if xi != 0.0 {
                    for j in 0..h {
                        gs[e[0].start + i * h + j] += xi * gh[j];
                    }
                }
            }
            for j in 0..h {
                gs[e[1].start + j] += gh[j];
            }
        }
        grad
    }
}

/// `x [n, d] W [d, h] + b`, optionally through a ReLU.
fn affine(x: &[f32], w: &[f32], b: &[f32], d: usize, h: usize, relu: bool) -> Vec<f32> {
    let n = x.len() / d;
    let mut out = Vec::with_capacity(n * h);
    for row in x.chunks_exact(d) {
        let start = out.len();
        out.extend_from_slice(b);
        for (i, &xi) in row.iter().enumerate() {
            if xi != 0.0 {
                out[start..].iter_mut().zip(&w[i * h..(i + 1) * h]).for_each(|(o, wv)| *o += xi * wv);
            }
        }
        if relu {
            out[start..].iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    out
}

/// Mean cross-entropy of `logits` ([n, c]) against `y`, and its gradient (softmax - onehot) / n
/// in place of the logits.
fn cross_entropy_grad(logits: &mut [f32], y: &[u32], c: usize) -> f64 {
    let (loss, _) = fedkit_core::model::softmax_cross_entropy(logits, y, c);
    fedkit_core::model::logits_to_grad(logits, y, c);
    loss / y.len().max(1) as f64
}

/// `n` labels drawn from the distribution `prior` (unnormalised weights).
fn draw_labels(prior: &[f32], n: usize, rng: &mut RngStream) -> Vec<u32> {
    let total: f64 = prior.iter().map(|&p| p as f64).sum();
    (0..n)
        .map(|_| {
            let mut u = rng.uniform() * total;
            for (c, &p) in prior.iter().enumerate() {
                u -= p as f64;
                if u < 0.0 {
                    return c as u32;
                }
            }
            prior.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
        })
        .collect()
}

/// The server's state: the generator, its Adam moments and its architecture's dimensions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GenServer {
    /// The generator's `[noise, classes, hidden, features]`; `None` before the first round.
    pub dims: Option<[usize; 4]>,
    pub generator: Option<Params>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_t: i32,
    /// The label distribution of the last round's clients (counts).
    pub prior: Vec<f32>,
}

/// Adds the generated-feature loss's gradient to the output layer's at every local step.
struct TeacherHook<'a> {
    generator: &'a Generator,
    params: &'a Params,
    prior: &'a [f32],
    alpha: f32,
    batch: usize,
    weight: Range<usize>,
    bias: Range<usize>,
    rng: RngStream,
}

impl GradHook for TeacherHook<'_> {
    fn on_grad(&mut self, _step: usize, w: &Params, g: &mut Params) {
        let (f, c) = (self.generator.features, self.generator.classes);
        let labels = draw_labels(self.prior, self.batch, &mut self.rng);
        let sample = self.generator.forward(self.params, &labels, &mut self.rng);
        let ws = w.as_slice();
        let mut logits = affine(&sample.features, &ws[self.weight.clone()], &ws[self.bias.clone()], f, c, false);
        cross_entropy_grad(&mut logits, &labels, c);
        let gs = g.as_mut_slice();
        for (feat, gz) in sample.features.chunks_exact(f).zip(logits.chunks_exact(c)) {
            for (j, &x) in feat.iter().enumerate() {
                let row = &mut gs[self.weight.start + j * c..self.weight.start + (j + 1) * c];
                row.iter_mut().zip(gz).for_each(|(a, z)| *a += self.alpha * x * z);
            }
            gs[self.bias.clone()].iter_mut().zip(gz).for_each(|(a, z)| *a += self.alpha * z);
        }
    }
}

impl FedGen {
    fn generator(&self, features: usize, classes: usize) -> Generator {
        Generator::new(self.noise_dim, classes, self.hidden, features)
    }

    /// The ensemble cross-entropy of the clients' predictors `heads` on generated features of
    /// `labels`, and (if `grad`) its gradient with respect to the generator.
    #[allow(clippy::too_many_arguments)]
    fn ensemble_loss(
        &self,
        g: &Generator,
        p: &Params,
        heads: &[(Vec<f32>, Vec<f32>)],
        alphas: &[Vec<f32>],
        labels: &[u32],
        rng: &mut RngStream,
        grad: bool,
    ) -> (f64, Option<Params>) {
        let (f, c, n) = (g.features, g.classes, labels.len());
        let sample = g.forward(p, labels, rng);
        let mut z = vec![0.0f32; n * c];
        for (k, (w, b)) in heads.iter().enumerate() {
            let zk = affine(&sample.features, w, b, f, c, false);
            for (s, &y) in labels.iter().enumerate() {
                let a = alphas[k][y as usize];
                z[s * c..(s + 1) * c].iter_mut().zip(&zk[s * c..(s + 1) * c]).for_each(|(t, v)| *t += a * v);
            }
        }
        let loss = cross_entropy_grad(&mut z, labels, c);
        if !grad {
            return (loss, None);
        }
        let mut gf = vec![0.0f32; n * f];
        for (k, (w, _)) in heads.iter().enumerate() {
            for (s, &y) in labels.iter().enumerate() {
                let a = alphas[k][y as usize];
                if a == 0.0 {
                    continue;
                }
                let gz = &z[s * c..(s + 1) * c];
                for j in 0..f {
                    gf[s * f + j] += a * w[j * c..(j + 1) * c].iter().zip(gz).map(|(wv, zv)| wv * zv).sum::<f32>();
                }
            }
        }
        (loss, Some(g.backward(p, &sample, &gf)))
    }
}

impl Algorithm for FedGen {
    type Client = ();
    type Server = GenServer;

    fn reads_updates(&self) -> bool {
        true
    }

    fn combines_updates_itself(&self) -> bool {
        true
    }

    fn check_setup(&self, m: &dyn Model, _loss_is_cross_entropy: bool) -> Result<()> {
        m.layout().output_layer().map(|_| ()).map_err(|e| Error::config("model.use", format!("fedgen: {e}")))
    }

    fn broadcast(&self, _r: &RoundCtx, s: &GenServer) -> Extras {
        let mut e = Extras::default();
        if let Some(g) = &s.generator {
            e.insert(GENERATOR, Extra::Params(g.clone()));
            e.insert(PRIOR, Extra::Vector(s.prior.clone()));
        }
        e
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _st: &mut ()) -> Result<Update> {
        if d.data.positions() > 0 {
            return Err(Error::Method(format!(
                "fedgen generates features for one label per sample; {} has a target per position (sequence data)",
                d.data.name
            )));
        }
        let (weight, bias, classes) = cx.global.layout().output_layer()?;
        let mut counts = vec![0.0f32; classes];
        for p in 0..d.len() {
            let y = d.label(p) as usize;
            *counts.get_mut(y).ok_or_else(|| {
                Error::Shape(format!("fedgen: label {y} for an output layer of {classes} classes"))
            })? += 1.0;
        }
        let generator = cx.broadcast.params(GENERATOR);
        let prior = match cx.broadcast.get(PRIOR) {
            Some(Extra::Vector(v)) if v.len() == classes && v.iter().any(|&p| p > 0.0) => Some(v.as_slice()),
            _ => None,
        };
        let mut u = match (generator, prior) {
            (Some(params), Some(prior)) if self.alpha > 0.0 => {
                let g = self.generator(weight.len() / classes, classes);
                if params.len() != g.layout().total() {
                    return Err(Error::Method(format!(
                        "fedgen: a generator of {} values for one of {}",
                        params.len(),
                        g.layout().total()
                    )));
                }
                let mut hook = TeacherHook {
                    generator: &g,
                    params,
                    prior,
                    alpha: self.alpha as f32,
                    batch: cx.train.batch_size.max(1),
                    weight,
                    bias,
                    rng: cx.rng("fedgen_teacher"),
                };
                local_update_from(cx, cx.global.clone(), BATCH_STREAM, m, d, &mut hook)?.0
            }
            _ => local_update_from(cx, cx.global.clone(), BATCH_STREAM, m, d, &mut fedkit_core::NoHook)?.0,
        };
        u.extras.insert(COUNTS, Extra::Vector(counts));
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut GenServer,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        w.axpy(1.0, &agg.delta);
        let (weight, bias, classes) = r.global.layout().output_layer()?;
        let features = weight.len() / classes;
        let g = self.generator(features, classes);
        let dims = [g.noise, g.classes, g.hidden, g.features];
        let total = g.layout().total();
        let fits = s.generator.as_ref().is_some_and(|p| p.len() == total)
            && s.adam_m.len() == s.adam_v.len()
            && (s.adam_m.is_empty() || s.adam_m.len() == total)
            && s.adam_t >= 0;
        if s.dims != Some(dims) || !fits {
            // A new generator (first round, or another architecture than the stored one).
            s.dims = Some(dims);
            s.generator = Some(g.init(&mut RngStream::derive(r.seed, "fedgen_init", 0, 0)));
            (s.adam_m, s.adam_v, s.adam_t) = (Vec::new(), Vec::new(), 0);
        }
        // The round's predictors and label counts.
        let mut heads = Vec::with_capacity(view.updates.len());
        let mut counts = Vec::with_capacity(view.updates.len());
        for u in view.updates {
            let c = match u.extras.get(COUNTS) {
                Some(Extra::Vector(v)) if v.len() == classes && v.iter().all(|x| x.is_finite() && *x >= 0.0) => {
                    v.clone()
                }
                _ => {
                    return Err(Error::Method(format!(
                        "fedgen: client {}'s update carries no valid label counts (`{COUNTS}`: {classes} finite counts >= 0); a pipeline stage removed or changed its extras",
                        u.client
                    )));
                }
            };
            let mut model = r.global.clone();
            model.axpy(1.0, &u.delta);
            let m = model.as_slice();
            heads.push((m[weight.clone()].to_vec(), m[bias.clone()].to_vec()));
            counts.push(c);
        }
        let mut prior = vec![0.0f32; classes];
        counts.iter().for_each(|c| prior.iter_mut().zip(c).for_each(|(p, v)| *p += v));
        let mut metrics = Metrics::new();
        if heads.is_empty() || prior.iter().all(|&p| p <= 0.0) {
            return Ok(metrics);
        }
        let alphas: Vec<Vec<f32>> = counts
            .iter()
            .map(|c| c.iter().zip(&prior).map(|(v, p)| if *p > 0.0 { v / p } else { 0.0 }).collect())
            .collect();
        let mut p = s.generator.take().ok_or_else(|| Error::Method("fedgen: no generator".into()))?;
        let probe_labels = draw_labels(
            &prior,
            self.generator_batch,
            &mut RngStream::derive(r.seed, "fedgen_probe", r.round as u64, 0),
        );
        let probe = |p: &Params| {
            let mut rng = RngStream::derive(r.seed, "fedgen_probe_noise", r.round as u64, 0);
            self.ensemble_loss(&g, p, &heads, &alphas, &probe_labels, &mut rng, false).0
        };
        metrics.insert("fedgen_loss_before".into(), probe(&p));
        let train = LocalTrain { lr: self.generator_lr, optimizer: OptimizerKind::Adam, ..LocalTrain::default() };
        let mut opt = Optimizer::new(&train, g.layout());
        opt.set_state(std::mem::take(&mut s.adam_m), std::mem::take(&mut s.adam_v), s.adam_t);
        let mut rng = RngStream::derive(r.seed, "fedgen_train", r.round as u64, 0);
        for _ in 0..self.generator_steps {
            let labels = draw_labels(&prior, self.generator_batch, &mut rng);
            let (_, grad) = self.ensemble_loss(&g, &p, &heads, &alphas, &labels, &mut rng, true);
            let grad = grad.ok_or_else(|| Error::Method("fedgen: no generator gradient".into()))?;
            opt.step(p.as_mut_slice(), grad.as_slice(), self.generator_lr as f32);
        }
        (s.adam_m, s.adam_v, s.adam_t) = opt.into_state();
        metrics.insert("fedgen_loss_after".into(), probe(&p));
        s.generator = Some(p);
        s.prior = prior;
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::{Fed, SoftmaxReg, dataset, split};

    // The generator's backward pass is the derivative of its outputs.
    #[test]
    fn the_generator_backward_matches_finite_differences() {
        let g = Generator::new(3, 2, 5, 4);
        let mut p = g.init(&mut RngStream::new(1));
        let labels = [0u32, 1, 1];
        let v: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let f = |p: &Params| -> f64 {
            let out = g.forward(p, &labels, &mut RngStream::new(9));
            out.features.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let sample = g.forward(&p, &labels, &mut RngStream::new(9));
        let grad = g.backward(&p, &sample, &v);
        for i in (0..p.len()).step_by(3) {
            let x = p.as_slice()[i];
            p.as_mut_slice()[i] = x + 1e-3;
            let up = f(&p);
            p.as_mut_slice()[i] = x - 1e-3;
            let down = f(&p);
            p.as_mut_slice()[i] = x;
            let num = (up - down) / 2e-3;
            assert!((num - grad.as_slice()[i] as f64).abs() < 2e-3, "{i}: {num} vs {}", grad.as_slice()[i]);
        }
    }

    fn three_class_clients() -> Vec<ClientData> {
        let x: Vec<Vec<f32>> = (0..16).map(|i| vec![(i % 4) as f32 * 0.3, 1.0 - (i % 3) as f32 * 0.2, 0.5]).collect();
        let y: Vec<u32> = (0..16).map(|i| if i < 8 { 0 } else { 1 + (i % 2) as u32 }).collect();
        split(&dataset(&x, &y), &[8, 8])
    }

    fn fed<A: Algorithm>(algo: A) -> Fed<A, SoftmaxReg> {
        let model = SoftmaxReg::input_major(3, 3);
        let global = model.init(&mut RngStream::new(4));
        let train = LocalTrain { lr: 0.1, epochs: 2, batch_size: 4, ..LocalTrain::default() };
        Fed::with_model(algo, model, three_class_clients(), train, global)
    }

    // The client hook adds alpha times the generated-feature loss's gradient with respect to
    // the output layer (4 features, 3 classes): finite differences of that loss.
    #[test]
    fn the_teacher_hook_adds_the_generated_losss_gradient() {
        let (f, c) = (4, 3);
        let g = Generator::new(2, c, 5, f);
        let gp = g.init(&mut RngStream::new(3));
        let model = SoftmaxReg::input_major(f, c);
        let mut w = model.init(&mut RngStream::new(4));
        let (weight, bias, _) = w.layout().output_layer().unwrap();
        let prior = [1.0f32, 0.0, 3.0];
        let hook = |w: &Params| {
            let mut h = TeacherHook {
                generator: &g,
                params: &gp,
                prior: &prior,
                alpha: 2.0,
                batch: 6,
                weight: weight.clone(),
                bias: bias.clone(),
                rng: RngStream::new(11),
            };
            let mut grad = w.zeros_like();
            h.on_grad(0, w, &mut grad);
            grad
        };
        let loss = |w: &Params| {
            let mut rng = RngStream::new(11);
            let labels = draw_labels(&prior, 6, &mut rng);
            assert!(labels.iter().all(|&y| y != 1), "a zero-count class is never drawn");
            let s = g.forward(&gp, &labels, &mut rng);
            let ws = w.as_slice();
            let mut z = affine(&s.features, &ws[weight.clone()], &ws[bias.clone()], f, c, false);
            2.0 * cross_entropy_grad(&mut z, &labels, c)
        };
        let grad = hook(&w);
        for i in weight.clone().chain(bias.clone()) {
            let x = w.as_slice()[i];
            w.as_mut_slice()[i] = x + 1e-3;
            let up = loss(&w);
            w.as_mut_slice()[i] = x - 1e-3;
            let down = loss(&w);
            w.as_mut_slice()[i] = x;
            let num = (up - down) / 2e-3;
            assert!((num - grad.as_slice()[i] as f64).abs() < 2e-3, "{i}: {num} vs {}", grad.as_slice()[i]);
        }
    }

    // alpha = 0: the clients train as FedAvg's, and the global model is FedAvg's bit for bit
    // (the generator trains on the side).
    #[test]
    fn alpha_zero_is_fedavg_bit_for_bit() {
        let (mut a, mut b) = (fed(FedGen { alpha: 0.0, ..FedGen::default() }), fed(FedAvg {}));
        for round in 1..=3 {
            let (_, ua) = a.clients_round(round, &[0, 1]);
            let (_, ub) = b.clients_round(round, &[0, 1]);
            for (x, y) in ua.iter().zip(&ub) {
                assert_eq!(x.delta, y.delta);
            }
            a.server_round(round, &ua);
            b.server_round(round, &ub);
            assert_eq!(a.global, b.global, "round {round}");
        }
        assert!(a.server.generator.is_some());
    }

    // The server's steps lower the ensemble's loss on generated features, and the label prior
    // is the sum of the clients' counts.
    #[test]
    fn the_generator_learns_what_the_client_predictors_agree_on() {
        let mut f = fed(FedGen { generator_steps: 200, hidden: 16, noise_dim: 4, ..FedGen::default() });
        let (_, ups) = f.clients_round(1, &[0, 1]);
        let m = f.server_round(1, &ups);
        assert!(m["fedgen_loss_after"] < 0.5 * m["fedgen_loss_before"], "{m:?}");
        assert_eq!(f.server.prior, vec![8.0, 4.0, 4.0]);
        // Adam continues across rounds: its step count adds up.
        let (_, ups) = f.clients_round(2, &[0, 1]);
        f.server_round(2, &ups);
        assert_eq!(f.server.adam_t, 400);
    }

    // With a generator, a client's predictor also learns the labels it has no data of: client
    // 0 (only class 0) trained with the generator scores the generated class-1 and class-2
    // features better than without.
    #[test]
    fn generated_features_teach_a_client_the_other_labels() {
        let mut f = fed(FedGen { generator_steps: 300, hidden: 16, noise_dim: 4, alpha: 1.0, ..FedGen::default() });
        let (_, ups) = f.clients_round(1, &[0, 1]);
        f.server_round(1, &ups);
        let mut plain = fed(FedGen { alpha: 0.0, ..FedGen::default() });
        plain.global = f.global.clone();
        plain.server = f.server.clone();
        let (_, with) = f.clients_round(2, &[0]);
        let (_, without) = plain.clients_round(2, &[0]);
        let g = FedGen { hidden: 16, noise_dim: 4, ..FedGen::default() }.generator(3, 3);
        let gp = f.server.generator.clone().unwrap();
        let labels: Vec<u32> = (0..64).map(|i| 1 + i % 2).collect();
        let score = |u: &Update| {
            let mut m = f.global.clone();
            m.axpy(1.0, &u.delta);
            let (wr, br, _) = m.layout().output_layer().unwrap();
            let sample = g.forward(&gp, &labels, &mut RngStream::new(5));
            let mut z = affine(&sample.features, &m.as_slice()[wr], &m.as_slice()[br], 3, 3, false);
            cross_entropy_grad(&mut z, &labels, 3)
        };
        assert!(score(&with[0]) < score(&without[0]), "{} vs {}", score(&with[0]), score(&without[0]));
        assert!(with[0].extras.get(COUNTS).is_some());
    }
}
