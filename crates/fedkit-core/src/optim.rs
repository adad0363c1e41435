//! Local optimisers on flat buffers (PyTorch semantics): SGD with momentum, weight decay and
//! Nesterov; Adam. Buffers (running statistics) are never touched.

use serde::{Deserialize, Serialize};

use crate::params::ParamKind;
use crate::{Error, Layout, Result};

/// Which local optimiser a client runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Sgd,
    Adam,
}

/// The `[client]` section: local training hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalTrain {
    /// Learning rate (eta).
    pub lr: f64,
    /// Local epochs (E).
    pub epochs: usize,
    /// Mini-batch size (B).
    pub batch_size: usize,
    /// `sgd` or `adam`.
    pub optimizer: OptimizerKind,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    /// L2 weight decay added to the gradient (PyTorch's `weight_decay`).
    pub weight_decay: f64,
    /// Nesterov momentum (SGD).
    pub nesterov: bool,
    /// Adam's beta1, beta2, eps.
    pub betas: (f64, f64),
    pub eps: f64,
    /// Stop after this many local steps (0 = no cap).
    pub max_steps: usize,
}

impl Default for LocalTrain {
    fn default() -> Self {
        LocalTrain {
            lr: 0.01,
            epochs: 1,
            batch_size: 10,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            betas: (0.9, 0.999),
            eps: 1e-8,
            max_steps: 0,
        }
    }
}

impl LocalTrain {
    /// Check ranges; errors name the `client.<field>` key.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(format!("client.{k}"), m.to_string()));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", "must be in [0, 1)");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight_decay", "must be >= 0");
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad("nesterov", "needs momentum > 0");
        }
        if !((0.0..1.0).contains(&self.betas.0) && (0.0..1.0).contains(&self.betas.1)) {
            return bad("betas", "both must be in [0, 1)");
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad("eps", "must be a positive number");
        }
        Ok(())
    }
}

/// Optimiser state for one local training run.
pub struct Optimizer {
    cfg: LocalTrain,
    trainable: Vec<std::ops::Range<usize>>,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Optimizer {
    /// A fresh optimiser for parameters of `layout`.
    pub fn new(cfg: &LocalTrain, layout: &Layout) -> Self {
        let trainable = layout.entries().iter().filter(|e| e.kind != ParamKind::Buffer).map(|e| e.range()).collect();
        Optimizer { cfg: cfg.clone(), trainable, m: Vec::new(), v: Vec::new(), t: 0 }
    }

    /// The moments and the step count, to keep an optimiser across runs (a server-side one).
    pub fn into_state(self) -> (Vec<f32>, Vec<f32>, i32) {
        (self.m, self.v, self.t)
    }
    /// Continue from [`Optimizer::into_state`]'s moments and step count.
    pub fn set_state(&mut self, m: Vec<f32>, v: Vec<f32>, t: i32) {
        (self.m, self.v, self.t) = (m, v, t);
    }
    /// One step: `w -= lr * direction(g)`, with `lr` possibly overridden (schedules).
    pub fn step(&mut self, w: &mut [f32], g: &[f32], lr: f32) {
        let c = &self.cfg;
        let (wd, mom) = (c.weight_decay as f32, c.momentum as f32);
        self.t += 1;
        match c.optimizer {
            OptimizerKind::Sgd if mom == 0.0 => {
                for r in &self.trainable {
                    for i in r.clone() {
                        w[i] -= lr * (g[i] + wd * w[i]);
                    }
                }
            }
            OptimizerKind::Sgd => {
                let first = self.m.is_empty();
                if first {
                    self.m = vec![0.0; w.len()];
                }
                for r in &self.trainable {
                    for i in r.clone() {
                        let d = g[i] + wd * w[i];
                        let b = if first { d } else { mom * self.m[i] + d };
                        self.m[i] = b;
                        let step = if c.nesterov { d + mom * b } else { b };
                        w[i] -= lr * step;
                    }
                }
            }
            OptimizerKind::Adam => {
                if self.m.is_empty() {
                    self.m = vec![0.0; w.len()];
                    self.v = vec![0.0; w.len()];
                }
                let (b1, b2) = (c.betas.0 as f32, c.betas.1 as f32);
                let eps = c.eps as f32;
                let bc1 = 1.0 - b1.powi(self.t);
                let bc2 = 1.0 - b2.powi(self.t);
                for r in &self.trainable {
                    for i in r.clone() {
                        let d = g[i] + wd * w[i];
                        self.m[i] = b1 * self.m[i] + (1.0 - b1) * d;
                        self.v[i] = b2 * self.v[i] + (1.0 - b2) * d * d;
                        let denom = (self.v[i] / bc2).sqrt() + eps;
                        w[i] -= lr * (self.m[i] / bc1) / denom;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(n: usize) -> Layout {
        let mut l = Layout::new();
        l.push("w", &[n], ParamKind::Weight);
        l.push("running_mean", &[1], ParamKind::Buffer);
        l
    }

    #[test]
    fn sgd_momentum_matches_pytorch_recurrence() {
        // PyTorch: b1 = g1; b2 = 0.9 b1 + g2; w -= lr * b.
        let cfg = LocalTrain { momentum: 0.9, lr: 0.1, ..Default::default() };
        let mut o = Optimizer::new(&cfg, &layout(1));
        let mut w = vec![1.0, 5.0];
        o.step(&mut w, &[1.0, 1.0], 0.1);
        assert!((w[0] - 0.9).abs() < 1e-7);
        o.step(&mut w, &[1.0, 1.0], 0.1);
        assert!((w[0] - (0.9 - 0.1 * 1.9)).abs() < 1e-6);
        assert_eq!(w[1], 5.0, "buffers are never stepped");
    }

    #[test]
    fn nesterov_and_weight_decay() {
        let cfg = LocalTrain { momentum: 0.5, nesterov: true, weight_decay: 0.1, lr: 1.0, ..Default::default() };
        let mut o = Optimizer::new(&cfg, &layout(1));
        let mut w = vec![2.0, 0.0];
        // d = 1 + 0.1*2 = 1.2; b = 1.2; step = 1.2 + 0.5*1.2 = 1.8
        o.step(&mut w, &[1.0, 0.0], 1.0);
        assert!((w[0] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_is_lr_sign() {
        let cfg = LocalTrain { optimizer: OptimizerKind::Adam, lr: 0.01, ..Default::default() };
        let mut o = Optimizer::new(&cfg, &layout(2));
        let mut w = vec![0.0, 0.0, 0.0];
        o.step(&mut w, &[3.0, -0.5, 0.0], 0.01);
        assert!((w[0] + 0.01).abs() < 1e-6 && (w[1] - 0.01).abs() < 1e-6);
    }
}
