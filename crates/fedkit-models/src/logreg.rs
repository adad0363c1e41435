//! `logreg`: multinomial logistic regression, logits = x W + b, trained with softmax
//! cross-entropy. The model of FedProx's Synthetic(alpha, beta) experiments.
//!
//! Implemented natively on flat buffers (no tensor backend): for a 60 x 10 model the backend's
//! per-operation overhead would dominate, and many-tiny-client simulations live on this model.
//!
//! Parameters: none besides the data's feature count d (W is d x C, b is C).
//!
//! ```toml
//! [model]
//! use = "logreg"
//! ```

use std::sync::Arc;

use fedkit_core::model::{check_labels, logits_to_grad, softmax_cross_entropy};
use fedkit_core::{Batch, Error, Head, Layout, Mode, Model, ModelSpec, Outputs, ParamKind, Params, Result, RngStream};

use serde::{Deserialize, Serialize};

/// `[model] use = "logreg"` (no parameters).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRegSpec {}

impl ModelSpec for LogRegSpec {
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>> {
        let d: usize = feature_shape.iter().product();
        if d == 0 || classes < 2 {
            return Err(Error::config(
                "model.use",
                format!("logreg needs features and >= 2 classes (got {feature_shape:?}, {classes})"),
            ));
        }
        let mut l = Layout::new();
        l.push("linear.weight", &[d, classes], ParamKind::Weight);
        l.push("linear.bias", &[classes], ParamKind::Bias);
        Ok(Box::new(LogReg { d, c: classes, layout: Arc::new(l), logits: Vec::new() }))
    }
}

/// Multinomial logistic regression over d features and c classes.
#[derive(Clone)]
pub struct LogReg {
    d: usize,
    c: usize,
    layout: Arc<Layout>,
    logits: Vec<f32>,
}

impl LogReg {
    /// The logits `x W + b` of every sample of `batch` into `self.logits`.
    fn logits(&mut self, w: &[f32], batch: &Batch) -> Result<()> {
        let (d, c, n) = (self.d, self.c, batch.len());
        if batch.x.len() != n * d {
            return Err(Error::Shape(format!("logreg expects {d} features, batch has {}", batch.x.len() / n.max(1))));
        }
        check_labels(batch, c, "logreg")?;
        let (wm, b) = w.split_at(d * c);
        self.logits.clear();
        self.logits.resize(n * c, 0.0);
        for i in 0..n {
            let z = &mut self.logits[i * c..(i + 1) * c];
            z.copy_from_slice(b);
            for (j, &xj) in batch.x[i * d..(i + 1) * d].iter().enumerate() {
                if xj != 0.0 {
                    let row = &wm[j * c..(j + 1) * c];
                    z.iter_mut().zip(row).for_each(|(zk, wk)| *zk += xj * wk);
                }
            }
        }
        Ok(())
    }

    /// The parameter gradient for the logit gradient `dz` (`[n, c]`) into `g` (overwritten):
    /// dW = x^T dz, db = sum_i dz_i.
    fn param_grad(&self, batch: &Batch, dz: &[f32], g: &mut [f32]) {
        let (d, c) = (self.d, self.c);
        g.fill(0.0);
        let (gw, gb) = g.split_at_mut(d * c);
        for (i, p) in dz.chunks(c).enumerate() {
            gb.iter_mut().zip(p.iter()).for_each(|(a, b)| *a += b);
            for (j, &xj) in batch.x[i * d..(i + 1) * d].iter().enumerate() {
                if xj != 0.0 {
                    gw[j * c..(j + 1) * c].iter_mut().zip(p.iter()).for_each(|(a, b)| *a += xj * b);
                }
            }
        }
    }

    /// The input gradient for the logit gradient `dz`: dx_i = W dz_i.
    fn input_grad_of(&self, w: &[f32], dz: &[f32], gx: &mut Vec<f32>) {
        let (d, c) = (self.d, self.c);
        let wm = &w[..d * c];
        gx.clear();
        gx.extend(
            dz.chunks(c).flat_map(|p| wm.chunks(c).map(move |row| row.iter().zip(p).map(|(w, v)| w * v).sum::<f32>())),
        );
    }
}

impl Model for LogReg {
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(self.clone())
    }
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        crate::init::pytorch_default(&self.layout, rng)
    }
    /// Features: the inputs themselves (the output layer is the only layer).
    fn forward(&mut self, params: &Params, batch: &Batch, _mode: Mode, out: &mut Outputs) -> Result<()> {
        self.logits(params.as_slice(), batch)?;
        out.logits.clone_from(&self.logits);
        out.classes = self.c;
        out.features.clone_from(&batch.x);
        out.feature_dim = self.d;
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
        if let Some(grad) = grad {
            self.param_grad(batch, &g.logits, grad.as_mut_slice());
        }
        if let Some(gx) = gx {
            self.input_grad_of(params.as_slice(), &g.logits, gx);
            if !g.features.is_empty() {
                gx.iter_mut().zip(&g.features).for_each(|(a, b)| *a += b);
            }
        }
        Ok(value)
    }
    fn loss_grad(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        grad: &mut Params,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        self.logits(params.as_slice(), batch)?;
        let mut z = std::mem::take(&mut self.logits);
        let (loss, _) = softmax_cross_entropy(&mut z, &batch.y, self.c);
        logits_to_grad(&mut z, &batch.y, self.c);
        self.param_grad(batch, &z, grad.as_mut_slice());
        self.logits = z;
        Ok((loss / batch.len() as f64) as f32)
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        self.logits(params.as_slice(), batch)?;
        Ok(softmax_cross_entropy(&mut self.logits, &batch.y, self.c))
    }
    /// d loss / d x_i = W (p_i - onehot(y_i)) / n.
    fn input_grad(&mut self, params: &Params, batch: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
        self.logits(params.as_slice(), batch)?;
        let mut z = std::mem::take(&mut self.logits);
        let (loss, _) = softmax_cross_entropy(&mut z, &batch.y, self.c);
        logits_to_grad(&mut z, &batch.y, self.c);
        self.input_grad_of(params.as_slice(), &z, gx);
        self.logits = z;
        Ok((loss / batch.len() as f64) as f32)
    }
}
