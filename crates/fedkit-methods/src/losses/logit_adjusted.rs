//! `logit_adjusted`: logit adjustment for long-tailed labels, Menon, Jayasumana, Rawat, Jain,
//! Veit, Kumar, "Long-Tail Learning via Logit Adjustment", ICLR 2021.
//!
//! With the training label prior pi (class frequencies), the balanced error is minimised by
//! argmax_y f_y(x) - tau log pi_y. Two ways to get there:
//! - `mode = "loss"` (the logit-adjusted loss, the paper's eq. 10): train on
//!   -log [ exp(f_y + tau log pi_y) / sum_k exp(f_k + tau log pi_k) ] and predict argmax f;
//! - `mode = "post_hoc"` (the paper's eq. 9): train with the plain cross-entropy and predict
//!   argmax_y f_y - tau log pi_y (evaluation uses the adjusted argmax; `test_loss` stays the
//!   plain cross-entropy of f).
//!
//! The prior: `prior = "global"` (default) is the federation's training label distribution (the
//! long-tailed one; known to the server from the clients' label counts); `prior = "client"` is
//! each client's own label distribution (a per-client adjustment for label-skewed federations;
//! only with `mode = "loss"`). A class without samples counts as one sample, so log pi is finite.
//!
//! Parameters: `tau` (the scaling tau >= 0, default 1.0 as in the paper); `mode`; `prior`.
//!
//! ```toml
//! [loss]
//! use = "logit_adjusted"
//! tau = 1.0
//! mode = "loss"
//! prior = "global"
//! ```

use fedkit_core::model::{check_labels, logits_to_grad, softmax_cross_entropy};
use fedkit_core::{Batch, CrossEntropy, Error, Head, Loss, LossData, LossRun, OutputGrads, Outputs, Result};
use serde::{Deserialize, Serialize};

/// Where the adjustment acts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In the training loss.
    #[default]
    Loss,
    /// In the prediction only.
    PostHoc,
}

/// Whose label prior.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prior {
    /// The federation's.
    #[default]
    Global,
    /// Each client's own.
    Client,
}

/// Logit adjustment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogitAdjusted {
    /// The scaling tau.
    pub tau: f64,
    pub mode: Mode,
    pub prior: Prior,
    /// tau log pi of the global prior (set by `prepare`).
    #[serde(skip)]
    offsets: Vec<f32>,
}

impl Default for LogitAdjusted {
    fn default() -> Self {
        LogitAdjusted { tau: 1.0, mode: Mode::Loss, prior: Prior::Global, offsets: Vec::new() }
    }
}

impl LogitAdjusted {
    /// Check tau and the combination of mode and prior.
    pub fn validated(self) -> Result<Self> {
        if !(self.tau >= 0.0 && self.tau.is_finite()) {
            return Err(Error::config("tau", format!("must be a finite number >= 0, got {}", self.tau)));
        }
        if self.mode == Mode::PostHoc && self.prior == Prior::Client {
            return Err(Error::config(
                "prior",
                "`client` needs mode = \"loss\": a post-hoc adjustment predicts with one model for everyone",
            ));
        }
        Ok(self)
    }
}

/// tau log pi_k for class counts `counts` (a class without samples counts as one).
pub fn log_prior_offsets(counts: &[usize], tau: f64) -> Vec<f32> {
    let n: f64 = counts.iter().map(|&c| c.max(1) as f64).sum();
    counts.iter().map(|&c| (tau * (c.max(1) as f64 / n).ln()) as f32).collect()
}

/// The cross-entropy of the logits shifted by `offsets` (per class).
pub struct ShiftedCrossEntropy {
    pub offsets: Vec<f32>,
}

impl Head for ShiftedCrossEntropy {
    fn value_grad(&mut self, out: &Outputs, batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        let c = out.classes;
        check_labels(batch, c, "the logit-adjusted loss (use the default cross-entropy)")?;
        if self.offsets.len() != c {
            return Err(Error::Shape(format!("a prior over {} classes for {c} logits", self.offsets.len())));
        }
        g.features.clear();
        g.logits.clear();
        g.logits.extend(out.logits.chunks_exact(c).flat_map(|row| row.iter().zip(&self.offsets).map(|(z, o)| z + o)));
        let (loss, _) = softmax_cross_entropy(&mut g.logits, &batch.y, c);
        logits_to_grad(&mut g.logits, &batch.y, c);
        Ok((loss / batch.len().max(1) as f64) as f32)
    }
}

impl Loss for LogitAdjusted {
    fn prepare(&mut self, data: &LossData) -> Result<()> {
        self.offsets = log_prior_offsets(&data.class_counts, self.tau);
        Ok(())
    }
    fn head(&self, run: &mut LossRun) -> Result<Box<dyn Head + Send + '_>> {
        Ok(match (self.mode, self.prior) {
            (Mode::PostHoc, _) => Box::new(CrossEntropy),
            (Mode::Loss, Prior::Global) => Box::new(ShiftedCrossEntropy { offsets: self.offsets.clone() }),
            (Mode::Loss, Prior::Client) => {
                let counts = run.data.data.label_histogram(&run.data.idx);
                Box::new(ShiftedCrossEntropy { offsets: log_prior_offsets(&counts, self.tau) })
            }
        })
    }
    /// Post-hoc: f_k - tau log pi_k.
    fn adjust_logits(&self, logits: &mut [f32], classes: usize) {
        if self.mode == Mode::PostHoc && self.offsets.len() == classes {
            for row in logits.chunks_exact_mut(classes) {
                row.iter_mut().zip(&self.offsets).for_each(|(z, o)| *z -= o);
            }
        }
    }
    fn adjusts_predictions(&self) -> bool {
        self.mode == Mode::PostHoc && self.tau > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::testing::{check_head_gradient, outputs};

    #[test]
    fn the_adjusted_loss_is_cross_entropy_of_shifted_logits() {
        let counts = [900, 90, 9, 1];
        let offsets = log_prior_offsets(&counts, 1.0);
        // pi = counts / 1000: log pi.
        for (o, c) in offsets.iter().zip(counts) {
            assert!((*o as f64 - (c as f64 / 1000.0).ln()).abs() < 1e-6);
        }
        let (out, batch) = outputs(5, 4, 3);
        let mut head = ShiftedCrossEntropy { offsets: offsets.clone() };
        let mut g = OutputGrads::default();
        let value = head.value_grad(&out, &batch, &mut g).unwrap() as f64;
        let mut want = 0.0;
        for (i, &y) in batch.y.iter().enumerate() {
            let z: Vec<f64> = out.logits_of(i).iter().zip(&offsets).map(|(a, b)| (*a + *b) as f64).collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            want += (lse - z[y as usize]) / 5.0;
        }
        assert!((value - want).abs() < 1e-5, "{value} vs {want}");
        check_head_gradient(&mut head, &out, &batch);
        // tau = 0 is the plain cross-entropy.
        let mut zero = ShiftedCrossEntropy { offsets: log_prior_offsets(&counts, 0.0) };
        let (mut g0, mut g1) = (OutputGrads::default(), OutputGrads::default());
        let a = zero.value_grad(&out, &batch, &mut g0).unwrap();
        let b = CrossEntropy.value_grad(&out, &batch, &mut g1).unwrap();
        assert_eq!((a, &g0.logits), (b, &g1.logits));
    }

    #[test]
    fn post_hoc_prediction_favours_rare_classes_by_log_prior() {
        let mut la = LogitAdjusted { mode: Mode::PostHoc, tau: 1.0, ..LogitAdjusted::default() }.validated().unwrap();
        la.prepare(&LossData { class_counts: vec![99, 1], reference: None }).unwrap();
        // f = (1, -2): plain argmax is class 0; adjusted: 1 - ln 0.99 = 1.01 vs -2 - ln 0.01 = 2.6.
        let mut z = vec![1.0f32, -2.0];
        la.adjust_logits(&mut z, 2);
        assert!(z[1] > z[0], "{z:?}");
        assert!(la.adjusts_predictions());
        assert!(
            LogitAdjusted { mode: Mode::PostHoc, prior: Prior::Client, ..LogitAdjusted::default() }
                .validated()
                .is_err()
        );
        assert!(LogitAdjusted { tau: -1.0, ..LogitAdjusted::default() }.validated().is_err());
    }
}
