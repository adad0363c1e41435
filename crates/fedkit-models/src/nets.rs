//! Shared building blocks of the burn networks: layers as functions of [`Leaves`] entries.

use burn::tensor::{Tensor, activation, module, ops::ConvOptions, ops::MaxPoolOptions};
use fedkit_core::{Layout, ParamKind};
use serde::{Deserialize, Serialize};

use crate::burn_adapter::Leaves;

/// Normalisation layers of a network (`norm = "none" | "batch"` in a `[model]` table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// No normalisation.
    #[default]
    None,
    /// Batch normalisation ([`batch_norm`]).
    Batch,
}

/// Batch norm's momentum for the running statistics and the epsilon added to the variance
/// (PyTorch's defaults).
const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;

/// Append the four entries of a batch norm layer over `features` channels, PyTorch's names and
/// order: `<name>.weight` (NormScale), `<name>.bias` (NormShift), `<name>.running_mean` and
/// `<name>.running_var` (Buffer). Returns the index of the first, for [`batch_norm`].
pub fn push_batch_norm(l: &mut Layout, name: &str, features: usize) -> usize {
    let first = l.entries().len();
    l.push(&format!("{name}.weight"), &[features], ParamKind::NormScale);
    l.push(&format!("{name}.bias"), &[features], ParamKind::NormShift);
    l.push(&format!("{name}.running_mean"), &[features], ParamKind::Buffer);
    l.push(&format!("{name}.running_var"), &[features], ParamKind::Buffer);
    first
}

/// Batch normalisation (Ioffe and Szegedy, ICML 2015) with PyTorch's semantics over dimension 1
/// of `[n, features]` or `[n, c, h, w]` inputs, entries `i` (scale), `i + 1` (shift), `i + 2`
/// (running mean), `i + 3` (running variance), as laid out by [`push_batch_norm`].
///
/// Training mode normalises with the batch mean and biased variance (over the batch and, for
/// images, the spatial positions: m values per channel) and records the running statistics
/// `r <- (1 - 0.1) r + 0.1 s`, with the unbiased variance `var * m / (m - 1)`; a batch with one
/// value per channel (m = 1; PyTorch refuses it) leaves them unchanged. Evaluation mode
/// normalises with the running statistics. eps = 1e-5.
pub fn batch_norm<const D: usize>(p: &mut Leaves, i: usize, x: Tensor<D>) -> Tensor<D> {
    let (scale, shift) = (p.r1(i), p.r1(i + 1));
    let (running_mean, running_var) = (p.buffer(i + 2), p.buffer(i + 3));
    if !p.training() {
        return module::batch_norm(x, scale, shift, running_mean, running_var, BN_EPS);
    }
    let dims = x.dims();
    let m = dims.iter().product::<usize>() / dims[1].max(1);
    let out = module::batch_norm_train(x, scale, shift, BN_EPS);
    if m > 1 {
        let keep = 1.0 - BN_MOMENTUM;
        let mean = running_mean.mul_scalar(keep).add(out.mean.detach().mul_scalar(BN_MOMENTUM));
        let unbiased = out.variance.detach().mul_scalar(m as f64 / (m - 1) as f64);
        let var = running_var.mul_scalar(keep).add(unbiased.mul_scalar(BN_MOMENTUM));
        p.write_buffer(i + 2, mean);
        p.write_buffer(i + 3, var);
    }
    out.output
}

/// `x W + b` for layout entries `w` (`[in, out]`) and `w + 1` (bias).
pub fn linear(p: &mut Leaves, w: usize, x: Tensor<2>) -> Tensor<2> {
    let weight = p.r2(w);
    let bias = p.r1(w + 1);
    module::linear(x, weight, Some(bias))
}

/// Stride-1 convolution with `pad` zero padding, entries `w` (`[out, in, k, k]`) and `w + 1`.
pub fn conv(p: &mut Leaves, w: usize, x: Tensor<4>, pad: usize) -> Tensor<4> {
    let weight = p.r4(w);
    let bias = p.r1(w + 1);
    module::conv2d(x, weight, Some(bias), ConvOptions::new([1, 1], [pad, pad], [1, 1], 1))
}

/// ReLU then 2x2 max pooling.
pub fn relu_pool(x: Tensor<4>) -> Tensor<4> {
    module::max_pool2d(activation::relu(x), MaxPoolOptions::new([2, 2]))
}

/// Flatten `[n, ...]` to `[n, rest]`.
pub fn flatten(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c * h * w])
}

/// The `[c, h, w]` of image data, or a clear error naming the model.
pub fn image_shape(model: &str, shape: &[usize]) -> fedkit_core::Result<[usize; 3]> {
    match shape {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(fedkit_core::Error::config(
            "model.use",
            format!(
                "{model} needs image samples [channels, height, width]; the data's samples have shape {shape:?} (use mlp or logreg)"
            ),
        )),
    }
}
