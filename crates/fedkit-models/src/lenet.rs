//! `lenet`: NIID-Bench's `SimpleCNNMNIST` (Li et al., "Federated Learning on Non-IID Data Silos:
//! An Experimental Study", ICDE 2022): conv 6@5x5, ReLU, 2x2 max-pool, conv 16@5x5, ReLU, 2x2
//! max-pool, fully connected 120, ReLU, 84, ReLU, classes. No padding: 28x28 inputs give 16x4x4.
//!
//! Parameters: `channels` ([6, 16]), `hidden` ([120, 84]).
//!
//! ```toml
//! [model]
//! use = "lenet"
//! ```

use std::sync::Arc;

use burn::tensor::{Tensor, activation};
use fedkit_core::{Error, Layout, Model, ModelSpec, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

use crate::burn_adapter::{BurnModel, Leaves, Net};
use crate::nets::{conv, flatten, image_shape, linear, relu_pool};

/// `[model] use = "lenet"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeNetSpec {
    /// Output channels of the two convolutions.
    pub channels: [usize; 2],
    /// Widths of the two hidden fully connected layers.
    pub hidden: [usize; 2],
}

impl Default for LeNetSpec {
    fn default() -> Self {
        LeNetSpec { channels: [6, 16], hidden: [120, 84] }
    }
}

impl ModelSpec for LeNetSpec {
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>> {
        let [c, h, w] = image_shape("lenet", feature_shape)?;
        // conv 5x5 (-4), pool /2, conv 5x5 (-4), pool /2; at least one output pixel must remain.
        let side = |s: usize| s.checked_sub(4).map(|v| v / 2).and_then(|v| v.checked_sub(4)).map(|v| v / 2);
        let (Some(oh @ 1..), Some(ow @ 1..)) = (side(h), side(w)) else {
            return Err(Error::config("model.use", format!("lenet needs images of at least 16x16, data has {h}x{w}")));
        };
        let [c1, c2] = self.channels;
        if c1 == 0 || c2 == 0 || self.hidden.iter().any(|&h| h == 0) {
            return Err(Error::config("model", "channels and hidden widths must be >= 1"));
        }
        let [h1, h2] = self.hidden;
        let mut l = Layout::new();
        l.push("conv1.weight", &[c1, c, 5, 5], ParamKind::Weight);
        l.push("conv1.bias", &[c1], ParamKind::Bias);
        l.push("conv2.weight", &[c2, c1, 5, 5], ParamKind::Weight);
        l.push("conv2.bias", &[c2], ParamKind::Bias);
        l.push("fc1.weight", &[c2 * oh * ow, h1], ParamKind::Weight);
        l.push("fc1.bias", &[h1], ParamKind::Bias);
        l.push("fc2.weight", &[h1, h2], ParamKind::Weight);
        l.push("fc2.bias", &[h2], ParamKind::Bias);
        l.push("fc3.weight", &[h2, classes], ParamKind::Weight);
        l.push("fc3.bias", &[classes], ParamKind::Bias);
        Ok(Box::new(BurnModel::new(LeNet { layout: Arc::new(l) }, [c, h, w], classes)))
    }
}

/// The network.
#[derive(Clone)]
pub struct LeNet {
    layout: Arc<Layout>,
}

impl Net for LeNet {
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        crate::init::pytorch_default(&self.layout, rng)
    }
    fn forward(&self, p: &mut Leaves, x: Tensor<4>) -> Tensor<2> {
        let h = relu_pool(conv(p, 0, x, 0));
        let h = relu_pool(conv(p, 2, h, 0));
        let h = activation::relu(linear(p, 4, flatten(h)));
        let h = activation::relu(linear(p, 6, h));
        linear(p, 8, h)
    }
}
