//! `lenet`: NIID-Bench's `SimpleCNNMNIST` (Li et al., "Federated Learning on Non-IID Data Silos:
//! An Experimental Study", ICDE 2022): conv 6@5x5, ReLU, 2x2 max-pool, conv 16@5x5, ReLU, 2x2
//! max-pool, fully connected 120, ReLU, 84, ReLU, classes. No padding: 28x28 inputs give 16x4x4.
//!
//! Parameters: `channels` ([6, 16]), `hidden` ([120, 84]). Input: images `[c, h, w]` of at least
//! 16x16. `backend` (`"native"`, the default, or `"burn"`): the implementation; the native one
//! (`cnn_native.rs`, shared with `cnn`: im2col + gemm on one core) is the same function with the
//! same parameters. It needs both convolution outputs to have even sides (28x28 inputs: 24, then
//! 8; 32x32: 28, then 10); other sizes run on burn, whose pooling drops an odd last row or column.
//!
//! ```toml
//! [model]
//! use = "lenet"
//! backend = "native"
//! ```

use std::sync::Arc;

use burn::tensor::{Tensor, activation};
use fedkit_core::{Error, Layout, Model, ModelSpec, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

use crate::burn_adapter::{BurnModel, Leaves, Net};
use crate::cnn::CnnBackend;
use crate::cnn_native::{ConvNetDims, ConvNetNative};
use crate::nets::{conv, flatten, image_shape, linear, relu_pool};

/// `[model] use = "lenet"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeNetSpec {
    /// Output channels of the two convolutions.
    pub channels: [usize; 2],
    /// Widths of the two hidden fully connected layers.
    pub hidden: [usize; 2],
    /// Implementation: native (where the sizes allow it) or burn.
    pub backend: CnnBackend,
}

impl Default for LeNetSpec {
    fn default() -> Self {
        LeNetSpec { channels: [6, 16], hidden: [120, 84], backend: CnnBackend::Native }
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
        let layout = Arc::new(l);
        let dims = ConvNetDims { c0: c, h, w, convs: [(c1, 0), (c2, 0)], hidden: vec![h1, h2], classes };
        if self.backend == CnnBackend::Native && dims.pools_evenly() {
            return Ok(Box::new(ConvNetNative::new(layout, dims)?));
        }
        Ok(Box::new(BurnModel::new(LeNet { layout }, [c, h, w], classes)))
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
    fn forward(&self, p: &mut Leaves, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let h = relu_pool(conv(p, 0, x, 0));
        p.probe_map(|| "conv1".into(), &h);
        let h = relu_pool(conv(p, 2, h, 0));
        p.probe_map(|| "conv2".into(), &h);
        let h = activation::relu(linear(p, 4, flatten(h)));
        p.probe(|| "fc1".into(), &h);
        let h = activation::relu(linear(p, 6, h));
        let logits = linear(p, 8, h.clone());
        (h, logits)
    }
}
