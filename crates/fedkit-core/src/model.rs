//! The model trait: the only place a tensor backend appears (in its adapters), and the
//! backend-free local training loop and evaluation built on it.
//!
//! A `Model` is an architecture, not a set of weights: parameters are flat [`Params`] passed in,
//! so one model object serves every client a worker thread runs, and all FL arithmetic stays on
//! flat buffers. (DESIGN.md sketched `params()/set_params()`; passing params in removes two copies
//! per client and makes the training loop, optimisers and hooks backend-free.)

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::optim::{LocalTrain, Optimizer};
use crate::{Batch, ClientData, Layout, Params, Result, RngStream};

/// A model architecture over flat parameters.
pub trait Model: Send {
    /// A fresh copy of this architecture (one per worker thread).
    fn clone_box(&self) -> Box<dyn Model>;
    /// The named layout of this model's parameters.
    fn layout(&self) -> Arc<Layout>;
    /// Freshly initialised parameters (deterministic for `rng`).
    fn init(&self, rng: &mut RngStream) -> Params;
    /// Mean cross-entropy loss over `batch`; writes its gradient into `grad` (buffers: 0). May
    /// update buffer entries of `params` (running statistics), as a training-mode forward does.
    /// Training-time randomness (dropout, augmentation) must come from `rng`, never from state
    /// kept in the model object: one object serves many clients.
    fn loss_grad(&mut self, params: &mut Params, batch: &Batch, grad: &mut Params, rng: &mut RngStream) -> Result<f32>;
    /// Summed loss and number of correct top-1 predictions over `batch` (evaluation mode).
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)>;
}

/// A model's configuration, validated when the config is read; it becomes a [`Model`] once the
/// data's sample shape and class count are known.
pub trait ModelSpec: Send + Sync {
    /// The model for samples of `feature_shape` and `classes` classes, or a clear error when the
    /// architecture does not fit the data.
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>>;
}

/// Sees (and may change) each flat gradient before the optimiser step: FedProx, SCAFFOLD, FedDyn,
/// FedNAR and friends are hooks.
pub trait GradHook {
    /// `step` counts from 0 within one local training run; `w` are the current parameters.
    fn on_grad(&mut self, step: usize, w: &Params, g: &mut Params);
}

impl<F: FnMut(usize, &Params, &mut Params)> GradHook for F {
    fn on_grad(&mut self, step: usize, w: &Params, g: &mut Params) {
        self(step, w, g)
    }
}

/// A hook that does nothing (plain local SGD).
pub struct NoHook;
impl GradHook for NoHook {
    fn on_grad(&mut self, _: usize, _: &Params, _: &mut Params) {}
}

/// What a local training run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    /// Sample-weighted mean of the mini-batch losses.
    pub loss: f64,
    /// Optimiser steps taken (tau_i in FedNova's notation).
    pub steps: usize,
    /// Samples processed (counting repeats across epochs).
    pub samples: usize,
}

/// Run `epochs` epochs of mini-batch training on `data` from `params`, in place. Each epoch
/// visits a fresh permutation drawn from `rng`; the last batch of an epoch may be partial (as
/// PyTorch's DataLoader with `drop_last=False`).
pub fn local_train(
    model: &mut dyn Model,
    params: &mut Params,
    data: &ClientData,
    cfg: &LocalTrain,
    epochs: usize,
    hook: &mut dyn GradHook,
    rng: &mut RngStream,
) -> Result<TrainStats> {
    let mut opt = Optimizer::new(cfg, params.layout());
    let mut grad = params.zeros_like();
    let mut batch = Batch::default();
    let mut stats = TrainStats::default();
    let mut loss_sum = 0.0;
    let n = data.len();
    'outer: for _ in 0..epochs {
        let order = rng.permutation(n);
        for ids in order.chunks(cfg.batch_size.max(1)) {
            if cfg.max_steps > 0 && stats.steps >= cfg.max_steps {
                break 'outer;
            }
            batch.fill(data, ids, rng);
            let loss = model.loss_grad(params, &batch, &mut grad, rng)?;
            if !loss.is_finite() {
                return Err(crate::Error::Method(format!(
                    "local training diverged (loss {loss}) at step {}; lower client.lr",
                    stats.steps
                )));
            }
            hook.on_grad(stats.steps, params, &mut grad);
            opt.step(params.as_mut_slice(), grad.as_slice(), cfg.lr as f32);
            loss_sum += loss as f64 * ids.len() as f64;
            stats.steps += 1;
            stats.samples += ids.len();
        }
    }
    stats.loss = if stats.samples > 0 { loss_sum / stats.samples as f64 } else { 0.0 };
    Ok(stats)
}

/// Loss and accuracy of `params` on a data set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    pub loss_sum: f64,
    pub correct: usize,
    pub count: usize,
}

impl EvalStats {
    /// Mean loss.
    pub fn loss(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.loss_sum / self.count as f64 }
    }
    /// Top-1 accuracy.
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.correct as f64 / self.count as f64 }
    }
    /// Sum two partial evaluations.
    pub fn merge(self, o: EvalStats) -> EvalStats {
        EvalStats {
            loss_sum: self.loss_sum + o.loss_sum,
            correct: self.correct + o.correct,
            count: self.count + o.count,
        }
    }
}

/// Evaluate `params` on the samples `range` (positions in `data.idx`), in batches.
pub fn evaluate_range(
    model: &mut dyn Model,
    params: &Params,
    data: &ClientData,
    range: std::ops::Range<usize>,
    batch_size: usize,
) -> Result<EvalStats> {
    let mut batch = Batch::default();
    // Evaluation sees clean features: per-client feature noise is a training-time transform.
    let data = &ClientData { noise_std: 0.0, ..data.clone() };
    let mut rng = RngStream::new(0); // unused without noise
    let mut out = EvalStats::default();
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(batch_size.max(1)) {
        batch.fill(data, chunk, &mut rng);
        let (l, c) = model.eval_batch(params, &batch)?;
        out = out.merge(EvalStats { loss_sum: l, correct: c, count: chunk.len() });
    }
    Ok(out)
}
