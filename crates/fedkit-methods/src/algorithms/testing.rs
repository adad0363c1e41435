//! Fixtures for algorithm tests (compiled for tests only): a linear least-squares model, small
//! data sets and a round loop that runs an [`Algorithm`] as the engine does (broadcast, client
//! rule with each client's personal downlink, an optional client-side stage, commit, `mean` aggregation weighted by sample count or
//! uniform, server step on the accepted updates).

use std::sync::Arc;

use fedkit_core::{
    Algorithm, Batch, ClientCtx, ClientData, ClientId, Dataset, Extras, Head, Layout, LocalTrain, Metrics, Mode, Model,
    OutputGrads, Outputs, ParamKind, Params, Result, RngStream, RoundCtx, ServerView, Update,
};

use crate::aggregators::mean::weighted_mean;

/// Linear regression on the label value: prediction w.x + b, loss mean 0.5 (w.x + b - y)^2.
pub struct LinReg {
    layout: Arc<Layout>,
}

impl LinReg {
    /// The model for `features` inputs: entries `w` (weights) and `b` (bias).
    pub fn new(features: usize) -> Self {
        let mut l = Layout::new();
        l.push("w", &[features], ParamKind::Weight);
        l.push("b", &[1], ParamKind::Bias);
        LinReg { layout: Arc::new(l) }
    }

    /// Parameters with weights `w` and bias `b`.
    pub fn params(&self, w: &[f32], b: f32) -> Params {
        Params::from_vec(self.layout.clone(), w.iter().copied().chain([b]).collect()).unwrap()
    }

    fn residuals<'a>(&self, p: &'a Params, batch: &'a Batch) -> impl Iterator<Item = (&'a [f32], f32)> + 'a {
        let d = self.layout.total() - 1;
        let (w, b) = p.as_slice().split_at(d);
        batch
            .x
            .chunks(d)
            .zip(&batch.y)
            .map(move |(x, &y)| (x, x.iter().zip(w).map(|(x, w)| x * w).sum::<f32>() + b[0] - y as f32))
    }
}

impl Model for LinReg {
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(LinReg { layout: self.layout.clone() })
    }
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        let v = (0..self.layout.total()).map(|_| rng.gaussian(0.0, 0.5) as f32).collect();
        Params::from_vec(self.layout.clone(), v).unwrap()
    }
    fn loss_grad(&mut self, p: &mut Params, batch: &Batch, g: &mut Params, _: &mut RngStream) -> Result<f32> {
        let n = batch.len() as f32;
        let d = self.layout.total() - 1;
        g.as_mut_slice().fill(0.0);
        let mut loss = 0.0;
        for (x, r) in self.residuals(p, batch) {
            loss += 0.5 * r * r / n;
            let gs = g.as_mut_slice();
            gs[..d].iter_mut().zip(x).for_each(|(g, x)| *g += r * x / n);
            gs[d] += r / n;
        }
        Ok(loss)
    }
    fn eval_batch(&mut self, p: &Params, batch: &Batch) -> Result<(f64, usize)> {
        let mut out = (0.0, 0);
        for (_, r) in self.residuals(p, batch) {
            out.0 += 0.5 * (r * r) as f64;
            out.1 += (r.abs() < 0.5) as usize;
        }
        Ok(out)
    }
}

/// Softmax regression: logits W x + b (W: classes x features, row-major), features x; the
/// test model for methods that need logits (distillation). [`SoftmaxReg::input_major`] lays W
/// out as the registered models do, `[features, classes]`.
pub struct SoftmaxReg {
    layout: Arc<Layout>,
    features: usize,
    classes: usize,
    input_major: bool,
}

impl SoftmaxReg {
    /// The model for `features` inputs and `classes` classes: entries `w` and `b`.
    pub fn new(features: usize, classes: usize) -> Self {
        Self::with_layout(features, classes, false)
    }

    /// The same with `w` of shape `[features, classes]` (an output layer the registered
    /// models' way, which `Layout::output_layer` finds).
    pub fn input_major(features: usize, classes: usize) -> Self {
        Self::with_layout(features, classes, true)
    }

    fn with_layout(features: usize, classes: usize, input_major: bool) -> Self {
        let mut l = Layout::new();
        let shape = if input_major { [features, classes] } else { [classes, features] };
        l.push("w", &shape, ParamKind::Weight);
        l.push("b", &[classes], ParamKind::Bias);
        SoftmaxReg { layout: Arc::new(l), features, classes, input_major }
    }

    /// Where W[k][j] (class k, feature j) sits in the flat parameters.
    fn at(&self, k: usize, j: usize) -> usize {
        if self.input_major { j * self.classes + k } else { k * self.features + j }
    }

    /// Parameters with weights `w` in the layout's order (classes x features, or features x
    /// classes for [`SoftmaxReg::input_major`]) and biases `b`.
    pub fn params(&self, w: &[f32], b: &[f32]) -> Params {
        Params::from_vec(self.layout.clone(), w.iter().chain(b).copied().collect()).unwrap()
    }
}

impl Model for SoftmaxReg {
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(SoftmaxReg::with_layout(self.features, self.classes, self.input_major))
    }
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        let v = (0..self.layout.total()).map(|_| rng.gaussian(0.0, 0.5) as f32).collect();
        Params::from_vec(self.layout.clone(), v).unwrap()
    }
    fn forward(&mut self, p: &Params, batch: &Batch, _mode: Mode, out: &mut Outputs) -> Result<()> {
        let (d, c) = (self.features, self.classes);
        let (w, b) = p.as_slice().split_at(c * d);
        out.logits.clear();
        for x in batch.x.chunks(d) {
            out.logits.extend((0..c).map(|k| (0..d).map(|j| w[self.at(k, j)] * x[j]).sum::<f32>() + b[k]));
        }
        out.classes = c;
        out.features = batch.x.clone();
        out.feature_dim = d;
        Ok(())
    }
    fn vjp(
        &mut self,
        p: &mut Params,
        batch: &Batch,
        mode: Mode,
        head: &mut dyn Head,
        grad: Option<&mut Params>,
        _gx: Option<&mut Vec<f32>>,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        let mut out = Outputs::default();
        self.forward(p, batch, mode, &mut out)?;
        let mut g = OutputGrads::default();
        let value = head.value_grad(&out, batch, &mut g)?;
        if let Some(grad) = grad {
            let (d, c) = (self.features, self.classes);
            let gs = grad.as_mut_slice();
            gs.fill(0.0);
            for (x, gz) in batch.x.chunks(d).zip(g.logits.chunks(c)) {
                for k in 0..c {
                    for j in 0..d {
                        gs[self.at(k, j)] += gz[k] * x[j];
                    }
                    gs[c * d + k] += gz[k];
                }
            }
        }
        Ok(value)
    }
}

/// A data set of feature rows `x` and labels `y`.
pub fn dataset(x: &[Vec<f32>], y: &[u32]) -> Arc<Dataset> {
    let classes = y.iter().max().map_or(1, |m| *m as usize + 1);
    let d = Dataset {
        name: "test".into(),
        x: x.concat(),
        y: y.to_vec(),
        feature_shape: vec![x[0].len()],
        classes,
        users: None,
        targets: Vec::new(),
    };
    d.validate().unwrap();
    Arc::new(d)
}

/// Clients holding consecutive blocks of `data` of the given sizes.
pub fn split(data: &Arc<Dataset>, sizes: &[usize]) -> Vec<ClientData> {
    let mut start = 0u32;
    sizes
        .iter()
        .map(|&n| {
            let idx: Vec<u32> = (start..start + n as u32).collect();
            start += n as u32;
            ClientData { idx: idx.into(), ..ClientData::whole(data.clone()) }
        })
        .collect()
}

/// `n` samples of `d` features drawn from N(0, 1) scaled per feature by `scale`, with random
/// labels in 0..4 (for tests that only need heterogeneous data).
pub fn random_data(n: usize, scale: &[f32], seed: u64) -> Arc<Dataset> {
    let mut rng = RngStream::new(seed);
    let x: Vec<Vec<f32>> = (0..n).map(|_| scale.iter().map(|s| s * rng.normal() as f32).collect()).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.below(4) as u32).collect();
    dataset(&x, &y)
}

/// Two equal-size clients of two features with different curvatures and minimisers, running 10
/// full-batch gradient steps per round from zero: client drift makes FedAvg stop short of the
/// stationary point of sum_k L_k.
pub fn drifting_pair<A: Algorithm>(algo: A) -> Fed<A> {
    let (a, b) = (random_data(10, &[2.0, 0.3], 11), random_data(10, &[0.3, 2.0], 12));
    let x: Vec<Vec<f32>> =
        (0..10).map(|i| a.features(i).to_vec()).chain((0..10).map(|i| b.features(i).to_vec())).collect();
    let y: Vec<u32> = a.y.iter().chain(&b.y).copied().collect();
    let data = split(&dataset(&x, &y), &[10, 10]);
    let train = LocalTrain { lr: 0.05, epochs: 10, batch_size: 10, ..LocalTrain::default() };
    Fed::new(algo, 2, data, train, LinReg::new(2).params(&[0.0, 0.0], 0.0))
}

/// 24 random samples of two features split into clients of `sizes`, two local epochs of batch
/// `batch_size` at lr 0.05, from a fixed start: the personalised algorithms' test federation.
pub fn small_fed<A: Algorithm>(algo: A, sizes: &[usize], batch_size: usize) -> Fed<A> {
    let data = split(&random_data(24, &[1.5, 0.5], 5), sizes);
    let train = LocalTrain { lr: 0.05, epochs: 2, batch_size, ..LocalTrain::default() };
    Fed::new(algo, 2, data, train, LinReg::new(2).params(&[0.3, -0.2], 0.1))
}

/// A federation running algorithm `A` round by round, with typed states.
pub struct Fed<A: Algorithm, M: Model = LinReg> {
    pub algo: A,
    pub model: M,
    pub data: Vec<ClientData>,
    pub train: LocalTrain,
    pub global: Params,
    pub server: A::Server,
    pub clients: Vec<A::Client>,
    pub seed: u64,
    /// The aggregation: sample-weighted mean (default) or uniform.
    pub weighted: bool,
    /// A client-side stage run on each update before the algorithm's commit (e.g. clipping).
    pub stage: Option<fn(&mut Update)>,
}

impl<A: Algorithm> Fed<A> {
    /// A federation of `data.len()` clients with fresh states, starting from `global`.
    pub fn new(algo: A, features: usize, data: Vec<ClientData>, train: LocalTrain, global: Params) -> Self {
        Fed::with_model(algo, LinReg::new(features), data, train, global)
    }
}

impl<A: Algorithm, M: Model> Fed<A, M> {
    /// The same federation with another test model.
    pub fn with_model(algo: A, model: M, data: Vec<ClientData>, train: LocalTrain, global: Params) -> Self {
        let clients = data.iter().map(|_| A::Client::default()).collect();
        let server = A::Server::default();
        Fed { algo, model, data, train, global, server, clients, seed: 7, weighted: true, stage: None }
    }

    fn round_ctx<'a>(&self, round: u32, cohort: &'a [ClientId], global: &'a Params, bad: &'a [bool]) -> RoundCtx<'a> {
        RoundCtx { round, cohort, global, seed: self.seed, population: self.data.len(), malicious: bad, draws: &[] }
    }

    /// The broadcast of `round` and the updates of the clients `cohort` (states updated).
    pub fn clients_round(&mut self, round: u32, cohort: &[ClientId]) -> (Extras, Vec<Update>) {
        let bad = vec![false; self.data.len()];
        let b = self.algo.broadcast(&self.round_ctx(round, cohort, &self.global, &bad), &self.server);
        let ups = cohort
            .iter()
            .map(|&c| {
                let r = self.round_ctx(round, cohort, &self.global, &bad);
                let mine = self.algo.personal_downlink(&r, &self.server, c, &self.model).unwrap().map(|p| {
                    let mut e = b.clone();
                    e.0.extend(p.extras.0);
                    e
                });
                let cx = ClientCtx {
                    round,
                    client: c,
                    seed: self.seed,
                    global: &self.global,
                    broadcast: mine.as_ref().unwrap_or(&b),
                    train: &self.train,
                    epochs: self.train.epochs,
                    malicious: false,
                    step: &fedkit_core::PlainStep,
                    loss: &fedkit_core::CrossEntropyLoss,
                    train_hook: None,
                };
                let (d, st) = (&self.data[c as usize], &mut self.clients[c as usize]);
                let mut u = self.algo.client_update(&cx, &mut self.model, d, st).unwrap();
                if let Some(stage) = self.stage {
                    stage(&mut u);
                }
                self.algo.commit(&cx, &u, st).unwrap();
                u
            })
            .collect();
        (b, ups)
    }

    /// The server step of `round` on `ups` (aggregated by the mean); returns its metrics.
    pub fn server_round(&mut self, round: u32, ups: &[Update]) -> Metrics {
        let bad = vec![false; self.data.len()];
        let cohort: Vec<ClientId> = ups.iter().map(|u| u.client).collect();
        let agg = weighted_mean(ups, self.weighted).unwrap();
        let old = self.global.clone();
        let r = self.round_ctx(round, &cohort, &old, &bad);
        let mut view = ServerView {
            updates: ups,
            model: &mut self.model,
            clients: &self.data,
            unlabeled: None,
            architectures: &mut [],
        };
        self.algo.server_step(&r, &mut self.global, &mut self.server, &agg, &mut view).unwrap()
    }

    /// The norm of sum_k grad L_k at the global model (full-batch gradients): zero at a stationary
    /// point of the global loss.
    pub fn global_grad_norm(&mut self) -> f64 {
        let mut sum = self.global.zeros_like();
        for d in &self.data {
            let mut batch = Batch::default();
            batch.fill(d, &(0..d.len()).collect::<Vec<_>>(), &mut RngStream::new(0));
            let (mut w, mut g) = (self.global.clone(), self.global.zeros_like());
            self.model.loss_grad(&mut w, &batch, &mut g, &mut RngStream::new(0)).unwrap();
            sum.axpy(1.0, &g);
        }
        sum.l2()
    }

    /// One whole round with the clients `cohort`; returns the updates.
    pub fn round(&mut self, round: u32, cohort: &[ClientId]) -> Vec<Update> {
        let (_, ups) = self.clients_round(round, cohort);
        self.server_round(round, &ups);
        ups
    }
}

/// Assert `|got - want| <= tol * max(1, |want|)` elementwise.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let off = (g as f64 - w as f64).abs() / (w as f64).abs().max(1.0);
        assert!(off <= tol, "value {i}: got {g}, want {w} (off by {off:e}, tolerance {tol:e})\n{got:?}\n{want:?}");
    }
}
