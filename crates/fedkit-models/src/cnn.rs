//! `cnn`: the CNN of McMahan et al. (AISTATS 2017) as used by LEAF: conv 5x5x32 (pad 2), ReLU,
//! 2x2 max-pool, conv 5x5x64 (pad 2), ReLU, 2x2 max-pool, fully connected 3136-512 (for 28x28
//! inputs), ReLU, fully connected 512-classes.
//!
//! Parameters: `channels` ([32, 64]), `hidden` (512), `norm` (`"none"`, the default, or
//! `"batch"`: batch normalisation after each convolution, before its ReLU; entries
//! `bn<i>.weight`, `.bias`, `.running_mean`, `.running_var`). Input: images `[c, h, w]` with h,
//! w divisible by 4. `backend` (`"native"`, the default, or `"burn"`): the implementation of the
//! network without normalisation; the native one (`cnn_native.rs`: im2col + gemm on one core) is
//! the same function with the same parameters, 2 to 2.5x faster than burn-flex. With
//! `norm = "batch"` the burn implementation always runs.
//!
//! ```toml
//! [model]
//! use = "cnn"
//! norm = "none"
//! backend = "native"
//! ```

use std::sync::Arc;

use burn::tensor::{Tensor, activation};
use fedkit_core::{Error, Layout, Model, ModelSpec, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

use crate::burn_adapter::{BurnModel, Leaves, Net};
use crate::cnn_native::{ConvNetDims, ConvNetNative};
use crate::nets::{Norm, batch_norm, conv, flatten, image_shape, linear, push_batch_norm, relu_pool};

/// `[model] use = "cnn"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CnnSpec {
    /// Output channels of the two convolutions.
    pub channels: [usize; 2],
    /// Width of the hidden fully connected layer.
    pub hidden: usize,
    /// Normalisation after each convolution.
    pub norm: Norm,
    /// Implementation of the network without normalisation.
    pub backend: CnnBackend,
}

/// Which implementation runs a `cnn` or a `lenet` (`backend = "native" | "burn"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CnnBackend {
    /// Native im2col + gemm forward and backward ([`crate::cnn_native`]); norm = "none" only,
    /// and for `lenet` only where its convolution outputs have even sides.
    #[default]
    Native,
    /// burn's autodiff over the flex backend.
    Burn,
}

impl Default for CnnSpec {
    fn default() -> Self {
        CnnSpec { channels: [32, 64], hidden: 512, norm: Norm::None, backend: CnnBackend::Native }
    }
}

impl ModelSpec for CnnSpec {
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>> {
        let [c, h, w] = image_shape("cnn", feature_shape)?;
        if h % 4 != 0 || w % 4 != 0 {
            return Err(Error::config("model.use", format!("cnn needs image sides divisible by 4, data has {h}x{w}")));
        }
        let [c1, c2] = self.channels;
        if c1 == 0 || c2 == 0 || self.hidden == 0 {
            return Err(Error::config("model", "channels and hidden widths must be >= 1"));
        }
        let flat = c2 * (h / 4) * (w / 4);
        let mut l = Layout::new();
        let mut convs = [(0, None); 2];
        for (k, (c_in, c_out)) in [(c, c1), (c1, c2)].into_iter().enumerate() {
            let first = l.entries().len();
            l.push(&format!("conv{}.weight", k + 1), &[c_out, c_in, 5, 5], ParamKind::Weight);
            l.push(&format!("conv{}.bias", k + 1), &[c_out], ParamKind::Bias);
            let norm = (self.norm == Norm::Batch).then(|| push_batch_norm(&mut l, &format!("bn{}", k + 1), c_out));
            convs[k] = (first, norm);
        }
        let fc = l.entries().len();
        l.push("fc1.weight", &[flat, self.hidden], ParamKind::Weight);
        l.push("fc1.bias", &[self.hidden], ParamKind::Bias);
        l.push("fc2.weight", &[self.hidden, classes], ParamKind::Weight);
        l.push("fc2.bias", &[classes], ParamKind::Bias);
        let layout = Arc::new(l);
        if self.norm == Norm::None && self.backend == CnnBackend::Native {
            let dims = ConvNetDims { c0: c, h, w, convs: [(c1, 2), (c2, 2)], hidden: vec![self.hidden], classes };
            return Ok(Box::new(ConvNetNative::new(layout, dims)?));
        }
        Ok(Box::new(BurnModel::new(Cnn { layout, convs, fc }, [c, h, w], classes)))
    }
}

/// The network.
#[derive(Clone)]
pub struct Cnn {
    layout: Arc<Layout>,
    /// Each convolution's first entry and its batch norm's first entry.
    convs: [(usize, Option<usize>); 2],
    /// The first fully connected layer's first entry.
    fc: usize,
}

impl Net for Cnn {
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        crate::init::pytorch_default(&self.layout, rng)
    }
    fn forward(&self, p: &mut Leaves, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let mut h = x;
        for (k, (w, norm)) in self.convs.into_iter().enumerate() {
            h = conv(p, w, h, 2);
            if let Some(bn) = norm {
                h = batch_norm(p, bn, h);
            }
            h = relu_pool(h);
            p.probe_map(|| format!("conv{}", k + 1), &h);
        }
        let h = activation::relu(linear(p, self.fc, flatten(h)));
        let logits = linear(p, self.fc + 2, h.clone());
        (h, logits)
    }
}
