//! The adapter between flat [`Params`] and burn: a [`Net`] describes its layout and a functional
//! forward pass over tensors built from the flat buffer; [`BurnModel`] turns that into a
//! [`Model`] (loss, flat gradient, evaluation). This is the only file that moves data between
//! fedkit and the tensor backend.
//!
//! Each training step builds the parameter leaves from the flat buffer, runs forward and
//! backward, and copies the gradients back into one flat buffer, so optimisers, hooks and all FL
//! arithmetic stay backend-free.

use std::sync::Arc;

use burn::tensor::{Device, Gradients, Int, Tensor, TensorData, activation};
use fedkit_core::{
    Activation, Batch, Error, Head, Layout, Mode, Model, OutputGrads, Outputs, Params, Result, RngStream,
};

/// The device models run on: burn's pure-Rust `flex` CPU backend unless another backend feature
/// is compiled in and selected by `FEDKIT_DEVICE` (`cpu` for CubeCL's CPU backend, `cuda`).
pub fn device() -> Device {
    match std::env::var("FEDKIT_DEVICE").as_deref() {
        #[cfg(feature = "cubecl-cpu")]
        Ok("cpu") => Device::cpu(),
        #[cfg(feature = "cuda")]
        Ok("cuda") => Device::cuda(0),
        _ => Device::flex(),
    }
}

/// Parameter tensors built from a flat buffer, remembered so their gradients can be read back,
/// plus the mode of the forward pass: in training mode a layer with running statistics (batch
/// norm) normalises with the batch's statistics and records new values for its `Buffer` entries
/// ([`Leaves::write_buffer`]), which `loss_grad` copies back into the parameters.
pub struct Leaves<'a> {
    layout: &'a Layout,
    data: &'a [f32],
    device: Device,
    track: bool,
    training: bool,
    per_position: bool,
    made: Vec<(usize, Leaf)>,
    buffer_writes: Vec<(usize, Tensor<1>)>,
    /// Hidden activations a network recorded with [`Leaves::probe`], when asked for
    /// ([`Model::activations`]); `None` otherwise, and probing costs nothing.
    probes: Option<Vec<(String, Tensor<2>)>>,
}

enum Leaf {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R4(Tensor<4>),
}

impl<'a> Leaves<'a> {
    /// Leaves over `data` (laid out as `layout`) on `device`; `track`: record gradients;
    /// `training`: training-mode forward (batch statistics, running-statistic updates).
    fn new(layout: &'a Layout, data: &'a [f32], device: &Device, track: bool, training: bool) -> Self {
        Leaves {
            layout,
            data,
            device: device.clone(),
            track,
            training,
            per_position: false,
            made: Vec::new(),
            buffer_writes: Vec::new(),
            probes: None,
        }
    }
    /// The same leaves for a batch of `batch`'s kind (per-position targets or not).
    fn for_batch(mut self, batch: &Batch) -> Self {
        self.per_position = batch.positions() > 0;
        self
    }
    fn constant<const D: usize>(&self, i: usize) -> Tensor<D> {
        let e = &self.layout.entries()[i];
        let shape: [usize; D] = std::array::from_fn(|k| e.shape[k]);
        Tensor::<D>::from_data(TensorData::new(self.data[e.range()].to_vec(), shape), &self.device)
    }
    fn tensor<const D: usize>(&self, i: usize) -> Tensor<D> {
        let t = self.constant::<D>(i);
        if self.track { t.require_grad() } else { t }
    }
    /// True in a training-mode forward pass (`loss_grad`), false in evaluation.
    pub fn training(&self) -> bool {
        self.training
    }
    /// True when the batch has a target per position (sequence data): a sequence model then
    /// returns one row of features and logits per position, `[n * T, ..]`, sample-major.
    pub fn per_position(&self) -> bool {
        self.per_position
    }
    /// The device the leaves live on (for constants a network builds, e.g. attention masks).
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Buffer entry `i` (running statistics) as a rank-1 tensor that is not trained.
    pub fn buffer(&self, i: usize) -> Tensor<1> {
        self.constant::<1>(i)
    }
    /// Record `value` as the new content of buffer entry `i`; `loss_grad` writes it into the
    /// parameters after the backward pass (evaluation discards it).
    pub fn write_buffer(&mut self, i: usize, value: Tensor<1>) {
        self.buffer_writes.push((i, value.detach()));
    }
    /// Record hidden activation `h` (`[rows, width]`) under the name `name()` for
    /// [`Model::activations`]; a no-op in every other pass. Networks probe each hidden layer
    /// except the last (their features).
    pub fn probe(&mut self, name: impl FnOnce() -> String, h: &Tensor<2>) {
        if let Some(p) = &mut self.probes {
            p.push((name(), h.clone()));
        }
    }
    /// [`Leaves::probe`] for a rank-4 map `[n, c, h, w]`, flattened per sample to `[n, c h w]`.
    pub fn probe_map(&mut self, name: impl FnOnce() -> String, h: &Tensor<4>) {
        if self.probes.is_some() {
            let [n, c, hh, ww] = h.dims();
            self.probe(name, &h.clone().reshape([n, c * hh * ww]));
        }
    }
    /// Layout entry `i` as a rank-1 tensor.
    pub fn r1(&mut self, i: usize) -> Tensor<1> {
        let t = self.tensor::<1>(i);
        self.made.push((i, Leaf::R1(t.clone())));
        t
    }
    /// Layout entry `i` as a rank-2 tensor.
    pub fn r2(&mut self, i: usize) -> Tensor<2> {
        let t = self.tensor::<2>(i);
        self.made.push((i, Leaf::R2(t.clone())));
        t
    }
    /// Layout entry `i` as a rank-4 tensor.
    pub fn r4(&mut self, i: usize) -> Tensor<4> {
        let t = self.tensor::<4>(i);
        self.made.push((i, Leaf::R4(t.clone())));
        t
    }
}

/// A network written as a functional forward pass over [`Leaves`].
pub trait Net: Clone + Send + 'static {
    /// The parameter layout.
    fn layout(&self) -> Arc<Layout>;
    /// Fresh parameters.
    fn init(&self, rng: &mut RngStream) -> Params;
    /// The features `[rows, width]` (the output layer's input) and the logits `[rows, classes]`
    /// for input `x` of shape `[batch, ...sample shape]` flattened to rank 4 `[batch, c, h, w]`
    /// (vector data arrives as `[batch, 1, 1, d]`); rows is the batch size, or batch * T for a
    /// sequence model on data with per-position targets ([`Leaves::per_position`]).
    fn forward(&self, p: &mut Leaves, x: Tensor<4>) -> (Tensor<2>, Tensor<2>);
    /// This network with its hidden widths scaled by `rate` ([`Model::width_scaled`]); default:
    /// `None`, not supported.
    fn width_scaled(&self, _rate: f64) -> Option<Result<Self>> {
        None
    }
    /// Check a batch's inputs beyond their shape (e.g. that token ids are in the vocabulary).
    fn check_input(&self, _batch: &Batch) -> Result<()> {
        Ok(())
    }
    /// True for a sequence network ([`Model::per_position`]).
    fn per_position(&self) -> bool {
        false
    }
    /// `Ok` when the loss has a gradient with respect to the inputs; otherwise which network
    /// has none (e.g. token ids looked up in an embedding), and `vjp` / `input_grad` refuse
    /// to return zeros in its place.
    fn input_gradient(&self) -> std::result::Result<(), &'static str> {
        Ok(())
    }
}

/// The refusal of an input gradient by a network with discrete inputs.
fn no_input_gradient(net: &str) -> Error {
    Error::Method(format!(
        "{net} has no gradient with respect to its inputs: input-space methods (WRM, critical samples, gradient inversion) need continuous inputs"
    ))
}

/// A [`Net`] as a fedkit [`Model`].
#[derive(Clone)]
pub struct BurnModel<N: Net> {
    net: N,
    layout: Arc<Layout>,
    sample_shape: [usize; 3],
    classes: usize,
}

impl<N: Net> BurnModel<N> {
    /// Wrap `net` for samples of `sample_shape` (`[c, h, w]`) and `classes` classes.
    pub fn new(net: N, sample_shape: [usize; 3], classes: usize) -> Self {
        let layout = net.layout();
        BurnModel { net, layout, sample_shape, classes }
    }

    fn input(&self, batch: &Batch, device: &Device) -> Result<(Tensor<4>, usize)> {
        let n = batch.len();
        let [c, h, w] = self.sample_shape;
        if batch.x.len() != n * c * h * w {
            return Err(Error::Shape(format!(
                "model expects samples of {:?}, batch has {} values for {n} samples",
                self.sample_shape,
                batch.x.len()
            )));
        }
        self.net.check_input(batch)?;
        Ok((Tensor::<4>::from_data(TensorData::new(batch.x.clone(), [n, c, h, w]), device), n))
    }

    /// The targets of the loss ([`Batch::labels`]) and their number, checked against the rows
    /// of logits the network returned.
    fn labels(&self, batch: &Batch, rows: usize, device: &Device) -> Result<Tensor<1, Int>> {
        let y: Vec<i64> = batch.labels().iter().map(|&v| v as i64).collect();
        if y.len() != rows {
            return Err(Error::Shape(format!(
                "the model gave {rows} rows of logits for {} targets ({} samples)",
                y.len(),
                batch.len()
            )));
        }
        if let Some(&bad) = y.iter().find(|&&v| v as usize >= self.classes) {
            return Err(Error::Shape(format!("label {bad} out of range for {} classes", self.classes)));
        }
        Ok(Tensor::<1, Int>::from_data(TensorData::new(y, [rows]), device))
    }
}

impl<N: Net> BurnModel<N> {
    /// The gradients of the parameter leaves `made` into the flat `g` (overwritten; entries used
    /// twice, tied weights, get both gradients).
    fn read_grads(&self, made: &[(usize, Leaf)], grads: &Gradients, g: &mut [f32]) -> Result<()> {
        g.fill(0.0);
        for (i, leaf) in made {
            let r = self.layout.entries()[*i].range();
            let v = match leaf {
                Leaf::R1(t) => t.grad(grads).map(to_vec),
                Leaf::R2(t) => t.grad(grads).map(to_vec),
                Leaf::R4(t) => t.grad(grads).map(to_vec),
            };
            if let Some(v) = v {
                g[r].iter_mut().zip(v?).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    /// Write the running statistics a training-mode forward recorded into `params`.
    fn write_buffers(&self, writes: Vec<(usize, Tensor<1>)>, params: &mut Params) -> Result<()> {
        for (i, value) in writes {
            let r = self.layout.entries()[i].range();
            let v = to_vec(value)?;
            if v.len() != r.len() {
                return Err(Error::Shape(format!("buffer write of {} values into {} values", v.len(), r.len())));
            }
            params.as_mut_slice()[r].copy_from_slice(&v);
        }
        Ok(())
    }
}

/// The mean cross-entropy of `logits` (`[n, classes]`) against the labels `y`.
fn mean_cross_entropy(logits: Tensor<2>, y: Tensor<1, Int>, n: usize) -> Tensor<1> {
    let picked: Tensor<2> = activation::log_softmax(logits, 1).gather(1, y.reshape([n, 1]));
    picked.sum().neg().div_scalar(n as f32)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().try_into_vec::<f32>().map_err(|e| Error::Method(format!("tensor readback failed: {e:?}")))
}

impl<N: Net> Model for BurnModel<N> {
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(self.clone())
    }
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        self.net.init(rng)
    }
    fn per_position(&self) -> bool {
        self.net.per_position()
    }
    fn width_scaled(&self, rate: f64) -> Result<Box<dyn Model>> {
        match self.net.width_scaled(rate) {
            Some(net) => Ok(Box::new(BurnModel::new(net?, self.sample_shape, self.classes))),
            None => Err(fedkit_core::model::no_hidden_widths(rate)),
        }
    }
    fn loss_grad(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        grad: &mut Params,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        let device = device().autodiff();
        let (x, _) = self.input(batch, &device)?;
        let mut leaves = Leaves::new(&self.layout, params.as_slice(), &device, true, true).for_batch(batch);
        let (_, logits) = self.net.forward(&mut leaves, x);
        let Leaves { made, buffer_writes, .. } = leaves;
        let rows = logits.dims()[0];
        let y = self.labels(batch, rows, &device)?;
        let loss = mean_cross_entropy(logits, y, rows);
        let grads = loss.backward();
        self.read_grads(&made, &grads, grad.as_mut_slice())?;
        // The new running statistics, written only now: the forward pass read the old ones.
        self.write_buffers(buffer_writes, params)?;
        let l = to_vec(loss)?;
        Ok(l.first().copied().unwrap_or(f32::NAN))
    }
    fn forward(&mut self, params: &Params, batch: &Batch, mode: Mode, out: &mut Outputs) -> Result<()> {
        let device = device();
        let (x, _) = self.input(batch, &device)?;
        let mut leaves =
            Leaves::new(&self.layout, params.as_slice(), &device, false, mode != Mode::Eval).for_batch(batch);
        let (features, logits) = self.net.forward(&mut leaves, x);
        out.feature_dim = features.dims()[1];
        out.classes = self.classes;
        out.logits = to_vec(logits)?;
        out.features = to_vec(features)?;
        Ok(())
    }
    fn activations(&mut self, params: &Params, batch: &Batch) -> Result<Vec<Activation>> {
        let device = device();
        let (x, _) = self.input(batch, &device)?;
        let mut leaves = Leaves::new(&self.layout, params.as_slice(), &device, false, false).for_batch(batch);
        leaves.probes = Some(Vec::new());
        let (features, logits) = self.net.forward(&mut leaves, x);
        let mut out: Vec<Activation> = Vec::new();
        for (name, t) in leaves.probes.take().unwrap_or_default() {
            out.push(Activation { name, dim: t.dims()[1], values: to_vec(t)? });
        }
        let feature_dim = features.dims()[1];
        out.extend(fedkit_core::output_activations(Outputs {
            logits: to_vec(logits)?,
            classes: self.classes,
            features: to_vec(features)?,
            feature_dim,
        }));
        Ok(out)
    }
    /// The objective `sum(G * logits) + sum(Gf * features)` with the head's gradients G, Gf as
    /// constants has the head's gradient: one backward pass gives the vector-Jacobian products.
    fn vjp(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        mode: Mode,
        head: &mut dyn Head,
        grad: Option<&mut Params>,
        gx: Option<&mut Vec<f32>>,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        if gx.is_some() {
            self.net.input_gradient().map_err(no_input_gradient)?;
        }
        let device = device().autodiff();
        let (x, _) = self.input(batch, &device)?;
        let x = if gx.is_some() { x.require_grad() } else { x };
        let mut leaves =
            Leaves::new(&self.layout, params.as_slice(), &device, grad.is_some(), mode != Mode::Eval).for_batch(batch);
        let (features, logits) = self.net.forward(&mut leaves, x.clone());
        let Leaves { made, buffer_writes, .. } = leaves;
        let [n, f_dim] = features.dims();
        let out = Outputs {
            logits: to_vec(logits.clone())?,
            classes: self.classes,
            features: to_vec(features.clone())?,
            feature_dim: f_dim,
        };
        let mut g = OutputGrads::default();
        let value = head.value_grad(&out, batch, &mut g)?;
        fedkit_core::model::check_output_grads(&out, &g)?;
        if grad.is_none() && gx.is_none() {
            // Nothing to back-propagate (a training-mode pass for its running statistics).
            if mode == Mode::Train {
                self.write_buffers(buffer_writes, params)?;
            }
            return Ok(value);
        }
        let upstream = Tensor::<2>::from_data(TensorData::new(g.logits, [n, self.classes]), &device);
        let mut objective = logits.mul(upstream).sum();
        if !g.features.is_empty() {
            let gf = Tensor::<2>::from_data(TensorData::new(g.features, [n, f_dim]), &device);
            objective = objective.add(features.mul(gf).sum());
        }
        let grads = objective.backward();
        if let Some(grad) = grad {
            self.read_grads(&made, &grads, grad.as_mut_slice())?;
        }
        if let Some(gx) = gx {
            gx.clear();
            match x.grad(&grads) {
                Some(g) => gx.extend(to_vec(g)?),
                None => gx.resize(batch.x.len(), 0.0),
            }
        }
        if mode == Mode::Train {
            self.write_buffers(buffer_writes, params)?;
        }
        Ok(value)
    }
    /// The input tensor requires gradients; the parameters are constants (training mode, running
    /// statistics not written back).
    fn input_grad(&mut self, params: &Params, batch: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
        self.net.input_gradient().map_err(no_input_gradient)?;
        let device = device().autodiff();
        let (x, _) = self.input(batch, &device)?;
        let x = x.require_grad();
        let mut leaves = Leaves::new(&self.layout, params.as_slice(), &device, false, true).for_batch(batch);
        let logits = self.net.forward(&mut leaves, x.clone()).1;
        let rows = logits.dims()[0];
        let y = self.labels(batch, rows, &device)?;
        let loss = mean_cross_entropy(logits, y, rows);
        let grads = loss.backward();
        gx.clear();
        match x.grad(&grads) {
            Some(g) => gx.extend(to_vec(g)?),
            None => gx.resize(batch.x.len(), 0.0),
        }
        let l = to_vec(loss)?;
        Ok(l.first().copied().unwrap_or(f32::NAN))
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        let device = device();
        let (x, _) = self.input(batch, &device)?;
        let mut leaves = Leaves::new(&self.layout, params.as_slice(), &device, false, false).for_batch(batch);
        let (_, logits) = self.net.forward(&mut leaves, x);
        let rows = logits.dims()[0];
        self.labels(batch, rows, &device)?;
        let logp = to_vec(activation::log_softmax(logits, 1))?;
        let c = self.classes;
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for (row, &y) in logp.chunks(c).zip(batch.labels()) {
            let y = y as usize;
            loss -= row[y] as f64;
            let arg = row.iter().enumerate().fold(0, |a, (k, &v)| if v > row[a] { k } else { a });
            correct += (arg == y) as usize;
        }
        Ok((loss, correct))
    }
}
