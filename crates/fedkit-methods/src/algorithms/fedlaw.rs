//! FedLAW: Li et al., "Revisiting Weighted Aggregation in Federated Learning with Neural
//! Networks", ICML 2023 (Federated Learning with Learnable Aggregation Weights).
//!
//! Clients train as in FedAvg. The server does not fix the aggregation weights: it learns
//! weights lambda = softmax(theta) over the cohort's models w_k = w_t + delta_k and a global
//! shrinking factor gamma = gamma_init * exp(g) > 0, by minimising the loss on a small proxy set of
//! w(lambda, gamma) = gamma * sum_k lambda_k w_k with Adam, then sets w_{t+1} = w(lambda, gamma).
//! gamma < 1 shrinks the global model, acting as weight decay on it (the paper's "global weight
//! shrinking"); lambda reweights clients by how well their models do on the proxy data. The
//! gradients come from one backward pass of the model at w: with G = dL/dw,
//! dL/dlambda_k = gamma <G, w_k>, dL/dgamma = <G, sum_k lambda_k w_k>, chained through the
//! softmax (dL/dtheta_j = gamma lambda_j (<G, delta_j> - sum_k lambda_k <G, delta_k>)) and exp
//! (dL/dg = <G, w>). As in the authors' code (ZexiLee/ICML-2023-FedLAW, `server_funct = exp`),
//! theta starts at log(n_k / n) (the FedAvg weights) and g at 0 (gamma = gamma_init) each round;
//! Adam uses betas (0.5, 0.999); the learning rate halves every 20 server epochs; the model is in
//! training mode on the proxy batches. Running statistics (buffers) are averaged with lambda,
//! never shrunk. The cohort is the aggregator's accepted clients (after the cohort stages);
//! server stages that change the aggregate (`on_aggregate`) have no effect on FedLAW.
//!
//! Proxy set (simulation only): the paper's server holds a small class-balanced proxy data set
//! (2% of the test set in the authors' code); here it is `proxy_samples` samples drawn once from
//! the run seed from the pooled client training data, class-balanced as far as the data allow,
//! the same every round, without the clients' feature noise.
//!
//! With `learn_lambda = false` and `learn_gamma = false` the server does no learning:
//! w_{t+1} = gamma_init * (w_t + sum_k (n_k / n) delta_k), i.e. FedAvg for gamma_init = 1.
//!
//! Parameters:
//! - `proxy_samples` (default 200, >= 1): size of the server's proxy set.
//! - `server_epochs` (default 20, >= 1): epochs of Adam over the proxy set per round.
//! - `server_lr` (default 0.005, > 0): Adam's learning rate (the authors use 0.005, 0.01 on
//!   CIFAR-10).
//! - `server_batch_size` (default 128, >= 1): proxy batch size.
//! - `learn_gamma` (default true): learn the shrinking factor gamma.
//! - `learn_lambda` (default true): learn the aggregation weights lambda.
//! - `gamma_init` (default 1.0, > 0): gamma at the start of each round's learning (its value
//!   when `learn_gamma = false`).
//!
//! Metrics: `fedlaw_gamma` (the learned gamma), `fedlaw_lambda_max` (the largest lambda_k),
//! `fedlaw_proxy_loss` (mean proxy loss over the last server epoch).
//!
//! ```toml
//! [algorithm]
//! use = "fedlaw"
//! proxy_samples = 200
//! server_epochs = 20
//! server_lr = 0.005
//! server_batch_size = 128
//! learn_gamma = true
//! learn_lambda = true
//! gamma_init = 1.0
//! ```

use std::sync::Arc;

use fedkit_core::optim::Optimizer;
use fedkit_core::{
    Aggregate, Algorithm, Batch, ClientData, Dataset, Error, Layout, LocalTrain, Metrics, OptimizerKind, ParamKind,
    Params, Result, RngStream, RoundCtx, ServerView, Update,
};
use serde::{Deserialize, Serialize};

/// FedLAW.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedLaw {
    /// Size of the server's proxy set.
    pub proxy_samples: usize,
    /// Adam epochs over the proxy set per round.
    pub server_epochs: usize,
    /// Adam's learning rate.
    pub server_lr: f64,
    /// Proxy batch size.
    pub server_batch_size: usize,
    /// Learn the shrinking factor gamma.
    pub learn_gamma: bool,
    /// Learn the aggregation weights lambda.
    pub learn_lambda: bool,
    /// gamma at the start of each round (fixed when not learned).
    pub gamma_init: f64,
}

impl Default for FedLaw {
    fn default() -> Self {
        FedLaw {
            proxy_samples: 200,
            server_epochs: 20,
            server_lr: 0.005,
            server_batch_size: 128,
            learn_gamma: true,
            learn_lambda: true,
            gamma_init: 1.0,
        }
    }
}

impl FedLaw {
    /// Check the ranges.
    pub fn validated(self) -> Result<Self> {
        let at_least_one = [
            ("proxy_samples", self.proxy_samples),
            ("server_epochs", self.server_epochs),
            ("server_batch_size", self.server_batch_size),
        ];
        if let Some((key, v)) = at_least_one.into_iter().find(|(_, v)| *v == 0) {
            return Err(Error::config(key, format!("must be at least 1, got {v}")));
        }
        for (key, v) in [("server_lr", self.server_lr), ("gamma_init", self.gamma_init)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::config(key, format!("must be a finite number > 0, got {v}")));
            }
        }
        Ok(self)
    }

    /// Learn theta (`[theta_1..theta_K, g]`, lambda = softmax(theta_1..K), gamma = gamma_init exp(g)) by
    /// Adam, `steps` batches per epoch; `loss_grad(w, step, grad)` writes the proxy gradient at
    /// the mixed model `w` on that step's batch into `grad` and returns the loss. Returns the
    /// mean loss of the last epoch.
    fn learn(
        &self,
        global: &Params,
        deltas: &[&Params],
        theta: &mut [f32],
        steps: usize,
        loss_grad: &mut dyn FnMut(&mut Params, usize, &mut Params) -> Result<f32>,
    ) -> Result<f64> {
        let mut layout = Layout::new();
        layout.push("theta", &[theta.len()], ParamKind::Weight);
        let adam =
            LocalTrain { optimizer: OptimizerKind::Adam, betas: (0.5, 0.999), eps: 1e-8, ..LocalTrain::default() };
        let mut opt = Optimizer::new(&adam, &layout);
        let mut grad = global.zeros_like();
        let mut last_epoch_loss = 0.0;
        for epoch in 0..self.server_epochs {
            let lr = self.server_lr * 0.5f64.powi((epoch / 20) as i32);
            let mut loss_sum = 0.0;
            for step in 0..steps {
                let (lambda, gamma) = weights(theta, self.gamma_init);
                let mut w = mix(global, deltas, &lambda, gamma);
                let loss = loss_grad(&mut w, step, &mut grad)?;
                if !loss.is_finite() {
                    return Err(Error::Method(format!("fedlaw: proxy loss {loss} in server epoch {epoch}")));
                }
                loss_sum += loss as f64;
                let mut g = theta_grad(deltas, &lambda, gamma, &grad, &w);
                if !self.learn_lambda {
                    g[..deltas.len()].fill(0.0);
                }
                if !self.learn_gamma {
                    g[deltas.len()] = 0.0;
                }
                opt.step(theta, &g, lr as f32);
            }
            last_epoch_loss = loss_sum / steps.max(1) as f64;
        }
        Ok(last_epoch_loss)
    }
}

/// lambda = softmax(theta_1..K) and gamma = gamma_init exp(g) from `theta = [theta_1..theta_K, g]`.
fn weights(theta: &[f32], gamma_init: f64) -> (Vec<f64>, f64) {
    let (t, g) = theta.split_at(theta.len() - 1);
    let max = t.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let e: Vec<f64> = t.iter().map(|&v| (v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    (e.iter().map(|v| v / s).collect(), gamma_init * (g[0] as f64).exp())
}

/// gamma * (global + sum_k lambda_k delta_k) on the trained entries and
/// global + sum_k lambda_k delta_k on buffers (running statistics are averaged, not shrunk);
/// with sum_k lambda_k = 1 this is gamma * sum_k lambda_k w_k. Sums in f64, in `deltas` order.
fn mix(global: &Params, deltas: &[&Params], lambda: &[f64], gamma: f64) -> Params {
    let mut acc = vec![0.0f64; global.len()];
    for (d, l) in deltas.iter().zip(lambda) {
        acc.iter_mut().zip(d.as_slice()).for_each(|(a, v)| *a += l * *v as f64);
    }
    let mut w = global.clone();
    let gamma = gamma as f32;
    for e in global.layout().entries() {
        let r = e.range();
        let shrink = if e.kind == ParamKind::Buffer { 1.0 } else { gamma };
        w.as_mut_slice()[r.clone()].iter_mut().zip(&acc[r]).for_each(|(w, a)| *w = shrink * (*w + *a as f32));
    }
    w
}

/// The gradient of the proxy loss with respect to `[theta_1..theta_K, g]`, from its gradient `grad`
/// at the mixed model `w` (buffers: 0): gamma lambda_j (<G, delta_j> - sum_k lambda_k <G, delta_k>)
/// and gamma dL/dgamma = <G, w>.
fn theta_grad(deltas: &[&Params], lambda: &[f64], gamma: f64, grad: &Params, w: &Params) -> Vec<f32> {
    let s: Vec<f64> = deltas.iter().map(|d| grad.dot(d)).collect();
    let mean: f64 = s.iter().zip(lambda).map(|(s, l)| s * l).sum();
    let mut g: Vec<f32> = s.iter().zip(lambda).map(|(s, l)| (gamma * l * (s - mean)) as f32).collect();
    g.push(grad.dot(w) as f32);
    g
}

/// FedLAW's proxy set: `samples` samples of the pooled client data (without feature noise),
/// class-balanced as far as the data allow, drawn from the run seed alone (the same every round).
fn proxy_set(seed: u64, clients: &[ClientData], samples: usize) -> Result<ClientData> {
    let first = clients
        .first()
        .ok_or_else(|| Error::Method("fedlaw needs the clients' data for its proxy set (simulation only)".into()))?;
    let (shape, classes) = (first.data.feature_shape.clone(), first.data.classes);
    if let Some(c) = clients.iter().find(|c| {
        c.data.feature_shape != shape || c.data.classes != classes || c.data.positions() != first.data.positions()
    }) {
        return Err(Error::Data(format!("fedlaw: client data sets differ in shape ({})", c.data.name)));
    }
    // Pooled position p is sample idx[p - offsets[c]] of client c, for offsets[c] <= p < offsets[c + 1].
    let offsets: Vec<usize> = std::iter::once(0)
        .chain(clients.iter().scan(0, |s, c| {
            *s += c.len();
            Some(*s)
        }))
        .collect();
    let total = offsets[clients.len()];
    let sample_of = |p: usize| {
        let c = offsets.partition_point(|&o| o <= p) - 1;
        (&clients[c].data, clients[c].idx[p - offsets[c]] as usize)
    };
    let order = RngStream::derive(seed, "fedlaw.proxy", 0, 0).permutation(total);
    let mut quota: Vec<usize> = (0..classes).map(|c| samples / classes + usize::from(c < samples % classes)).collect();
    let mut taken = vec![false; total];
    let mut picked = Vec::with_capacity(samples.min(total));
    for &p in &order {
        let (d, i) = sample_of(p);
        let y = d.y[i] as usize;
        if picked.len() < samples && quota[y] > 0 {
            quota[y] -= 1;
            taken[p] = true;
            picked.push(p);
        }
    }
    // Classes short of samples: fill up with the others, in the same order.
    for &p in &order {
        if picked.len() < samples && !taken[p] {
            picked.push(p);
        }
    }
    let (mut x, mut y, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for &p in &picked {
        let (d, i) = sample_of(p);
        let t = d.positions();
        x.extend_from_slice(d.features(i));
        y.push(d.y[i]);
        targets.extend_from_slice(&d.targets[i * t..(i + 1) * t]);
    }
    let data = Dataset { name: "fedlaw proxy".into(), x, y, feature_shape: shape, classes, users: None, targets };
    Ok(ClientData::whole(Arc::new(data)))
}

impl Algorithm for FedLaw {
    type Client = ();
    type Server = ();
    fn reads_updates(&self) -> bool {
        true
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut (),
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        let mut cohort: Vec<&Update> = view.updates.iter().filter(|u| agg.accepted.contains(&u.client)).collect();
        if cohort.is_empty() {
            return self.server_update(r, w, s, agg);
        }
        cohort.sort_by_key(|u| u.client);
        let deltas: Vec<&Params> = cohort.iter().map(|u| &u.delta).collect();
        let total: f64 = cohort.iter().map(|u| u.weight.max(0.0) as f64).sum();
        let share = |u: &Update| if total > 0.0 { u.weight.max(0.0) as f64 / total } else { 1.0 / cohort.len() as f64 };
        let mut theta: Vec<f32> = cohort.iter().map(|u| share(u).ln() as f32).collect();
        theta.push(0.0);
        let global = w.clone();
        let mut metrics = Metrics::new();
        if self.learn_gamma || self.learn_lambda {
            let proxy = proxy_set(r.seed, view.clients, self.proxy_samples)?;
            let (n, bs) = (proxy.len(), self.server_batch_size);
            let (mut order_rng, mut model_rng) = (r.rng("fedlaw.batches"), r.rng("fedlaw.model"));
            let (mut order, mut batch) = (Vec::new(), Batch::default());
            let model = &mut *view.model;
            let mut proxy_grad = |w: &mut Params, step: usize, grad: &mut Params| -> Result<f32> {
                if step == 0 {
                    order = order_rng.permutation(n);
                }
                batch.fill(&proxy, &order[step * bs..n.min((step + 1) * bs)], &mut order_rng);
                model.loss_grad(w, &batch, grad, &mut model_rng)
            };
            let loss = self.learn(&global, &deltas, &mut theta, n.div_ceil(bs), &mut proxy_grad)?;
            metrics.insert("fedlaw_proxy_loss".into(), loss);
        }
        let (lambda, gamma) = weights(&theta, self.gamma_init);
        *w = mix(&global, &deltas, &lambda, gamma);
        metrics.insert("fedlaw_gamma".into(), gamma);
        metrics.insert("fedlaw_lambda_max".into(), lambda.iter().fold(0.0, |m: f64, &l| m.max(l)));
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::{Extras, Model};

    /// A layout with a weight entry of `n` values and a buffer of 2.
    fn layout(n: usize) -> Arc<Layout> {
        let mut l = Layout::new();
        l.push("w", &[n], ParamKind::Weight);
        l.push("running_mean", &[2], ParamKind::Buffer);
        Arc::new(l)
    }

    fn params(l: &Arc<Layout>, v: Vec<f32>) -> Params {
        Params::from_vec(l.clone(), v).unwrap()
    }

    /// A model whose loss is 0.5 ||w - target||^2 on the weights whatever the batch (buffers
    /// ignored): the proxy loss of a client's model is its distance to `target`.
    #[derive(Clone)]
    struct Quadratic {
        target: Params,
    }

    impl Model for Quadratic {
        fn clone_box(&self) -> Box<dyn Model> {
            Box::new(self.clone())
        }
        fn layout(&self) -> Arc<Layout> {
            self.target.layout().clone()
        }
        fn init(&self, _rng: &mut RngStream) -> Params {
            self.target.zeros_like()
        }
        fn loss_grad(&mut self, p: &mut Params, _b: &Batch, g: &mut Params, _r: &mut RngStream) -> Result<f32> {
            let mut d = p.sub(&self.target);
            let b = p.layout().get("running_mean").map(|e| e.range()).unwrap_or(0..0);
            d.as_mut_slice()[b].fill(0.0);
            *g = d.clone();
            Ok((0.5 * d.dot(&d)) as f32)
        }
        fn eval_batch(&mut self, _p: &Params, _b: &Batch) -> Result<(f64, usize)> {
            Err(Error::Method("not used".into()))
        }
    }

    /// Clients' data: 30 samples of 1 feature, 3 classes, dealt to 2 clients.
    fn clients() -> Vec<ClientData> {
        let y: Vec<u32> = (0..30).map(|i| i % 3).collect();
        let x = (0..30).map(|i| i as f32).collect();
        let d = Arc::new(Dataset {
            name: "toy".into(),
            x,
            y,
            feature_shape: vec![1],
            classes: 3,
            users: None,
            targets: Vec::new(),
        });
        (0..2).map(|k| ClientData { idx: (k..30).step_by(2).collect(), ..ClientData::whole(d.clone()) }).collect()
    }

    /// Run FedLAW's server step on `global` with client deltas `deltas` (weights `weights`) and
    /// the quadratic model around `target`; returns the new global model and the metrics.
    fn step(f: &FedLaw, global: &Params, deltas: &[Vec<f32>], weights: &[f32], target: &Params) -> (Params, Metrics) {
        let ups: Vec<Update> = deltas
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(k, (d, &weight))| Update {
                client: k as u32,
                delta: params(global.layout(), d.clone()),
                weight,
                extras: Extras::default(),
                metrics: Metrics::new(),
            })
            .collect();
        let agg = crate::aggregators::mean::weighted_mean(&ups, true).unwrap();
        let ids: Vec<u32> = (0..ups.len() as u32).collect();
        let r = RoundCtx { round: 1, cohort: &ids, global, seed: 5, population: 2, malicious: &[false; 2], draws: &[] };
        let (mut model, data) = (Quadratic { target: target.clone() }, clients());
        let mut view =
            ServerView { updates: &ups, model: &mut model, clients: &data, unlabeled: None, architectures: &mut [] };
        let mut w = global.clone();
        let m = f.server_step(&r, &mut w, &mut (), &agg, &mut view).unwrap();
        (w, m)
    }

    const FIXED: FedLaw = FedLaw {
        proxy_samples: 200,
        server_epochs: 20,
        server_lr: 0.005,
        server_batch_size: 128,
        learn_gamma: false,
        learn_lambda: false,
        gamma_init: 0.9,
    };

    // A shrinking factor gamma < 1 is weight decay on the global model: with nothing learned,
    // gamma = 0.9 and every client returning a zero delta, the new global model is exactly
    // 0.9 w on the weights, and the buffers (running statistics) are not shrunk.
    #[test]
    fn shrinking_factor_is_weight_decay() {
        let l = layout(4);
        let global = params(&l, vec![1.0, -2.0, 0.3, 7.5, 0.25, 4.0]);
        let (w, m) = step(&FIXED, &global, &[vec![0.0; 6], vec![0.0; 6], vec![0.0; 6]], &[1.0, 5.0, 2.0], &global);
        let want: Vec<f32> = global.as_slice()[..4].iter().map(|v| 0.9f32 * v).collect();
        assert_eq!(&w.as_slice()[..4], &want[..]);
        assert_eq!(&w.as_slice()[4..], &global.as_slice()[4..], "buffers are not shrunk");
        assert_eq!(m.get("fedlaw_gamma").copied(), Some(0.9));
    }

    // With uniform lambda (equal client weights) and gamma = 1, FedLAW is FedAvg: the global
    // model moves by the uniform mean of the deltas, buffers included.
    #[test]
    fn uniform_lambda_and_unit_gamma_is_fedavg() {
        let l = layout(4);
        let global = params(&l, vec![1.0, -2.0, 0.3, 7.5, 0.25, 4.0]);
        let deltas: Vec<Vec<f32>> = (0..3).map(|k| (0..6).map(|i| ((k * 7 + i) % 5) as f32 - 1.7).collect()).collect();
        let (w, m) = step(&FedLaw { gamma_init: 1.0, ..FIXED }, &global, &deltas, &[2.0; 3], &global);
        for i in 0..6 {
            let mean = deltas.iter().map(|d| d[i] as f64).sum::<f64>() / 3.0;
            let want = global.as_slice()[i] as f64 + mean;
            assert!((w.as_slice()[i] as f64 - want).abs() < 1e-6, "value {i}: {} vs {want}", w.as_slice()[i]);
        }
        assert!((m["fedlaw_lambda_max"] - 1.0 / 3.0).abs() < 1e-12);
    }

    // The theta gradient (through the softmax and gamma = exp(g)) matches central finite
    // differences of the loss of the mixed model.
    #[test]
    fn theta_gradient_matches_finite_differences() {
        let l = layout(3);
        let global = params(&l, vec![0.5, -1.0, 2.0, 0.0, 0.0]);
        let target = params(&l, vec![1.0, 0.0, 1.0, 0.0, 0.0]);
        let ds: Vec<Params> = [[0.3, 0.9, -1.0, 1.0, 2.0], [-0.4, 0.2, 0.5, 3.0, -1.0], [0.1, 1.3, -0.2, 0.0, 0.5]]
            .iter()
            .map(|d| params(&l, d.to_vec()))
            .collect();
        let deltas: Vec<&Params> = ds.iter().collect();
        let mut model = Quadratic { target };
        let loss = |model: &mut Quadratic, theta: &[f32]| -> (f64, Vec<f32>) {
            let (lambda, gamma) = weights(theta, 0.8);
            let w = mix(&global, &deltas, &lambda, gamma);
            let mut g = w.zeros_like();
            let loss = model.loss_grad(&mut w.clone(), &Batch::default(), &mut g, &mut RngStream::new(0)).unwrap();
            (loss as f64, theta_grad(&deltas, &lambda, gamma, &g, &w))
        };
        let theta = [0.2f32, -0.5, 0.1, -0.15];
        let (_, g) = loss(&mut model, &theta);
        for j in 0..theta.len() {
            let h = 1e-2f32;
            let (mut hi, mut lo) = (theta, theta);
            hi[j] += h;
            lo[j] -= h;
            let fd = (loss(&mut model, &hi).0 - loss(&mut model, &lo).0) / (2.0 * h as f64);
            assert!((g[j] as f64 - fd).abs() < 1e-3 * (1.0 + fd.abs()), "theta[{j}]: {} vs {fd}", g[j]);
        }
    }

    // The learned weights move toward the client whose model has the lower proxy loss: client 0's
    // model is the proxy optimum, client 1's is far from it; starting from equal weights, lambda_0
    // grows, and the new global model has a lower proxy loss than FedAvg's mean.
    #[test]
    fn learned_weights_favour_the_better_client() {
        let l = layout(3);
        let global = params(&l, vec![0.0; 5]);
        let target = params(&l, vec![1.0, 2.0, -1.0, 0.0, 0.0]);
        let deltas = vec![vec![1.0, 2.0, -1.0, 0.0, 0.0], vec![-3.0, 4.0, 2.0, 0.0, 0.0]];
        let learn = FedLaw { learn_gamma: true, learn_lambda: true, gamma_init: 1.0, server_lr: 0.05, ..FIXED };
        let (w, m) = step(&learn, &global, &deltas, &[1.0, 1.0], &target);
        assert!(m["fedlaw_lambda_max"] > 0.6, "lambda_max {}", m["fedlaw_lambda_max"]);
        let dist = |p: &Params| p.sub(&target).l2();
        let (avg, _) = step(&FedLaw { gamma_init: 1.0, ..FIXED }, &global, &deltas, &[1.0, 1.0], &target);
        assert!(dist(&w) < 0.8 * dist(&avg), "fedlaw {} vs fedavg {}", dist(&w), dist(&avg));
        // lambda_max belongs to client 0: the result is closer to its model than to client 1's.
        let w0 = params(&l, deltas[0].clone());
        let w1 = params(&l, deltas[1].clone());
        assert!(w.sub(&w0).l2() < w.sub(&w1).l2());
    }

    // The proxy set is class-balanced, of the requested size, the same for every call with the
    // same seed, and made of the clients' samples.
    #[test]
    fn proxy_set_is_balanced_and_fixed() {
        let c = clients();
        let p = proxy_set(5, &c, 12).unwrap();
        assert_eq!(p.len(), 12);
        assert_eq!(p.data.label_histogram(&p.idx), vec![4, 4, 4]);
        let again = proxy_set(5, &c, 12).unwrap();
        assert_eq!(p.data.x, again.data.x);
        assert_ne!(p.data.x, proxy_set(6, &c, 12).unwrap().data.x);
        assert!(p.data.x.iter().zip(&p.data.y).all(|(x, y)| *x as u32 % 3 == *y));
        assert_eq!(proxy_set(5, &c, 100).unwrap().len(), 30, "capped at the pooled size");
        assert!(proxy_set(5, &[], 10).is_err());
    }
}
