//! Binary and fake-quantised weights for every model (`[model] quant = { ... }`, issue 14): a
//! wrapper that quantises the weight tensors (`ParamKind::Weight`) before every forward pass,
//! computes the gradient at the quantised weights, and hands it to the real-valued weights with
//! a straight-through estimator (identity inside the clip range, zero outside). The optimiser
//! updates the real-valued accumulators; biases and normalisation parameters stay real.
//!
//! - `weights = "binary"`: BinaryConnect (Courbariaux, Bengio, David, NeurIPS 2015). Each
//!   weight of a tensor is ±H with H = sqrt(1.5 / (fan_in + fan_out)) (the reference code's
//!   scale, half the Glorot bound), deterministically by sign (w >= 0: +H) or, with
//!   `stochastic = true`, +H with probability hard_sigmoid(w / H) = clip((w / H + 1) / 2, 0, 1)
//!   in training (evaluation uses the sign). The straight-through window is |w| <= H; the paper
//!   also clips the accumulators to [-H, H] after each step, which is not done here (weights
//!   outside the window stop moving instead).
//! - `weights = "bits"`, `bits = k` (2 to 8): symmetric uniform quantisation of each tensor to
//!   2^(k-1) - 1 levels per sign with the scale max|w| (the weight half of QNN, Hubara et al.,
//!   JMLR 2018; activations are not quantised).
//!
//! ```toml
//! [model]
//! use = "mlp"
//! hidden = [300, 100]
//! quant = { weights = "binary", stochastic = false }
//! ```

use std::ops::Range;
use std::sync::Arc;

use fedkit_core::{Batch, Error, Head, Layout, Mode, Model, Outputs, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

/// `[model] quant`: how the weights are quantised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    /// `binary` or `bits`.
    pub weights: WeightQuant,
    /// Binary only: stochastic binarisation in training.
    #[serde(default)]
    pub stochastic: bool,
    /// Bits only: bits per weight, 2 to 8.
    #[serde(default = "default_bits")]
    pub bits: u8,
}

fn default_bits() -> u8 {
    4
}

/// The weight quantiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightQuant {
    Binary,
    Bits,
}

impl QuantConfig {
    /// Parse and check `[model] quant`.
    pub fn from_value(v: &toml::Value) -> Result<QuantConfig> {
        let q: QuantConfig = v.clone().try_into().map_err(|e: toml::de::Error| {
            Error::config(
                "model.quant",
                format!(
                    "{}; expected e.g. {{ weights = \"binary\" }} or {{ weights = \"bits\", bits = 4 }}",
                    e.message()
                ),
            )
        })?;
        if q.weights == WeightQuant::Bits && !(2..=8).contains(&q.bits) {
            return Err(Error::config("model.quant.bits", format!("must be 2 to 8, got {}", q.bits)));
        }
        Ok(q)
    }
}

/// A model whose weight tensors are quantised in every forward pass.
pub struct QuantizedModel {
    inner: Box<dyn Model>,
    q: QuantConfig,
    /// Each weight tensor's range and its BinaryConnect scale H.
    tensors: Vec<(Range<usize>, f32)>,
}

impl QuantizedModel {
    /// Wrap `inner`.
    pub fn new(inner: Box<dyn Model>, q: QuantConfig) -> QuantizedModel {
        let layout = inner.layout();
        let tensors = layout
            .entries()
            .iter()
            .filter(|e| e.kind == ParamKind::Weight)
            .map(|e| (e.range(), binary_scale(&e.shape)))
            .collect();
        QuantizedModel { inner, q, tensors }
    }

    /// The quantised copy of `w` (training: stochastic binarisation draws from `rng`), and the
    /// straight-through window: true where the gradient passes.
    fn quantise(&self, w: &Params, rng: Option<&mut RngStream>) -> (Params, Vec<bool>) {
        let mut out = w.clone();
        let mut pass = vec![true; w.len()];
        let mut rng = rng;
        for (r, h) in &self.tensors {
            let src = &w.as_slice()[r.clone()];
            let dst = &mut out.as_mut_slice()[r.clone()];
            match self.q.weights {
                WeightQuant::Binary => {
                    for (i, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
                        let plus = match (self.q.stochastic, rng.as_deref_mut()) {
                            (true, Some(g)) => g.uniform() < (((v / h) as f64 + 1.0) / 2.0).clamp(0.0, 1.0),
                            _ => v >= 0.0,
                        };
                        *d = if plus { *h } else { -*h };
                        pass[r.start + i] = v.abs() <= *h;
                    }
                }
                WeightQuant::Bits => {
                    let levels = ((1u32 << (self.q.bits - 1)) - 1) as f32;
                    let scale = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    if scale > 0.0 {
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = (v / scale * levels).round() / levels * scale;
                        }
                    }
                }
            }
        }
        (out, pass)
    }
}

/// BinaryConnect's H for a weight tensor: sqrt(1.5 / (fan_in + fan_out)); linear weights are
/// `[in, out]`, convolutions `[out, in, k, k]`.
fn binary_scale(shape: &[usize]) -> f32 {
    let (fan_in, fan_out) = match shape {
        [i, o] => (*i, *o),
        [o, i, rest @ ..] => {
            let k: usize = rest.iter().product();
            (i * k, o * k)
        }
        [n] => (*n, 1),
        _ => (1, 1),
    };
    (1.5 / (fan_in + fan_out).max(1) as f64).sqrt() as f32
}

impl Model for QuantizedModel {
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(QuantizedModel { inner: self.inner.clone_box(), q: self.q.clone(), tensors: self.tensors.clone() })
    }
    fn layout(&self) -> Arc<Layout> {
        self.inner.layout()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        self.inner.init(rng)
    }
    fn per_position(&self) -> bool {
        self.inner.per_position()
    }
    fn forward(&mut self, params: &Params, batch: &Batch, mode: Mode, out: &mut Outputs) -> Result<()> {
        let (wq, _) = self.quantise(params, None);
        self.inner.forward(&wq, batch, mode, out)
    }
    fn activations(&mut self, params: &Params, batch: &Batch) -> Result<Vec<fedkit_core::Activation>> {
        let (wq, _) = self.quantise(params, None);
        self.inner.activations(&wq, batch)
    }
    fn vjp(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        mode: Mode,
        head: &mut dyn Head,
        grad: Option<&mut Params>,
        gx: Option<&mut Vec<f32>>,
        rng: &mut RngStream,
    ) -> Result<f32> {
        let training = mode != Mode::Eval;
        let (mut wq, pass) = self.quantise(params, training.then_some(&mut *rng));
        let value = match grad {
            Some(g) => {
                let v = self.inner.vjp(&mut wq, batch, mode, head, Some(&mut *g), gx, rng)?;
                straight_through(g, &pass);
                v
            }
            None => self.inner.vjp(&mut wq, batch, mode, head, None, gx, rng)?,
        };
        // Running statistics a training forward wrote belong to the real parameters.
        for e in params.layout().clone().entries().iter().filter(|e| e.kind == ParamKind::Buffer) {
            let r = e.range();
            params.as_mut_slice()[r.clone()].copy_from_slice(&wq.as_slice()[r]);
        }
        Ok(value)
    }
}

/// Zero the gradient outside the straight-through window (`pass[i]` false).
fn straight_through(g: &mut Params, pass: &[bool]) {
    g.as_mut_slice().iter_mut().zip(pass).filter(|(_, p)| !**p).for_each(|(v, _)| *v = 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::{CrossEntropy, ModelSpec};

    fn mlp() -> Box<dyn Model> {
        let spec = crate::mlp::MlpSpec { hidden: vec![6], ..Default::default() };
        spec.instantiate(&[5], 3).unwrap()
    }

    fn batch() -> Batch {
        let mut rng = RngStream::new(2);
        Batch {
            x: (0..20).map(|_| rng.normal() as f32).collect(),
            y: vec![0, 1, 2, 1],
            feature_shape: vec![5],
            classes: 3,
            targets: Vec::new(),
        }
    }

    fn binary(stochastic: bool) -> QuantConfig {
        QuantConfig { weights: WeightQuant::Binary, stochastic, bits: 4 }
    }

    // BinaryConnect's forward weights are ±H while the accumulators stay real, and the
    // straight-through gradient is the gradient at the binary weights inside |w| <= H, zero
    // outside.
    #[test]
    fn binary_forward_weights_and_the_straight_through_gradient() {
        let mut q = QuantizedModel::new(mlp(), binary(false));
        let mut w = q.init(&mut RngStream::new(1));
        // Push a few weights outside the window.
        w.as_mut_slice()[0] = 5.0;
        w.as_mut_slice()[1] = -5.0;
        let (wq, pass) = q.quantise(&w, None);
        for (r, h) in &q.tensors {
            assert!(wq.as_slice()[r.clone()].iter().all(|&v| v == *h || v == -*h));
        }
        assert!(w.as_slice().iter().any(|&v| v != 0.0 && v.abs() != q.tensors[0].1), "accumulators are real");
        assert!(!pass[0] && !pass[1] && pass[2..q.tensors[0].0.end].iter().any(|p| *p));
        let b = batch();
        let mut g = w.zeros_like();
        q.vjp(&mut w.clone(), &b, Mode::TrainFrozen, &mut CrossEntropy, Some(&mut g), None, &mut RngStream::new(0))
            .unwrap();
        let mut inner = mlp();
        let mut want = w.zeros_like();
        inner
            .vjp(
                &mut wq.clone(),
                &b,
                Mode::TrainFrozen,
                &mut CrossEntropy,
                Some(&mut want),
                None,
                &mut RngStream::new(0),
            )
            .unwrap();
        for i in 0..w.len() {
            let expect = if pass[i] { want.as_slice()[i] } else { 0.0 };
            assert_eq!(g.as_slice()[i].to_bits(), expect.to_bits(), "coordinate {i}");
        }
    }

    #[test]
    fn stochastic_binarisation_follows_the_hard_sigmoid() {
        let q = QuantizedModel::new(mlp(), binary(true));
        let mut w = q.init(&mut RngStream::new(1));
        let (r, h) = q.tensors[0].clone();
        w.as_mut_slice()[r.start] = 0.5 * h; // p(+H) = 0.75
        let mut rng = RngStream::new(9);
        let plus = (0..4000).filter(|_| q.quantise(&w, Some(&mut rng)).0.as_slice()[r.start] > 0.0).count();
        assert!((plus as f64 / 4000.0 - 0.75).abs() < 0.03, "{plus}");
    }

    #[test]
    fn k_bit_weights_take_at_most_2k_minus_1_values_within_a_step() {
        let q = QuantizedModel::new(mlp(), QuantConfig { weights: WeightQuant::Bits, stochastic: false, bits: 3 });
        let w = q.init(&mut RngStream::new(1));
        let (wq, _) = q.quantise(&w, None);
        for (r, _) in &q.tensors {
            let scale = w.as_slice()[r.clone()].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let mut vals: Vec<i64> =
                wq.as_slice()[r.clone()].iter().map(|v| (v / scale * 3.0).round() as i64).collect();
            vals.sort_unstable();
            vals.dedup();
            assert!(vals.len() <= 7, "{vals:?}");
            for (a, b) in w.as_slice()[r.clone()].iter().zip(&wq.as_slice()[r.clone()]) {
                assert!((a - b).abs() <= scale / 3.0 / 2.0 + 1e-6);
            }
        }
        let e = QuantConfig::from_value(
            &toml::Value::try_from(QuantConfig { weights: WeightQuant::Bits, stochastic: false, bits: 9 }).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.quant.bits"), "{e}");
    }
}
