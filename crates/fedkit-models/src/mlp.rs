//! `mlp`: a multilayer perceptron with ReLU hidden layers. The default 784-200-200-10 is the
//! "2NN" of McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
//! Data" (AISTATS 2017); the input and output sizes follow the data.
//!
//! Parameters: `hidden` (list of hidden widths, default [200, 200]); `norm` (`"none"`, the
//! default, or `"batch"`: batch normalisation after each hidden linear layer, before its ReLU, as
//! FedBN's networks place it; entries `bn<i>.weight`, `.bias`, `.running_mean`, `.running_var`).
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
        let mut sizes = vec![d];
        sizes.extend(&self.hidden);
        sizes.push(classes);
        let mut l = Layout::new();
        let mut layers = Vec::new();
        for (i, w) in sizes.windows(2).enumerate() {
            let linear = l.entries().len();
            l.push(&format!("fc{}.weight", i + 1), &[w[0], w[1]], ParamKind::Weight);
            l.push(&format!("fc{}.bias", i + 1), &[w[1]], ParamKind::Bias);
            let hidden = i + 2 < sizes.len();
            let norm =
                (hidden && self.norm == Norm::Batch).then(|| push_batch_norm(&mut l, &format!("bn{}", i + 1), w[1]));
            layers.push(Layer { linear, norm });
        }
        let net = Mlp { layout: Arc::new(l), layers };
        Ok(Box::new(BurnModel::new(net, [1, 1, d], classes)))
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
    layout: Arc<Layout>,
    layers: Vec<Layer>,
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
        for layer in &self.layers[..last] {
            h = linear(p, layer.linear, h);
            if let Some(bn) = layer.norm {
                h = batch_norm(p, bn, h);
            }
            h = activation::relu(h);
        }
        let logits = linear(p, self.layers[last].linear, h.clone());
        (h, logits)
    }
}
