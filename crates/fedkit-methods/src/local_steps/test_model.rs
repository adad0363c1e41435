//! A tiny model for the local step rules' tests: least squares, L(w) = mean_i (w . x_i + b - t_i)^2
//! / 2 with targets t_i = y_i, whose gradients (in the parameters and in the inputs) and Hessian
//! are known in closed form. A buffer entry counts the training-mode forward passes (standing in
//! for running statistics), and every forward pass records the parameters it saw.

use std::sync::Arc;

use fedkit_core::{Batch, Layout, Model, ParamKind, Params, Result, RngStream, StepCtx};

/// Least squares over `d` features: entries `w` [d], `b` [1], `count` [1] (a buffer).
#[derive(Clone)]
pub struct LeastSquares {
    layout: Arc<Layout>,
    /// The parameters at each `loss_grad` call, in order.
    pub seen: Vec<Vec<f32>>,
}

impl LeastSquares {
    pub fn new(d: usize) -> Self {
        let mut l = Layout::new();
        l.push("w", &[d], ParamKind::Weight);
        l.push("b", &[1], ParamKind::Bias);
        l.push("count", &[1], ParamKind::Buffer);
        LeastSquares { layout: Arc::new(l), seen: Vec::new() }
    }
    fn d(&self) -> usize {
        self.layout.total() - 2
    }
    /// The residuals w . x_i + b - t_i, in f64.
    pub fn residuals(&self, p: &[f32], b: &Batch) -> Vec<f64> {
        let d = self.d();
        let dot = |x: &[f32]| x.iter().zip(p).map(|(a, w)| *a as f64 * *w as f64).sum::<f64>();
        b.x.chunks(d).zip(&b.y).map(|(x, &t)| dot(x) + p[d] as f64 - t as f64).collect()
    }
    /// The mean loss, in f64.
    pub fn loss(&self, p: &[f32], b: &Batch) -> f64 {
        let r = self.residuals(p, b);
        r.iter().map(|r| 0.5 * r * r).sum::<f64>() / r.len() as f64
    }
    /// The gradient of the mean loss in (w, b), in f64 (no buffer entry).
    pub fn grad(&self, p: &[f32], b: &Batch) -> Vec<f64> {
        let (d, r) = (self.d(), self.residuals(p, b));
        let mut g = vec![0.0; d + 1];
        for (x, r) in b.x.chunks(d).zip(&r) {
            x.iter().chain([&1.0]).zip(&mut g).for_each(|(a, gj)| *gj += r * *a as f64 / b.len() as f64);
        }
        g
    }
    /// H v for the (constant) Hessian mean_i [x_i; 1][x_i; 1]' in (w, b).
    pub fn hessian_times(&self, b: &Batch, v: &[f64]) -> Vec<f64> {
        let d = self.d();
        let mut out = vec![0.0; d + 1];
        for x in b.x.chunks(d) {
            let row: Vec<f64> = x.iter().map(|&a| a as f64).chain([1.0]).collect();
            let s: f64 = row.iter().zip(v).map(|(a, b)| a * b).sum();
            out.iter_mut().zip(&row).for_each(|(o, a)| *o += s * a / b.len() as f64);
        }
        out
    }
}

impl Model for LeastSquares {
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(self.clone())
    }
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, _: &mut RngStream) -> Params {
        Params::zeros(self.layout.clone())
    }
    fn loss_grad(&mut self, p: &mut Params, b: &Batch, g: &mut Params, _: &mut RngStream) -> Result<f32> {
        self.seen.push(p.as_slice().to_vec());
        let (d, n) = (self.d(), b.len() as f32);
        let gs = g.as_mut_slice();
        gs.fill(0.0);
        let mut loss = 0.0;
        for (x, &t) in b.x.chunks(d).zip(&b.y) {
            let w = p.as_slice();
            let r = x.iter().zip(w).map(|(a, w)| a * w).sum::<f32>() + w[d] - t as f32;
            loss += 0.5 * r * r / n;
            gs[..d].iter_mut().zip(x).for_each(|(gj, xj)| *gj += r * xj / n);
            gs[d] += r / n;
        }
        p.as_mut_slice()[d + 1] += 1.0;
        Ok(loss)
    }
    fn eval_batch(&mut self, p: &Params, b: &Batch) -> Result<(f64, usize)> {
        Ok((self.loss(p.as_slice(), b) * b.len() as f64, 0))
    }
    /// d loss / d x_i = r_i w / n.
    fn input_grad(&mut self, p: &Params, b: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
        let (d, n, w) = (self.d(), b.len() as f32, p.as_slice());
        gx.clear();
        let mut loss = 0.0;
        for (x, &t) in b.x.chunks(d).zip(&b.y) {
            let r = x.iter().zip(w).map(|(a, w)| a * w).sum::<f32>() + w[d] - t as f32;
            loss += 0.5 * r * r / n;
            gx.extend(w[..d].iter().map(|wj| r * wj / n));
        }
        Ok(loss)
    }
}

/// Parameters of `m` with weights `w`, bias `b` and a zero count.
pub fn params(m: &LeastSquares, w: &[f32], b: f32) -> Params {
    let v: Vec<f32> = w.iter().copied().chain([b, 0.0]).collect();
    Params::from_vec(m.layout(), v).expect("values fit the layout")
}

/// A batch of `n` samples of `d` features drawn from N(0, 1), targets in 0..3, from `seed`.
pub fn batch(n: usize, d: usize, seed: u64) -> Batch {
    let mut rng = RngStream::new(seed);
    Batch {
        x: (0..n * d).map(|_| rng.normal() as f32).collect(),
        y: (0..n).map(|_| rng.below(3) as u32).collect(),
        feature_shape: vec![d],
        classes: 3,
        targets: Vec::new(),
    }
}

/// A step context for `round` with learning rate `lr` and weight decay `weight_decay`.
pub fn step_ctx(round: u32, lr: f32, weight_decay: f32) -> StepCtx {
    StepCtx { round, step: 0, lr, weight_decay }
}
