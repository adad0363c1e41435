//! Shared building blocks of the burn networks: layers as functions of [`Leaves`] entries.

use burn::tensor::{Tensor, activation, module, ops::ConvOptions, ops::MaxPoolOptions};

use crate::burn_adapter::Leaves;

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
