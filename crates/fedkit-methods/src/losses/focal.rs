//! `focal`: the focal loss, Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object
//! Detection", ICCV 2017: FL(p_t) = -(1 - p_t)^gamma log p_t with p_t = softmax(z)_y, which
//! down-weights well-classified samples (gamma = 0 is the cross-entropy). Its gradient with
//! respect to the logits is [gamma (1 - p_t)^(gamma - 1) p_t log p_t - (1 - p_t)^gamma]
//! (onehot(y) - p) per sample, averaged over the batch.
//!
//! Parameters: `gamma` (the focusing parameter gamma >= 0, default 2 as in the paper).
//!
//! ```toml
//! [loss]
//! use = "focal"
//! gamma = 2.0
//! ```

use fedkit_core::model::check_labels;
use fedkit_core::{Batch, Error, Head, Loss, LossRun, OutputGrads, Outputs, Result};
use serde::{Deserialize, Serialize};

/// The focal loss.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Focal {
    /// The focusing parameter gamma.
    pub gamma: f64,
}

impl Default for Focal {
    fn default() -> Self {
        Focal { gamma: 2.0 }
    }
}

impl Focal {
    /// Check gamma.
    pub fn validated(self) -> Result<Self> {
        if !(self.gamma >= 0.0 && self.gamma.is_finite()) {
            return Err(Error::config("gamma", format!("must be a finite number >= 0, got {}", self.gamma)));
        }
        Ok(self)
    }
}

impl Head for Focal {
    fn value_grad(&mut self, out: &Outputs, batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        let (c, n) = (out.classes, batch.len().max(1) as f64);
        check_labels(batch, c, "the focal loss (use the default cross-entropy)")?;
        g.features.clear();
        g.logits.clear();
        g.logits.resize(out.logits.len(), 0.0);
        let mut total = 0.0;
        for (i, &y) in batch.y.iter().enumerate() {
            let z = out.logits_of(i);
            let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let e: Vec<f64> = z.iter().map(|&v| (v as f64 - max).exp()).collect();
            let s: f64 = e.iter().sum();
            let y = y as usize;
            let log_pt = (z[y] as f64 - max) - s.ln();
            let pt = log_pt.exp();
            let q = (1.0 - pt).max(0.0);
            total += -q.powf(self.gamma) * log_pt;
            // d FL / d z_k = a (delta_ky - p_k), a = gamma q^(gamma-1) p_t log p_t - q^gamma
            let a = if self.gamma == 0.0 {
                -1.0
            } else {
                self.gamma * q.powf(self.gamma - 1.0) * pt * log_pt - q.powf(self.gamma)
            };
            for (k, gk) in g.logits[i * c..(i + 1) * c].iter_mut().enumerate() {
                let p = e[k] / s;
                *gk = (a * ((k == y) as u8 as f64 - p) / n) as f32;
            }
        }
        Ok((total / n) as f32)
    }
}

impl Loss for Focal {
    fn head(&self, _run: &mut LossRun) -> Result<Box<dyn Head + Send + '_>> {
        Ok(Box::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::testing::{check_head_gradient, outputs};
    use fedkit_core::CrossEntropy;

    #[test]
    fn gamma_zero_is_cross_entropy_and_gradients_are_exact() {
        let (out, batch) = outputs(6, 5, 11);
        let (mut a, mut b) = (OutputGrads::default(), OutputGrads::default());
        let f = Focal { gamma: 0.0 }.value_grad(&out, &batch, &mut a).unwrap();
        let ce = CrossEntropy.value_grad(&out, &batch, &mut b).unwrap();
        assert!((f - ce).abs() < 1e-5);
        a.logits.iter().zip(&b.logits).for_each(|(x, y)| assert!((x - y).abs() < 1e-6));
        for gamma in [0.5, 2.0, 5.0] {
            check_head_gradient(&mut Focal { gamma }, &out, &batch);
        }
    }

    #[test]
    fn well_classified_samples_are_down_weighted() {
        // One confident correct sample: focal loss is (1 - p)^2 times its cross-entropy.
        let out = Outputs { logits: vec![4.0, 0.0], classes: 2, features: vec![0.0], feature_dim: 1 };
        let batch = Batch { x: vec![0.0], y: vec![0], feature_shape: vec![1], classes: 2, targets: Vec::new() };
        let mut g = OutputGrads::default();
        let fl = Focal { gamma: 2.0 }.value_grad(&out, &batch, &mut g).unwrap() as f64;
        let p = 1.0 / (1.0 + (-4.0f64).exp());
        assert!((fl - (1.0 - p).powi(2) * -p.ln()).abs() < 1e-7);
        assert!(Focal { gamma: -1.0 }.validated().is_err());
    }
}
