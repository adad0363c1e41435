//! `mlp`: a multilayer perceptron with ReLU hidden layers. The default 784-200-200-10 is the
//! "2NN" of McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
//! Data" (AISTATS 2017); the input and output sizes follow the data.
//!
//! Parameters: `hidden` (list of hidden widths, default [200, 200]); `norm` (`"none"`, the
//! default, or `"batch"`: batch normalisation after each hidden linear layer, before its ReLU, as
//! FedBN's networks place it; entries `bn<i>.weight`, `.bias`, `.running_mean`, `.running_var`).
//! It has width-scaled sub-models (`Model::width_scaled`, HeteroFL's; docs/models.md).
//!
//! ```toml
//! [model]
//! use = "mlp"
//! hidden = [200, 200]
//! norm = "none"
//! ```

use std::sync::Arc;

use burn::tensor::{Tensor, activation};
use fedkit_core::{Error, Layout, Model, ModelSpec, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

use crate::burn_adapter::{BurnModel, Leaves, Net};
use crate::nets::{Norm, batch_norm, linear, push_batch_norm};

/// `[model] use = "mlp"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpSpec {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Normalisation after each hidden linear layer.
    pub norm: Norm,
}

impl Default for MlpSpec {
    fn default() -> Self {
        MlpSpec { hidden: vec![200, 200], norm: Norm::None }
    }
}

impl ModelSpec for MlpSpec {
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>> {
        if self.hidden.contains(&0) {
            return Err(Error::config("model.hidden", "widths must be >= 1"));
        }
        let d: usize = feature_shape.iter().product();
        Ok(Box::new(BurnModel::new(Mlp::new(self.clone(), d, classes, 1.0), [1, 1, d], classes)))
    }
}

/// One linear layer: the index of its weight entry, and of its batch norm's first entry.
#[derive(Clone)]
struct Layer {
    linear: usize,
    norm: Option<usize>,
}

/// The network: linear layers with (batch norm and) ReLU between them.
#[derive(Clone)]
pub struct Mlp {
    spec: MlpSpec,
    inputs: usize,
    classes: usize,
    /// The width rate of a HeteroFL sub-model (1: the full model, no Scaler).
    rate: f64,
    layout: Arc<Layout>,
    layers: Vec<Layer>,
}

impl Mlp {
    fn new(spec: MlpSpec, inputs: usize, classes: usize, rate: f64) -> Mlp {
        let mut sizes = vec![inputs];
        sizes.extend(spec.hidden.iter().map(|&h| scaled_width(h, rate)));
        sizes.push(classes);
        let mut l = Layout::new();
        let mut layers = Vec::new();
        for (i, w) in sizes.windows(2).enumerate() {
            let linear = l.entries().len();
            l.push(&format!("fc{}.weight", i + 1), &[w[0], w[1]], ParamKind::Weight);
            l.push(&format!("fc{}.bias", i + 1), &[w[1]], ParamKind::Bias);
            let hidden = i + 2 < sizes.len();
            let norm =
                (hidden && spec.norm == Norm::Batch).then(|| push_batch_norm(&mut l, &format!("bn{}", i + 1), w[1]));
            layers.push(Layer { linear, norm });
        }
        Mlp { spec, inputs, classes, rate, layout: Arc::new(l), layers }
    }
}

/// A hidden width scaled by `rate`: ceil(rate * h), at least 1 (HeteroFL's rounding).
pub fn scaled_width(h: usize, rate: f64) -> usize {
    ((h as f64 * rate).ceil() as usize).clamp(1, h)
}

impl Net for Mlp {
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        crate::init::pytorch_default(&self.layout, rng)
    }
    fn forward(&self, p: &mut Leaves, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let mut h = crate::nets::flatten(x);
        let last = self.layers.len() - 1;
        let scaler = p.training() && self.rate < 1.0;
        for (k, layer) in self.layers[..last].iter().enumerate() {
            if k > 0 {
                p.probe(|| format!("fc{k}"), &h);
            }
            h = linear(p, layer.linear, h);
            if scaler {
                h = h.div_scalar(self.rate as f32);
            }
            if let Some(bn) = layer.norm {
                h = batch_norm(p, bn, h);
            }
            h = activation::relu(h);
        }
        let logits = linear(p, self.layers[last].linear, h.clone());
        (h, logits)
    }
    fn width_scaled(&self, rate: f64) -> Option<Result<Self>> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Some(Err(Error::Method(format!("a width rate must be in (0, 1], got {rate}"))));
        }
        Some(Ok(Mlp::new(self.spec.clone(), self.inputs, self.classes, self.rate * rate)))
    }
}
