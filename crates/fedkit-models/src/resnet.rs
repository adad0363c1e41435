//! `resnet`: the CIFAR ResNet of He, Zhang, Ren, Sun, "Deep Residual Learning for Image
//! Recognition" (CVPR 2016, Section 4.2): a 3x3 convolution with 16 filters, then three stages of
//! n basic blocks at 16, 32 and 64 filters (feature maps 32, 16, 8 for 32x32 inputs; the first
//! block of stages 2 and 3 has stride 2), global average pooling and a fully connected layer.
//! depth = 6n + 2: ResNet-20 (n = 3, 0.27 M parameters), 32, 44, 56. A basic block is
//! conv3x3 - norm - ReLU - conv3x3 - norm, plus the shortcut, then ReLU. The shortcut is the
//! paper's option A on CIFAR: identity, or, where the shape changes, the input subsampled by 2 and
//! zero-padded to the new width (no parameters). Convolutions have no bias (a norm follows each).
//!
//! Normalisation (`norm`): `"batch"` (the paper's), or `"group"`: group normalisation (Wu and He,
//! ECCV 2018) with `groups` groups, which federated training on non-IID clients often prefers
//! (Hsieh et al., ICML 2020), since it has no running statistics to disagree between clients.
//!
//! Parameters: `depth` (20), `width` (16: the first stage's filters; stages have width, 2 width,
//! 4 width), `norm` (`"batch"`), `groups` (2). Input: images `[c, h, w]` with h and w divisible
//! by 4 (CIFAR-10's `[3, 32, 32]`). Entries, PyTorch's names: `conv1.weight`, `bn1.*`,
//! `layer<s>.<b>.conv1.weight`, `layer<s>.<b>.bn1.*`, `layer<s>.<b>.conv2.weight`,
//! `layer<s>.<b>.bn2.*` (s = 1..3, b = 0..n-1), `fc.weight`, `fc.bias` (docs/models.md). Runs on
//! burn (flex), so it is much slower per sample than the native `cnn`.
//!
//! ```toml
//! [model]
//! use = "resnet"
//! depth = 20
//! width = 16
//! norm = "batch"
//! groups = 2
//! ```

use std::sync::Arc;

use burn::tensor::ops::{AvgPoolOptions, ConvOptions};
use burn::tensor::{Tensor, activation, module};
use fedkit_core::{Error, Layout, Model, ModelSpec, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

use crate::burn_adapter::{BurnModel, Leaves, Net};
use crate::nets::{batch_norm, image_shape, linear, push_batch_norm};

/// `[model] use = "resnet"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResNetSpec {
    /// 6n + 2 layers.
    pub depth: usize,
    /// Filters of the first stage.
    pub width: usize,
    /// Normalisation after every convolution.
    pub norm: ResNorm,
    /// Groups of the group normalisation (`norm = "group"`).
    pub groups: usize,
}

/// `norm` of a `resnet`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResNorm {
    #[default]
    Batch,
    Group,
}

impl Default for ResNetSpec {
    fn default() -> Self {
        ResNetSpec { depth: 20, width: 16, norm: ResNorm::Batch, groups: 2 }
    }
}

/// A convolution (its weight entry), the norm after it (its first entry) and its stride.
#[derive(Clone, Copy, Debug)]
struct ConvNorm {
    conv: usize,
    norm: usize,
    stride: usize,
}

/// One basic block: two convolutions and the widths it maps between.
#[derive(Clone, Copy, Debug)]
struct Block {
    a: ConvNorm,
    b: ConvNorm,
    c_in: usize,
    c_out: usize,
}

impl ModelSpec for ResNetSpec {
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>> {
        let [c, h, w] = image_shape("resnet", feature_shape)?;
        if self.depth < 8 || (self.depth - 2) % 6 != 0 {
            return Err(Error::config("model.depth", format!("{}: must be 6n + 2 (20, 32, 44, 56)", self.depth)));
        }
        if h % 4 != 0 || w % 4 != 0 {
            return Err(Error::config(
                "model.use",
                format!("resnet needs image sides divisible by 4, data has {h}x{w}"),
            ));
        }
        if self.width == 0 || (self.norm == ResNorm::Group && (self.groups == 0 || self.width % self.groups != 0)) {
            return Err(Error::config(
                "model.groups",
                format!("width {} must be >= 1 and divisible by groups {}", self.width, self.groups),
            ));
        }
        let mut l = Layout::new();
        let norm = self.norm;
        let conv_norm = |l: &mut Layout, prefix: &str, k: usize, c_in: usize, c_out: usize, stride: usize| {
            let conv = l.entries().len();
            l.push(&format!("{prefix}conv{k}.weight"), &[c_out, c_in, 3, 3], ParamKind::Weight);
            let name = format!("{prefix}bn{k}");
            let norm = match norm {
                ResNorm::Batch => push_batch_norm(l, &name, c_out),
                ResNorm::Group => {
                    let first = l.entries().len();
                    l.push(&format!("{name}.weight"), &[c_out], ParamKind::NormScale);
                    l.push(&format!("{name}.bias"), &[c_out], ParamKind::NormShift);
                    first
                }
            };
            ConvNorm { conv, norm, stride }
        };
        let stem = conv_norm(&mut l, "", 1, c, self.width, 1);
        let mut blocks = Vec::new();
        let mut c_in = self.width;
        for s in 0..3 {
            let c_out = self.width << s;
            for b in 0..(self.depth - 2) / 6 {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let prefix = format!("layer{}.{b}.", s + 1);
                let a = conv_norm(&mut l, &prefix, 1, c_in, c_out, stride);
                let bb = conv_norm(&mut l, &prefix, 2, c_out, c_out, 1);
                blocks.push(Block { a, b: bb, c_in, c_out });
                c_in = c_out;
            }
        }
        let fc = l.entries().len();
        l.push("fc.weight", &[c_in, classes], ParamKind::Weight);
        l.push("fc.bias", &[classes], ParamKind::Bias);
        let net =
            ResNet { layout: Arc::new(l), stem, blocks, fc, groups: (norm == ResNorm::Group).then_some(self.groups) };
        Ok(Box::new(BurnModel::new(net, [c, h, w], classes)))
    }
}

/// The network.
#[derive(Clone)]
pub struct ResNet {
    layout: Arc<Layout>,
    stem: ConvNorm,
    blocks: Vec<Block>,
    fc: usize,
    /// Group normalisation's groups; None = batch normalisation.
    groups: Option<usize>,
}

/// Group normalisation over `[n, c, h, w]`: per sample and group of c / g channels, normalise by
/// the mean and biased variance, then scale and shift per channel (entries `i`, `i + 1`).
fn group_norm(p: &mut Leaves, i: usize, x: Tensor<4>, groups: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let g = x.reshape([n, groups, (c / groups) * h * w]);
    let mean = g.clone().mean_dim(2);
    let centred = g - mean;
    let var = (centred.clone() * centred.clone()).mean_dim(2);
    let y = (centred / var.add_scalar(1e-5).sqrt()).reshape([n, c, h, w]);
    let scale = p.r1(i).reshape([1, c, 1, 1]);
    let shift = p.r1(i + 1).reshape([1, c, 1, 1]);
    y * scale + shift
}

impl ResNet {
    fn conv_norm(&self, p: &mut Leaves, cn: ConvNorm, x: Tensor<4>) -> Tensor<4> {
        let weight = p.r4(cn.conv);
        let y = module::conv2d(x, weight, None, ConvOptions::new([cn.stride, cn.stride], [1, 1], [1, 1], 1));
        match self.groups {
            None => batch_norm(p, cn.norm, y),
            Some(g) => group_norm(p, cn.norm, y, g),
        }
    }
}

/// Option A: the input subsampled by 2 (a 1x1 average pool with stride 2 picks x[:, :, ::2, ::2])
/// and zero-padded to `c_out` channels, half the new channels on each side.
fn shortcut(x: Tensor<4>, c_in: usize, c_out: usize) -> Tensor<4> {
    if c_in == c_out {
        return x;
    }
    let sub = module::avg_pool2d(x, AvgPoolOptions::new([1, 1]).with_stride([2, 2]));
    let [n, _, h, w] = sub.dims();
    let pad = (c_out - c_in) / 2;
    let device = sub.device();
    let zeros = |k: usize| Tensor::<4>::zeros([n, k, h, w], &device);
    Tensor::cat(vec![zeros(pad), sub, zeros(c_out - c_in - pad)], 1)
}

impl Net for ResNet {
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        crate::init::pytorch_default(&self.layout, rng)
    }
    fn forward(&self, p: &mut Leaves, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let mut h = activation::relu(self.conv_norm(p, self.stem, x));
        p.probe_map(|| "stem".into(), &h);
        for (k, blk) in self.blocks.iter().enumerate() {
            if k > 0 {
                p.probe_map(|| format!("block{k}"), &h);
            }
            let y = activation::relu(self.conv_norm(p, blk.a, h.clone()));
            let y = self.conv_norm(p, blk.b, y);
            h = activation::relu(y + shortcut(h, blk.c_in, blk.c_out));
        }
        let [n, c, _, _] = h.dims();
        let features = module::adaptive_avg_pool2d(h, [1, 1]).reshape([n, c]);
        let logits = linear(p, self.fc, features.clone());
        (features, logits)
    }
}
