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

/// Which forward pass a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Evaluation: normalisation layers use their running statistics; nothing is written.
    Eval,
    /// Training: batch statistics, and new running statistics written into the `Buffer` entries
    /// of the parameters (as PyTorch's `train()` forward does).
    Train,
    /// Training-mode statistics without writing the running statistics (input gradients for
    /// adversarial steps, Hessian-vector products, attacks that probe a model).
    TrainFrozen,
}

/// What a forward pass produced for a batch of n samples: the logits `[n, classes]` and the
/// features `[n, feature_dim]`, the activations the output layer reads (the penultimate
/// layer: the input itself for `logreg`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    pub logits: Vec<f32>,
    pub classes: usize,
    pub features: Vec<f32>,
    pub feature_dim: usize,
}

impl Outputs {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.logits.len() / self.classes.max(1)
    }
    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.logits.is_empty()
    }
    /// The logits of sample `i`.
    pub fn logits_of(&self, i: usize) -> &[f32] {
        &self.logits[i * self.classes..(i + 1) * self.classes]
    }
    /// The features of sample `i`.
    pub fn features_of(&self, i: usize) -> &[f32] {
        &self.features[i * self.feature_dim..(i + 1) * self.feature_dim]
    }
}

/// One layer's activations for a batch, as [`Model::activations`] returns them: `values` holds
/// `rows x dim` values row-major (rows is the batch size, or batch x T positions for a sequence
/// model on per-position data).
#[derive(Clone, Debug, PartialEq)]
pub struct Activation {
    /// The layer, named after its parameters (`fc1`, `conv2`) or `features` / `logits`.
    pub name: String,
    pub dim: usize,
    pub values: Vec<f32>,
}

impl Activation {
    /// Rows (samples or positions).
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim.max(1)
    }
}

/// The two activations every model has, from its [`Outputs`]: `features` (the output layer's
/// input) and `logits`.
pub fn output_activations(out: Outputs) -> Vec<Activation> {
    vec![
        Activation { name: "features".into(), dim: out.feature_dim, values: out.features },
        Activation { name: "logits".into(), dim: out.classes, values: out.logits },
    ]
}

/// The gradient of a scalar objective with respect to a batch's [`Outputs`]: `logits` has the
/// logits' length; `features` is either empty (no dependence on the features) or has theirs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputGrads {
    pub logits: Vec<f32>,
    pub features: Vec<f32>,
}

/// A loss on a batch's outputs: its value and its gradient with respect to the outputs, which
/// [`Model::vjp`] back-propagates. Cross-entropy, logit adjustment, LDAM, MMD between features,
/// distillation against teacher logits, or a plain vector (then `vjp` is a vector-Jacobian
/// product) are heads.
pub trait Head {
    /// The objective's value on `out` (for `batch`), and its gradient in `g` (resized by the
    /// head).
    fn value_grad(&mut self, out: &Outputs, batch: &Batch, g: &mut OutputGrads) -> Result<f32>;
}

impl<F: FnMut(&Outputs, &Batch, &mut OutputGrads) -> Result<f32>> Head for F {
    fn value_grad(&mut self, out: &Outputs, batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        self(out, batch, g)
    }
}

/// The mean softmax cross-entropy of the logits against `batch.labels()` (the per-sample labels,
/// or every position's target of sequence data), the models' default loss. Its gradient is
/// `(softmax(z_i) - onehot(y_i)) / n`, computed in the same order as the native models' fused
/// path (so both give the same bits).
pub struct CrossEntropy;

impl Head for CrossEntropy {
    fn value_grad(&mut self, out: &Outputs, batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        let (c, y) = (out.classes, batch.labels());
        check_targets(batch, out)?;
        g.logits.clear();
        g.logits.extend_from_slice(&out.logits);
        g.features.clear();
        let (loss, _) = softmax_cross_entropy(&mut g.logits, y, c);
        logits_to_grad(&mut g.logits, y, c);
        Ok((loss / y.len().max(1) as f64) as f32)
    }
}

/// Forward `model` in `mode` and run `head` on the outputs: the head's value, the outputs and
/// the head's gradient, checked to have the outputs' shapes. The first half of every model's
/// [`Model::vjp`].
pub fn forward_head(
    model: &mut dyn Model,
    params: &Params,
    batch: &Batch,
    mode: Mode,
    head: &mut dyn Head,
) -> Result<(f32, Outputs, OutputGrads)> {
    let mut out = Outputs::default();
    model.forward(params, batch, mode, &mut out)?;
    let mut g = OutputGrads::default();
    let value = head.value_grad(&out, batch, &mut g)?;
    check_output_grads(&out, &g)?;
    Ok((value, out, g))
}

/// An error when a head's gradient does not have the shape of the outputs it was computed on.
pub fn check_output_grads(out: &Outputs, g: &OutputGrads) -> Result<()> {
    if g.logits.len() != out.logits.len() || !(g.features.is_empty() || g.features.len() == out.features.len()) {
        return Err(crate::Error::Shape(format!(
            "a loss head returned gradients of {} logits and {} features for outputs of {} and {}",
            g.logits.len(),
            g.features.len(),
            out.logits.len(),
            out.features.len()
        )));
    }
    Ok(())
}

/// An error when a label of `batch` is not below `classes`, or when the batch is sequence data
/// (per-position targets): `what` (e.g. "the focal loss") reads one label per sample.
pub fn check_labels(batch: &Batch, classes: usize, what: &str) -> Result<()> {
    if batch.positions() > 0 {
        return Err(crate::Error::Method(format!(
            "{what} needs one label per sample; the data has a target per position (sequence data)"
        )));
    }
    in_range(&batch.y, classes)
}

/// An error unless `out` has one row of logits per entry of `batch.labels()` and every label is
/// below the number of classes: the check of the cross-entropy, which also serves sequence data
/// (one row per position).
pub fn check_targets(batch: &Batch, out: &Outputs) -> Result<()> {
    let y = batch.labels();
    if out.len() != y.len() {
        return Err(crate::Error::Shape(format!(
            "the model gave {} rows of logits for {} targets ({} samples)",
            out.len(),
            y.len(),
            batch.len()
        )));
    }
    in_range(y, out.classes)
}

fn in_range(y: &[u32], classes: usize) -> Result<()> {
    match y.iter().find(|&&y| y as usize >= classes) {
        Some(y) => Err(crate::Error::Shape(format!("label {y} out of range for {classes} classes"))),
        None => Ok(()),
    }
}

/// Softmax cross-entropy of each row of `z` (`[n, classes]`) against `y`, in place: `z` becomes
/// the softmax probabilities; returns the summed loss and the number of correct top-1
/// predictions. Stable for large logit gaps.
pub fn softmax_cross_entropy(z: &mut [f32], y: &[u32], classes: usize) -> (f64, usize) {
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (row, &label) in z.chunks_exact_mut(classes).zip(y) {
        let label = label as usize;
        let (arg, max) =
            row.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (k, &v)| if v > a.1 { (k, v) } else { a });
        correct += (arg == label) as usize;
        // -log softmax(z)_y = log sum exp(z - max) - (z_y - max)
        let zy = row[label] - max;
        let mut s = 0.0f32;
        row.iter_mut().for_each(|v| {
            *v = (*v - max).exp();
            s += *v;
        });
        loss += (s.ln() - zy) as f64;
        row.iter_mut().for_each(|v| *v /= s);
    }
    (loss, correct)
}

/// After [`softmax_cross_entropy`]: the probabilities become the gradient of the mean loss with
/// respect to the logits, `(p_i - onehot(y_i)) / n`.
pub fn logits_to_grad(p: &mut [f32], y: &[u32], classes: usize) {
    let inv = 1.0 / y.len().max(1) as f32;
    for (row, &label) in p.chunks_exact_mut(classes).zip(y) {
        row[label as usize] -= 1.0;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// The index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (k, &v)| if v > a.1 { (k, v) } else { a }).0
}

/// A model architecture over flat parameters.
///
/// Every model provides [`Model::forward`] (logits and features of a batch) and [`Model::vjp`]
/// (back-propagation of any [`Head`] to the parameters and the inputs); the cross-entropy
/// methods `loss_grad`, `eval_batch`, `input_grad` and `per_example_loss` follow from them by
/// default, and native models override them with fused paths that give the same values.
pub trait Model: Send {
    /// A fresh copy of this architecture (one per worker thread).
    fn clone_box(&self) -> Box<dyn Model>;
    /// The named layout of this model's parameters.
    fn layout(&self) -> Arc<Layout>;
    /// Freshly initialised parameters (deterministic for `rng`).
    fn init(&self, rng: &mut RngStream) -> Params;
    /// Logits and features of `batch` (`Mode::Train` behaves as `TrainFrozen`: nothing is
    /// written). Every registered model provides it (tested); the default is an error, for test
    /// doubles that only define a loss.
    fn forward(&mut self, _params: &Params, _batch: &Batch, _mode: Mode, _out: &mut Outputs) -> Result<()> {
        Err(crate::Error::Method("this model does not provide its outputs (forward)".into()))
    }
    /// Forward in `mode`, the objective `head` on the outputs, and its gradient with respect to
    /// the parameters into `grad` (overwritten; 0 on buffers) and with respect to the inputs
    /// `batch.x` into `gx` (resized to `batch.x.len()`), each if asked; returns the head's value.
    /// `Mode::Train` writes the new running statistics into `params`. Training-time randomness
    /// (dropout, augmentation) must come from `rng`, never from state kept in the model object:
    /// one object serves many clients.
    #[allow(clippy::too_many_arguments)]
    fn vjp(
        &mut self,
        _params: &mut Params,
        _batch: &Batch,
        _mode: Mode,
        _head: &mut dyn Head,
        _grad: Option<&mut Params>,
        _gx: Option<&mut Vec<f32>>,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        Err(crate::Error::Method("this model does not back-propagate other losses (vjp)".into()))
    }
    /// Every layer's activations for `batch` in evaluation mode, input side first, ending with
    /// the logits (representation analyses: CKA, sparsity). Default: the features and the
    /// logits ([`output_activations`]); models with hidden layers return each of them (after
    /// its nonlinearity and pooling), the last hidden one under the name `features`.
    fn activations(&mut self, params: &Params, batch: &Batch) -> Result<Vec<Activation>> {
        let mut out = Outputs::default();
        self.forward(params, batch, Mode::Eval, &mut out)?;
        Ok(output_activations(out))
    }
    /// The same architecture with every hidden width scaled by `rate` (in (0, 1]): each tensor
    /// is the leading block of this model's tensor of the same name ([`crate::SubModel`]), and
    /// in training-mode forwards each scaled layer's output is divided by `rate` (HeteroFL's
    /// Scaler). Default: an error naming the models that have it.
    fn width_scaled(&self, rate: f64) -> Result<Box<dyn Model>> {
        Err(no_hidden_widths(rate))
    }
    /// True for a sequence model that returns one row of outputs per position when a batch has
    /// per-position targets (`transformer`); the others predict one label per sample and refuse
    /// such data ([`check_fits`]).
    fn per_position(&self) -> bool {
        false
    }
    /// Mean cross-entropy loss over `batch` (training mode) and its gradient into `grad`.
    fn loss_grad(&mut self, params: &mut Params, batch: &Batch, grad: &mut Params, rng: &mut RngStream) -> Result<f32> {
        self.vjp(params, batch, Mode::Train, &mut CrossEntropy, Some(grad), None, rng)
    }
    /// Summed cross-entropy loss and number of correct top-1 predictions over `batch.labels()`
    /// (evaluation mode; sequence data counts every position).
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        let mut out = Outputs::default();
        self.forward(params, batch, Mode::Eval, &mut out)?;
        check_targets(batch, &out)?;
        Ok(softmax_cross_entropy(&mut out.logits, batch.labels(), out.classes))
    }
    /// Mean cross-entropy over `batch` (training mode, buffers untouched) and its gradient with
    /// respect to the inputs, into `gx`: adversarial training (WRM) and input-space attacks.
    fn input_grad(&mut self, params: &Params, batch: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
        let mut p = params.clone();
        self.vjp(&mut p, batch, Mode::TrainFrozen, &mut CrossEntropy, None, Some(gx), &mut RngStream::new(0))
    }
    /// Each sample's cross-entropy loss (evaluation mode), into `out`; for sequence data the
    /// mean over the sample's positions.
    fn per_example_loss(&mut self, params: &Params, batch: &Batch, out: &mut Vec<f32>) -> Result<()> {
        let mut o = Outputs::default();
        self.forward(params, batch, Mode::Eval, &mut o)?;
        check_targets(batch, &o)?;
        let t = batch.positions().max(1);
        out.clear();
        for (s, ys) in batch.labels().chunks(t).enumerate() {
            let mut rows = o.logits[s * t * o.classes..(s + 1) * t * o.classes].to_vec();
            let (l, _) = softmax_cross_entropy(&mut rows, ys, o.classes);
            out.push((l / t as f64) as f32);
        }
        Ok(())
    }
}

/// An error, under `key`, when `data` has per-position targets (sequence data) and `model`
/// predicts one label per sample.
pub fn check_fits(model: &dyn Model, data: &crate::Dataset, key: &str) -> Result<()> {
    if data.positions() > 0 && !model.per_position() {
        return Err(crate::Error::config(
            key,
            format!(
                "{} has a target per position (sequence data) and this model predicts one label per sample: use \"transformer\"",
                data.name
            ),
        ));
    }
    Ok(())
}

/// The error of a model without [`Model::width_scaled`].
pub fn no_hidden_widths(rate: f64) -> crate::Error {
    crate::Error::Method(format!(
        "this model has no hidden widths to scale by {rate} (HeteroFL's sub-models): use model.use = \"mlp\""
    ))
}

/// A model's configuration, validated when the config is read; it becomes a [`Model`] once the
/// data's sample shape and class count are known.
pub trait ModelSpec: Send + Sync {
    /// The model for samples of `feature_shape` and `classes` classes, or a clear error when the
    /// architecture does not fit the data.
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>>;
}

/// Sees (and may change) each flat gradient before the optimiser step, and the weights after it:
/// FedProx, SCAFFOLD, FedDyn, FedNAR and friends are hooks.
pub trait GradHook {
    /// `step` counts from 0 within one local training run; `w` are the current parameters.
    fn on_grad(&mut self, step: usize, w: &Params, g: &mut Params);
    /// After the optimiser's step `step`, on the new weights (default: nothing). NIID-Bench's
    /// SCAFFOLD subtracts its correction here, outside the momentum; projections (a norm ball,
    /// a mask) act here too.
    fn after_step(&mut self, _step: usize, _w: &mut Params) {}
}

impl<F: FnMut(usize, &Params, &mut Params)> GradHook for F {
    fn on_grad(&mut self, step: usize, w: &Params, g: &mut Params) {
        self(step, w, g)
    }
}

/// Where a local step is: the round, the step index within the local run, the learning rate.
#[derive(Clone, Copy, Debug)]
pub struct StepCtx {
    pub round: u32,
    pub step: usize,
    pub lr: f32,
    /// `client.weight_decay` (lambda): a rule that [owns](LocalStep::owns_weight_decay) the weight
    /// decay applies it in [`LocalStep::adjust`].
    pub weight_decay: f32,
}

/// The local step rule (`[local] use = "..."`): how one mini-batch becomes a descent direction.
/// Plain training takes the model's gradient; SAM takes it at a perturbed point, WRM at
/// adversarial inputs, FedNAR co-clips gradient and weight decay. Composes with every algorithm:
/// the algorithm's [`GradHook`] runs between [`LocalStep::grad`] and [`LocalStep::adjust`].
pub trait LocalStep: Send + Sync {
    /// The loss and gradient for `batch` at `params` (default: the model's own).
    fn grad(
        &self,
        _sc: &StepCtx,
        model: &mut dyn Model,
        params: &mut Params,
        batch: &mut Batch,
        grad: &mut Params,
        rng: &mut RngStream,
    ) -> Result<f32> {
        model.loss_grad(params, batch, grad, rng)
    }
    /// Change the direction after the algorithm's hook, before the optimiser step.
    fn adjust(&self, _sc: &StepCtx, _w: &Params, _g: &mut Params) {}
    /// True when [`LocalStep::adjust`] applies `client.weight_decay` itself (the optimiser then
    /// does not add it again).
    fn owns_weight_decay(&self) -> bool {
        false
    }
    /// One epoch's mini-batches over a client's `n` samples (positions), drawn from `rng`, or
    /// `None` for the default: a fresh permutation cut into batches of `batch_size` (the last
    /// one partial). DP-SGD draws Poisson batches here; a batch may then be empty, and the
    /// rule's [`LocalStep::grad`] must handle it.
    fn epoch_batches(&self, _n: usize, _batch_size: usize, _rng: &mut RngStream) -> Option<Vec<Vec<usize>>> {
        None
    }
}

/// Plain local training: the model's mini-batch gradient, unchanged.
pub struct PlainStep;
impl LocalStep for PlainStep {}

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
/// PyTorch's DataLoader with `drop_last=False`). `step` is the local step rule (SAM, WRM, ...;
/// [`PlainStep`] for plain training) and `round` is passed to it.
#[allow(clippy::too_many_arguments)]
pub fn local_train(
    model: &mut dyn Model,
    params: &mut Params,
    data: &ClientData,
    cfg: &LocalTrain,
    epochs: usize,
    hook: &mut dyn GradHook,
    step: &dyn LocalStep,
    round: u32,
    rng: &mut RngStream,
) -> Result<TrainStats> {
    let mut opt = if step.owns_weight_decay() {
        Optimizer::new(&LocalTrain { weight_decay: 0.0, ..cfg.clone() }, params.layout())
    } else {
        Optimizer::new(cfg, params.layout())
    };
    let mut grad = params.zeros_like();
    let mut batch = Batch::default();
    let mut stats = TrainStats::default();
    let mut loss_sum = 0.0;
    let n = data.len();
    let b = cfg.batch_size.max(1);
    'outer: for _ in 0..epochs {
        let plan = match step.epoch_batches(n, b, rng) {
            Some(plan) => plan,
            None => rng.permutation(n).chunks(b).map(<[usize]>::to_vec).collect(),
        };
        for ids in &plan {
            if cfg.max_steps > 0 && stats.steps >= cfg.max_steps {
                break 'outer;
            }
            batch.fill(data, ids, rng);
            let sc = StepCtx { round, step: stats.steps, lr: cfg.lr as f32, weight_decay: cfg.weight_decay as f32 };
            let loss = step.grad(&sc, model, params, &mut batch, &mut grad, rng)?;
            if !loss.is_finite() {
                return Err(crate::Error::Method(format!(
                    "local training diverged (loss {loss}) at step {}; lower client.lr",
                    stats.steps
                )));
            }
            hook.on_grad(stats.steps, params, &mut grad);
            step.adjust(&sc, params, &mut grad);
            opt.step(params.as_mut_slice(), grad.as_slice(), cfg.lr as f32);
            hook.after_step(stats.steps, params);
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

/// Evaluate `params` on the samples `range` (positions in `data.idx`), in batches, on clean
/// features: the client's affine transform and feature noise are dropped (the global test set is
/// in no client's domain).
pub fn evaluate_range(
    model: &mut dyn Model,
    params: &Params,
    data: &ClientData,
    range: std::ops::Range<usize>,
    batch_size: usize,
) -> Result<EvalStats> {
    evaluate_in_domain(model, params, &data.without_transforms(), range, batch_size, &mut RngStream::new(0))
}

/// [`evaluate_range`] in the client's own feature domain: its affine transform is applied and
/// its feature noise (if any) drawn from `rng`, as in training. Per-client evaluation of
/// feature-shift federations uses it.
pub fn evaluate_in_domain(
    model: &mut dyn Model,
    params: &Params,
    data: &ClientData,
    range: std::ops::Range<usize>,
    batch_size: usize,
    rng: &mut RngStream,
) -> Result<EvalStats> {
    let mut batch = Batch::default();
    let mut out = EvalStats::default();
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(batch_size.max(1)) {
        batch.fill(data, chunk, rng);
        let (l, c) = model.eval_batch(params, &batch)?;
        out = out.merge(EvalStats { loss_sum: l, correct: c, count: batch.labels().len() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dataset, FeatureAffine, ParamKind};

    /// A probe whose "loss" is the sum of the features it is shown and whose "correct" count is
    /// the number of features above 1.5, so evaluations reveal what the batches held.
    struct FeatureSum {
        layout: Arc<Layout>,
    }

    impl Model for FeatureSum {
        fn clone_box(&self) -> Box<dyn Model> {
            Box::new(FeatureSum { layout: self.layout.clone() })
        }
        fn layout(&self) -> Arc<Layout> {
            self.layout.clone()
        }
        fn init(&self, _: &mut RngStream) -> Params {
            Params::zeros(self.layout.clone())
        }
        fn loss_grad(&mut self, _: &mut Params, _: &Batch, _: &mut Params, _: &mut RngStream) -> Result<f32> {
            Ok(0.0)
        }
        fn eval_batch(&mut self, _: &Params, b: &Batch) -> Result<(f64, usize)> {
            Ok((b.x.iter().map(|&v| v as f64).sum(), b.x.iter().filter(|&&v| v > 1.5).count()))
        }
    }

    // evaluate_range sees the clean features; evaluate_in_domain sees the client's domain
    // (x' = a x + b, then noise), batch by batch.
    #[test]
    fn evaluate_range_is_clean_and_evaluate_in_domain_keeps_the_domain() {
        let x: Vec<f32> = (0..5).map(|i| i as f32 * 0.5).collect(); // 0, 0.5, 1, 1.5, 2
        let data = Dataset {
            name: "t".into(),
            x,
            y: vec![0; 5],
            feature_shape: vec![1],
            classes: 2,
            users: None,
            targets: Vec::new(),
        };
        let mut l = Layout::new();
        l.push("w", &[1], ParamKind::Weight);
        let mut model = FeatureSum { layout: Arc::new(l) };
        let p = model.init(&mut RngStream::new(0));
        let affine = FeatureAffine { scale: 3.0, shift: 1.0 };
        let cd = ClientData { affine, ..ClientData::whole(Arc::new(data)) };

        let clean = evaluate_range(&mut model, &p, &cd, 0..5, 2).unwrap();
        assert_eq!((clean.loss_sum, clean.correct, clean.count), (5.0, 1, 5));
        let own = evaluate_in_domain(&mut model, &p, &cd, 0..5, 2, &mut RngStream::new(0)).unwrap();
        // 1, 2.5, 4, 5.5, 7: sum 20, four above 1.5.
        assert_eq!((own.loss_sum, own.correct, own.count), (20.0, 4, 5));

        // With noise as well: evaluate_range is unchanged, evaluate_in_domain adds the noise drawn
        // from its rng after the affine transform.
        let noisy = ClientData { noise_std: 0.25, ..cd.clone() };
        assert_eq!(evaluate_range(&mut model, &p, &noisy, 0..5, 2).unwrap(), clean);
        let got = evaluate_in_domain(&mut model, &p, &noisy, 0..5, 2, &mut RngStream::new(4)).unwrap();
        let mut rng = RngStream::new(4);
        let want: f64 = [1.0f32, 2.5, 4.0, 5.5, 7.0].iter().map(|&v| (v + (0.25 * rng.normal()) as f32) as f64).sum();
        assert!((got.loss_sum - want).abs() < 1e-9, "{} vs {want}", got.loss_sum);
        assert_ne!(got.loss_sum, own.loss_sum);
    }

    /// Records the features of every training batch it is shown.
    struct Recorder {
        layout: Arc<Layout>,
        seen: Vec<f32>,
    }

    impl Model for Recorder {
        fn clone_box(&self) -> Box<dyn Model> {
            Box::new(Recorder { layout: self.layout.clone(), seen: Vec::new() })
        }
        fn layout(&self) -> Arc<Layout> {
            self.layout.clone()
        }
        fn init(&self, _: &mut RngStream) -> Params {
            Params::zeros(self.layout.clone())
        }
        fn loss_grad(&mut self, _: &mut Params, b: &Batch, _: &mut Params, _: &mut RngStream) -> Result<f32> {
            self.seen.extend_from_slice(&b.x);
            Ok(0.0)
        }
        fn eval_batch(&mut self, _: &Params, _: &Batch) -> Result<(f64, usize)> {
            Ok((0.0, 0))
        }
    }

    // The contract `fedkit data export` (orders.u32) relies on: with plain steps and no feature
    // noise, epoch e visits the samples in the batch stream's e-th `permutation(n)`.
    #[test]
    fn each_epoch_visits_the_samples_in_the_streams_next_permutation() {
        let n = 23;
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let data = Dataset {
            name: "t".into(),
            x,
            y: vec![0; n],
            feature_shape: vec![1],
            classes: 2,
            users: None,
            targets: Vec::new(),
        };
        let cd = ClientData::whole(Arc::new(data));
        let mut l = Layout::new();
        l.push("w", &[1], ParamKind::Weight);
        let mut model = Recorder { layout: Arc::new(l), seen: Vec::new() };
        let mut p = model.init(&mut RngStream::new(0));
        let cfg = LocalTrain { epochs: 3, batch_size: 5, ..LocalTrain::default() };
        let stream = || RngStream::derive(7, crate::BATCH_STREAM, 2, 11);
        local_train(&mut model, &mut p, &cd, &cfg, 3, &mut NoHook, &PlainStep, 2, &mut stream()).unwrap();
        let mut rng = stream();
        let want: Vec<f32> = (0..3).flat_map(|_| rng.permutation(n)).map(|i| i as f32).collect();
        assert_eq!(model.seen, want);
        assert_ne!(want[..n], want[n..2 * n], "the epochs use different orders");
    }
}
