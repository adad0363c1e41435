//! `qsgd`: stochastic quantisation to s levels, Alistarh, Grubic, Li, Tomioka, Vojnovic, "QSGD:
//! Communication-Efficient SGD via Gradient Quantization and Encoding", NeurIPS 2017.
//!
//! Q_s(x)_i = ||x||_2 sign(x_i) xi_i(x, s), where with l = floor(s |x_i| / ||x||_2), xi_i is
//! (l + 1) / s with probability s |x_i| / ||x||_2 - l and l / s otherwise: unbiased, with
//! variance at most min(d / s^2, sqrt(d) / s) ||x||_2^2 (the paper's Lemma 3.1). The levels
//! travel in Elias-gamma code with a sign bit each, the norm as f32. Departure: the paper's
//! Elias coding also run-length-codes the zero levels, which spends less than this code's one
//! bit a zero when most levels are 0.
//! The rounding draws from the client's stream `qsgd`.
//!
//! Parameters: `levels` (s >= 1, default 16), `bucket` (coordinates per bucket, each with its
//! own norm, as the paper's bucketed variant; 0, the default, for one bucket: the whole update).
//!
//! ```toml
//! [[pipeline]]
//! use = "qsgd"
//! levels = 16
//! bucket = 0
//! ```

use fedkit_core::wire::Block;
use fedkit_core::{ClientCtx, Error, Extras, Result, RngStream, Stage, Update};
use serde::{Deserialize, Serialize};

use super::send;

/// QSGD.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Qsgd {
    pub levels: u32,
    pub bucket: usize,
}

impl Default for Qsgd {
    fn default() -> Self {
        Qsgd { levels: 16, bucket: 0 }
    }
}

impl Qsgd {
    pub fn validated(self) -> Result<Self> {
        if self.levels == 0 || self.levels > fedkit_core::wire::MAX_QSGD_LEVELS {
            return Err(Error::config("levels", format!("must be in 1..=2^30, got {}", self.levels)));
        }
        Ok(self)
    }
}

/// The QSGD block of `x` at `s` levels.
pub fn quantize(x: &[f32], s: u32, rng: &mut RngStream) -> Block {
    let norm = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let levels = if norm == 0.0 {
        vec![0; x.len()]
    } else {
        x.iter()
            .map(|&v| {
                let r = s as f64 * (v.abs() as f64) / norm;
                let l = r.floor();
                let l = (l + f64::from(rng.uniform() < r - l)).min(s as f64) as i32;
                if v < 0.0 { -l } else { l }
            })
            .collect()
    };
    Block::Qsgd { s, norm: norm as f32, levels }
}

/// One QSGD block a bucket of `bucket` coordinates (0: one bucket).
pub fn quantize_buckets(x: &[f32], s: u32, bucket: usize, rng: &mut RngStream) -> Vec<Block> {
    let size = if bucket == 0 { x.len().max(1) } else { bucket };
    x.chunks(size).map(|c| quantize(c, s, rng)).collect()
}

impl Stage for Qsgd {
    fn on_update(&self, cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        let b = quantize_buckets(u.delta.as_slice(), self.levels, self.bucket, &mut cx.rng("qsgd"));
        send(u, b)
    }
}
