//! `mlp`: a multilayer perceptron with ReLU hidden layers. The default 784-200-200-10 is the
//! "2NN" of McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
//! Data" (AISTATS 2017); the input and output sizes follow the data.
//!
//! Parameters: `hidden` (list of hidden widths, default [200, 200]).
//!
//! ```toml
//! [model]
//! use = "mlp"
//! hidden = [200, 200]
//! ```

use std::sync::Arc;

use burn::tensor::{Tensor, activation};
use fedkit_core::{Error, Layout, Model, ModelSpec, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

use crate::burn_adapter::{BurnModel, Leaves, Net};
use crate::nets::linear;

/// `[model] use = "mlp"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpSpec {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
}

impl Default for MlpSpec {
    fn default() -> Self {
        MlpSpec { hidden: vec![200, 200] }
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
        for (i, w) in sizes.windows(2).enumerate() {
            l.push(&format!("fc{}.weight", i + 1), &[w[0], w[1]], ParamKind::Weight);
            l.push(&format!("fc{}.bias", i + 1), &[w[1]], ParamKind::Bias);
        }
        let net = Mlp { layout: Arc::new(l), sizes };
        Ok(Box::new(BurnModel::new(net, [1, 1, d], classes)))
    }
}

/// The network: linear layers with ReLU between them.
#[derive(Clone)]
pub struct Mlp {
    layout: Arc<Layout>,
    sizes: Vec<usize>,
}

impl Net for Mlp {
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        crate::init::pytorch_default(&self.layout, rng)
    }
    fn forward(&self, p: &mut Leaves, x: Tensor<4>) -> Tensor<2> {
        let mut h = crate::nets::flatten(x);
        let layers = self.sizes.len() - 1;
        for i in 0..layers {
            h = linear(p, 2 * i, h);
            if i + 1 < layers {
                h = activation::relu(h);
            }
        }
        h
    }
}
