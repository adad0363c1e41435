//! Parameter initialisation, following PyTorch's defaults for `nn.Linear` and `nn.Conv2d`
//! (kaiming_uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights, and the
//! same bound for each layer's bias), so that fedkit and PyTorch peers start from the same
//! distribution.

use std::sync::Arc;

use fedkit_core::params::Entry;
use fedkit_core::{Layout, ParamKind, Params, RngStream};

/// fan_in of a weight: linear weights are stored `[in, out]`, convolutions `[out, in, kh, kw]`.
fn fan_in(e: &Entry) -> usize {
    match e.shape.len() {
        2 => e.shape[0],
        n if n > 2 => e.shape[1..].iter().product(),
        _ => e.len(),
    }
}

/// PyTorch-default initialisation of every entry of `layout`: weights and the biases that follow
/// them get U(-1/sqrt(fan_in), 1/sqrt(fan_in)); norm scales 1; shifts and buffers 0, except
/// running variances (buffers named `*.running_var`), 1 as in PyTorch's batch norm.
pub fn pytorch_default(layout: &Arc<Layout>, rng: &mut RngStream) -> Params {
    let mut p = Params::zeros(layout.clone());
    let mut last_fan_in = 1;
    for e in layout.entries() {
        let v = &mut p.as_mut_slice()[e.range()];
        match e.kind {
            ParamKind::Weight | ParamKind::Bias | ParamKind::Embedding => {
                if e.kind != ParamKind::Bias {
                    last_fan_in = fan_in(e);
                }
                let bound = 1.0 / (last_fan_in.max(1) as f64).sqrt();
                v.iter_mut().for_each(|x| *x = ((2.0 * rng.uniform() - 1.0) * bound) as f32);
            }
            ParamKind::NormScale => v.fill(1.0),
            ParamKind::Buffer if e.name.ends_with(".running_var") => v.fill(1.0),
            ParamKind::NormShift | ParamKind::Buffer => v.fill(0.0),
        }
    }
    p
}
