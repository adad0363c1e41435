//! `dae`: a denoising autoencoder with a classification head, Vincent, Larochelle, Bengio,
//! Manzagol, "Extracting and Composing Robust Features with Denoising Autoencoders", ICML 2008.
//!
//! Encoder h = sigmoid(x W + b) (W is `[d, hidden]`), tied decoder x_hat = sigmoid(h W^T + c), and
//! a linear classification head on the code, logits = h V + a. Two phases (`phase`):
//! - `"pretrain"`: unsupervised. Each training step corrupts the input with masking noise (every
//!   value set to 0 with probability nu = `corruption`, drawn from the client's training stream)
//!   and descends the reconstruction cross-entropy of the clean input,
//!   L = (1/n) sum_i (1/d) sum_j -[x_ij log x_hat_ij + (1 - x_ij) log(1 - x_hat_ij)]
//!   (inputs in [0, 1], as Fashion-MNIST's); labels are not used and the head gets no gradient.
//!   Federated pre-training is any algorithm run with this phase: the clients' unlabelled data
//!   trains the shared encoder.
//! - `"finetune"` (default): supervised cross-entropy of the head's logits on the clean input,
//!   back-propagated through the encoder (or into the head only, with `freeze_encoder = true`: a
//!   linear probe on the pre-trained features); the decoder bias gets no gradient.
//! Start a fine-tuning run from a pre-training run's final model with the top-level
//! `init_from = "<run directory>"`. Evaluation, `forward` (features = the code h) and `vjp` are
//! the classifier's in both phases, so a pre-training run's `test_acc` is that of the untrained
//! head (near chance) and its `train_loss` the classifier's, not the reconstruction loss; the
//! reconstruction loss is the run's `client_loss`.
//!
//! Parameters: `hidden` (the code size, default 500 as the paper's MNIST dA); `corruption` (nu in
//! [0, 1), default 0.25); `phase`; `freeze_encoder` (default false). Entries: `enc.weight`,
//! `enc.bias`, `dec.bias`, `head.weight`, `head.bias`.
//!
//! ```toml
//! [model]
//! use = "dae"
//! hidden = 500
//! corruption = 0.25
//! phase = "pretrain"
//! freeze_encoder = false
//! ```

use std::sync::Arc;

use fedkit_core::model::{check_labels, logits_to_grad, softmax_cross_entropy};
use fedkit_core::{Batch, Error, Head, Layout, Mode, Model, ModelSpec, Outputs, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

use crate::conv_kernels::{MatRef, add_bias, add_column_sums, matmul};

/// Which objective local training descends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Denoising reconstruction (unsupervised).
    Pretrain,
    /// Classification.
    #[default]
    Finetune,
}

/// `[model] use = "dae"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaeSpec {
    pub hidden: usize,
    pub corruption: f64,
    pub phase: Phase,
    pub freeze_encoder: bool,
}

impl Default for DaeSpec {
    fn default() -> Self {
        DaeSpec { hidden: 500, corruption: 0.25, phase: Phase::Finetune, freeze_encoder: false }
    }
}

impl ModelSpec for DaeSpec {
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>> {
        let d: usize = feature_shape.iter().product();
        if self.hidden == 0 || d == 0 || classes < 2 {
            return Err(Error::config("model.hidden", "dae needs hidden >= 1, features and >= 2 classes"));
        }
        if !(0.0..1.0).contains(&self.corruption) {
            return Err(Error::config("model.corruption", format!("must be in [0, 1), got {}", self.corruption)));
        }
        let h = self.hidden;
        let mut l = Layout::new();
        l.push("enc.weight", &[d, h], ParamKind::Weight);
        l.push("enc.bias", &[h], ParamKind::Bias);
        l.push("dec.bias", &[d], ParamKind::Bias);
        l.push("head.weight", &[h, classes], ParamKind::Weight);
        l.push("head.bias", &[classes], ParamKind::Bias);
        Ok(Box::new(Dae { spec: self.clone(), d, h, c: classes, layout: Arc::new(l), code: Vec::new() }))
    }
}

/// The denoising autoencoder over flat parameters.
#[derive(Clone)]
pub struct Dae {
    spec: DaeSpec,
    d: usize,
    h: usize,
    c: usize,
    layout: Arc<Layout>,
    /// The last forward pass's code h `[n, hidden]`.
    code: Vec<f32>,
}

fn sigmoid(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp()));
}

impl Dae {
    fn check(&self, batch: &Batch) -> Result<()> {
        if batch.x.len() != batch.len() * self.d {
            return Err(Error::Shape(format!("dae expects {} features per sample", self.d)));
        }
        Ok(())
    }
    /// Slices of the five entries.
    fn parts<'a>(&self, w: &'a [f32]) -> [&'a [f32]; 5] {
        let e = self.layout.entries();
        std::array::from_fn(|i| &w[e[i].range()])
    }
    /// The code h = sigmoid(x W + b) of the rows of `x` into `self.code`.
    fn encode(&mut self, w: &[f32], x: &[f32], n: usize) {
        let [we, be, ..] = self.parts(w);
        self.code.resize(n * self.h, 0.0);
        matmul(&mut self.code, MatRef::new(x, n, self.d), MatRef::new(we, self.d, self.h), false);
        add_bias(&mut self.code, be, false);
        sigmoid(&mut self.code);
    }
    /// Logits of the code into `out`.
    fn logits(&self, w: &[f32], n: usize, out: &mut Vec<f32>) {
        let [.., wh, bh] = self.parts(w);
        out.resize(n * self.c, 0.0);
        matmul(out, MatRef::new(&self.code, n, self.h), MatRef::new(wh, self.h, self.c), false);
        add_bias(out, bh, false);
    }
    /// Back-propagate the logit gradient `dz` and the code gradient `dcode` (added) of the last
    /// forward pass on inputs `x`: parameter gradient into `g` (if given), input gradient into `gx`.
    fn backward(
        &self,
        w: &[f32],
        x: &[f32],
        n: usize,
        dz: &[f32],
        dcode: Option<&[f32]>,
        g: Option<&mut [f32]>,
        gx: Option<&mut Vec<f32>>,
    ) {
        let [we, _, _, wh, _] = self.parts(w);
        let e = self.layout.entries();
        let (d, h, c) = (self.d, self.h, self.c);
        let mut dh = vec![0.0f32; n * h];
        matmul(&mut dh, MatRef::new(dz, n, c), MatRef::new(wh, h, c).t(), false);
        if let Some(dc) = dcode {
            dh.iter_mut().zip(dc).for_each(|(a, b)| *a += b);
        }
        let mut g = g;
        if let Some(g) = g.as_deref_mut() {
            g.fill(0.0);
            matmul(&mut g[e[3].range()], MatRef::new(&self.code, n, h).t(), MatRef::new(dz, n, c), false);
            add_column_sums(dz, &mut g[e[4].range()]);
        }
        // through the sigmoid
        dh.iter_mut().zip(&self.code).for_each(|(g, s)| *g *= s * (1.0 - s));
        if let Some(g) = g {
            if !self.spec.freeze_encoder {
                matmul(&mut g[e[0].range()], MatRef::new(x, n, d).t(), MatRef::new(&dh, n, h), false);
                add_column_sums(&dh, &mut g[e[1].range()]);
            }
        }
        if let Some(gx) = gx {
            gx.clear();
            gx.resize(n * d, 0.0);
            matmul(gx, MatRef::new(&dh, n, h), MatRef::new(we, d, h).t(), false);
        }
    }
    /// One denoising step: corrupt, encode, decode, reconstruction cross-entropy of the clean
    /// input; its gradient into `grad` (the head gets none).
    fn reconstruction(&mut self, w: &[f32], batch: &Batch, grad: &mut [f32], rng: &mut RngStream) -> f32 {
        let (n, d, h) = (batch.len(), self.d, self.h);
        let nu = self.spec.corruption;
        let noisy: Vec<f32> = batch.x.iter().map(|&v| if nu > 0.0 && rng.uniform() < nu { 0.0 } else { v }).collect();
        self.encode(w, &noisy, n);
        let [we, _, bd, ..] = self.parts(w);
        let mut xr = vec![0.0f32; n * d];
        matmul(&mut xr, MatRef::new(&self.code, n, h), MatRef::new(we, d, h).t(), false);
        add_bias(&mut xr, bd, false);
        sigmoid(&mut xr);
        let mut loss = 0.0f64;
        let scale = 1.0 / (n * d) as f32;
        // d L / d (pre-sigmoid output) = (x_hat - x) / (n d); x_hat is reused for it.
        for (r, &x) in xr.iter_mut().zip(&batch.x) {
            let p = r.clamp(1e-7, 1.0 - 1e-7) as f64;
            loss -= x as f64 * p.ln() + (1.0 - x as f64) * (1.0 - p).ln();
            *r = (*r - x) * scale;
        }
        let e = self.layout.entries();
        grad.fill(0.0);
        // decoder: x_hat = sigmoid(h W^T + c): dW += dout^T h, dc = sum dout, dh = dout W
        matmul(&mut grad[e[0].range()], MatRef::new(&xr, n, d).t(), MatRef::new(&self.code, n, h), false);
        add_column_sums(&xr, &mut grad[e[2].range()]);
        let mut dh = vec![0.0f32; n * h];
        matmul(&mut dh, MatRef::new(&xr, n, d), MatRef::new(we, d, h), false);
        dh.iter_mut().zip(&self.code).for_each(|(g, s)| *g *= s * (1.0 - s));
        matmul(&mut grad[e[0].range()], MatRef::new(&noisy, n, d).t(), MatRef::new(&dh, n, h), true);
        add_column_sums(&dh, &mut grad[e[1].range()]);
        (loss / (n * d) as f64) as f32
    }
}

impl Model for Dae {
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(Dae { code: Vec::new(), ..self.clone() })
    }
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        crate::init::pytorch_default(&self.layout, rng)
    }
    fn forward(&mut self, params: &Params, batch: &Batch, _mode: Mode, out: &mut Outputs) -> Result<()> {
        self.check(batch)?;
        let n = batch.len();
        self.encode(params.as_slice(), &batch.x, n);
        self.logits(params.as_slice(), n, &mut out.logits);
        out.classes = self.c;
        out.features.clone_from(&self.code);
        out.feature_dim = self.h;
        Ok(())
    }
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
        let (value, _, g) = fedkit_core::forward_head(self, params, batch, mode, head)?;
        let dcode = (!g.features.is_empty()).then_some(g.features.as_slice());
        self.backward(params.as_slice(), &batch.x, batch.len(), &g.logits, dcode, grad.map(|g| g.as_mut_slice()), gx);
        Ok(value)
    }
    /// The phase's objective: denoising reconstruction (pretrain) or classification (finetune).
    fn loss_grad(&mut self, params: &mut Params, batch: &Batch, grad: &mut Params, rng: &mut RngStream) -> Result<f32> {
        self.check(batch)?;
        if self.spec.phase == Phase::Pretrain {
            return Ok(self.reconstruction(params.as_slice(), batch, grad.as_mut_slice(), rng));
        }
        check_labels(batch, self.c, "the dae model")?;
        let n = batch.len();
        self.encode(params.as_slice(), &batch.x, n);
        let mut z = Vec::new();
        self.logits(params.as_slice(), n, &mut z);
        let (loss, _) = softmax_cross_entropy(&mut z, &batch.y, self.c);
        logits_to_grad(&mut z, &batch.y, self.c);
        self.backward(params.as_slice(), &batch.x, n, &z, None, Some(grad.as_mut_slice()), None);
        Ok((loss / n.max(1) as f64) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(phase: Phase, corruption: f64) -> Box<dyn Model> {
        DaeSpec { hidden: 6, corruption, phase, freeze_encoder: false }.instantiate(&[8], 3).unwrap()
    }

    fn batch(n: usize, rng: &mut RngStream) -> Batch {
        Batch {
            x: (0..n * 8).map(|_| rng.uniform() as f32).collect(),
            y: (0..n).map(|_| rng.below(3) as u32).collect(),
            feature_shape: vec![8],
            classes: 3,
            targets: Vec::new(),
        }
    }

    // Without corruption the reconstruction loss is a deterministic function of the parameters:
    // its gradient matches central differences, and the head gets none.
    #[test]
    fn the_reconstruction_gradient_is_exact() {
        let mut m = model(Phase::Pretrain, 0.0);
        let mut rng = RngStream::new(2);
        let p = m.init(&mut rng);
        let b = batch(5, &mut rng);
        let mut g = p.zeros_like();
        m.loss_grad(&mut p.clone(), &b, &mut g, &mut RngStream::new(0)).unwrap();
        let e = p.layout().entries().to_vec();
        assert!(g.as_slice()[e[3].range()].iter().chain(&g.as_slice()[e[4].range()]).all(|&v| v == 0.0), "head");
        let mut scratch = p.zeros_like();
        for i in (0..p.len()).step_by(7).take(40) {
            let at = |v: f32, m: &mut Box<dyn Model>, s: &mut Params| {
                let mut q = p.clone();
                q.as_mut_slice()[i] = v;
                m.loss_grad(&mut q, &b, s, &mut RngStream::new(0)).unwrap() as f64
            };
            let x = p.as_slice()[i];
            let fd = (at(x + 1e-2, &mut m, &mut scratch) - at(x - 1e-2, &mut m, &mut scratch)) / 2e-2;
            assert!((fd - g.as_slice()[i] as f64).abs() < 1e-3 + 1e-2 * fd.abs(), "{i}: {fd} vs {}", g.as_slice()[i]);
        }
    }

    // Pre-training reduces the reconstruction loss of corrupted inputs; masking noise makes the
    // step depend on the stream; freezing the encoder trains the head only.
    #[test]
    fn pretraining_learns_and_the_encoder_can_be_frozen() {
        let mut m = model(Phase::Pretrain, 0.3);
        let mut rng = RngStream::new(4);
        let mut p = m.init(&mut rng);
        let b = batch(32, &mut rng);
        let mut g = p.zeros_like();
        let first = m.loss_grad(&mut p.clone(), &b, &mut g, &mut RngStream::new(9)).unwrap();
        for s in 0..300 {
            m.loss_grad(&mut p.clone(), &b, &mut g, &mut RngStream::new(s)).unwrap();
            p.axpy(-2.0, &g);
        }
        let last = m.loss_grad(&mut p.clone(), &b, &mut g, &mut RngStream::new(9)).unwrap();
        assert!(last < first - 0.02, "reconstruction loss {first} -> {last}");
        let other = m.loss_grad(&mut p.clone(), &b, &mut g.clone(), &mut RngStream::new(10)).unwrap();
        assert_ne!(other, last, "the corruption comes from the stream");
        let mut frozen =
            DaeSpec { hidden: 6, freeze_encoder: true, ..DaeSpec::default() }.instantiate(&[8], 3).unwrap();
        frozen.loss_grad(&mut p.clone(), &b, &mut g, &mut RngStream::new(0)).unwrap();
        let e = p.layout().entries().to_vec();
        assert!(
            g.as_slice()[e[0].range()].iter().all(|&v| v == 0.0)
                && g.as_slice()[e[3].range()].iter().any(|&v| v != 0.0)
        );
        assert!(DaeSpec { corruption: 1.0, ..DaeSpec::default() }.instantiate(&[8], 3).is_err());
    }
}
