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

use fedkit_core::{Batch, Error, Layout, Model, ModelSpec, ParamKind, Params, Result, RngStream};
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
    /// Softmax probabilities of every sample of `batch` into `self.logits`; returns summed
    /// loss and correct count.
    fn forward(&mut self, w: &[f32], batch: &Batch) -> Result<(f64, usize)> {
        let (d, c, n) = (self.d, self.c, batch.len());
        if batch.x.len() != n * d {
            return Err(Error::Shape(format!("logreg expects {d} features, batch has {}", batch.x.len() / n.max(1))));
        }
        let (wm, b) = w.split_at(d * c);
        self.logits.clear();
        self.logits.resize(n * c, 0.0);
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for i in 0..n {
            let z = &mut self.logits[i * c..(i + 1) * c];
            z.copy_from_slice(b);
            for (j, &xj) in batch.x[i * d..(i + 1) * d].iter().enumerate() {
                if xj != 0.0 {
                    let row = &wm[j * c..(j + 1) * c];
                    z.iter_mut().zip(row).for_each(|(zk, wk)| *zk += xj * wk);
                }
            }
            let y = batch.y[i] as usize;
            let (arg, max) =
                z.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (k, &v)| if v > a.1 { (k, v) } else { a });
            correct += (arg == y) as usize;
            // -log softmax(z)_y = log sum exp(z - max) - (z_y - max), stable for large logit gaps
            let zy = z[y] - max;
            let mut s = 0.0f32;
            z.iter_mut().for_each(|v| {
                *v = (*v - max).exp();
                s += *v;
            });
            loss += (s.ln() - zy) as f64;
            z.iter_mut().for_each(|v| *v /= s);
        }
        Ok((loss, correct))
    }

    /// After [`LogReg::forward`]: turn the probabilities in `self.logits` into the gradient of the
    /// mean loss with respect to the logits, (p_i - onehot(y_i)) / n.
    fn logit_grads(&mut self, batch: &Batch) {
        let (c, inv) = (self.c, 1.0 / batch.len() as f32);
        for (p, &y) in self.logits.chunks_mut(c).zip(&batch.y) {
            p[y as usize] -= 1.0;
            p.iter_mut().for_each(|v| *v *= inv);
        }
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
    fn loss_grad(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        grad: &mut Params,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        let (loss, _) = self.forward(params.as_slice(), batch)?;
        self.logit_grads(batch);
        let (d, c, n) = (self.d, self.c, batch.len());
        let g = grad.as_mut_slice();
        g.fill(0.0);
        let (gw, gb) = g.split_at_mut(d * c);
        for i in 0..n {
            let p = &self.logits[i * c..(i + 1) * c];
            gb.iter_mut().zip(p.iter()).for_each(|(a, b)| *a += b);
            for (j, &xj) in batch.x[i * d..(i + 1) * d].iter().enumerate() {
                if xj != 0.0 {
                    gw[j * c..(j + 1) * c].iter_mut().zip(p.iter()).for_each(|(a, b)| *a += xj * b);
                }
            }
        }
        Ok((loss / n as f64) as f32)
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        self.forward(params.as_slice(), batch)
    }
    /// d loss / d x_i = W (p_i - onehot(y_i)) / n.
    fn input_grad(&mut self, params: &Params, batch: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
        let (loss, _) = self.forward(params.as_slice(), batch)?;
        self.logit_grads(batch);
        let (d, c, n) = (self.d, self.c, batch.len());
        let wm = &params.as_slice()[..d * c];
        gx.clear();
        gx.extend(
            self.logits
                .chunks(c)
                .flat_map(|p| wm.chunks(c).map(move |row| row.iter().zip(p).map(|(w, v)| w * v).sum::<f32>())),
        );
        Ok((loss / n as f64) as f32)
    }
}
