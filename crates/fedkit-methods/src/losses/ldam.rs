//! `ldam`: the label-distribution-aware margin loss with deferred re-weighting (LDAM-DRW), Cao,
//! Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
//! Loss", NeurIPS 2019.
//!
//! Rare classes get larger margins: Delta_j = C / n_j^(1/4), with C such that the largest margin
//! is `max_margin` (the paper's code). The loss is the cross-entropy of s (z - Delta_y e_y):
//! -log [ exp(s (z_y - Delta_y)) / (exp(s (z_y - Delta_y)) + sum_{j != y} exp(s z_j)) ].
//! Deferred re-weighting (DRW): from round `drw_round` on (the paper: epoch 160 of 200) the
//! per-sample losses are weighted by the class-balanced weights w_j = (1 - beta) / (1 - beta^n_j)
//! normalised to sum to the number of classes, as a weighted mean (PyTorch's
//! `cross_entropy(weight = w)`: sum_i w_{y_i} l_i / sum_i w_{y_i}); before it, every weight is 1.
//! n_j are the federation's training samples per class. fedkit's FL reading: the deferral is in
//! rounds, since local training restarts every round.
//!
//! The paper's s = 30 multiplies the cosine logits of its normalised last layer; fedkit's models
//! have plain linear output layers whose logits are already unnormalised, so `scale` defaults to 1.
//!
//! Parameters: `max_margin` (the largest margin, default 0.5 as in the paper's code); `scale` (s,
//! default 1); `drw_round` (the first re-weighted round, default 0 = no re-weighting, i.e. plain
//! LDAM); `beta` (default 0.9999 as in the paper).
//!
//! ```toml
//! [loss]
//! use = "ldam"
//! max_margin = 0.5
//! scale = 1.0
//! drw_round = 80
//! beta = 0.9999
//! ```

use fedkit_core::model::{check_labels, softmax_cross_entropy};
use fedkit_core::{Batch, Error, Head, Loss, LossData, LossRun, OutputGrads, Outputs, Result};
use serde::{Deserialize, Serialize};

/// LDAM-DRW.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ldam {
    pub max_margin: f64,
    pub scale: f64,
    pub drw_round: u32,
    pub beta: f64,
    /// Delta_j and the class-balanced weights (set by `prepare`).
    #[serde(skip)]
    margins: Vec<f32>,
    #[serde(skip)]
    balanced: Vec<f32>,
}

impl Default for Ldam {
    fn default() -> Self {
        Ldam { max_margin: 0.5, scale: 1.0, drw_round: 0, beta: 0.9999, margins: Vec::new(), balanced: Vec::new() }
    }
}

impl Ldam {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.max_margin >= 0.0 && self.max_margin.is_finite()) {
            return Err(Error::config("max_margin", format!("must be a finite number >= 0, got {}", self.max_margin)));
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::config("scale", format!("must be a finite number > 0, got {}", self.scale)));
        }
        if !(0.0..1.0).contains(&self.beta) {
            return Err(Error::config("beta", format!("must be in [0, 1), got {}", self.beta)));
        }
        Ok(self)
    }
}

impl Ldam {
    /// The class weights of `round`: 1 before `drw_round`, the class-balanced ones from it on.
    pub fn round_weights(&self, round: u32) -> Vec<f32> {
        if self.drw_round > 0 && round >= self.drw_round {
            self.balanced.clone()
        } else {
            vec![1.0; self.margins.len()]
        }
    }
}

/// Delta_j = C n_j^(-1/4), scaled so the largest is `max_margin` (a class without samples counts
/// as one).
pub fn margins(counts: &[usize], max_margin: f64) -> Vec<f32> {
    let raw: Vec<f64> = counts.iter().map(|&n| (n.max(1) as f64).powf(-0.25)).collect();
    let top = raw.iter().cloned().fold(0.0, f64::max);
    raw.iter().map(|m| (m * max_margin / top) as f32).collect()
}

/// (1 - beta) / (1 - beta^n_j), normalised to sum to the number of classes.
pub fn class_balanced_weights(counts: &[usize], beta: f64) -> Vec<f32> {
    let raw: Vec<f64> = counts.iter().map(|&n| (1.0 - beta) / (1.0 - beta.powf(n.max(1) as f64))).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| (w / sum * counts.len() as f64) as f32).collect()
}

/// The margin cross-entropy of one round, with its class weights.
pub struct MarginCrossEntropy {
    pub margins: Vec<f32>,
    pub weights: Vec<f32>,
    pub scale: f32,
}

impl Head for MarginCrossEntropy {
    fn value_grad(&mut self, out: &Outputs, batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        let c = out.classes;
        check_labels(batch, c, "the ldam loss (use the default cross-entropy)")?;
        if self.margins.len() != c || self.weights.len() != c {
            return Err(Error::Shape(format!("margins for {} classes, {c} logits", self.margins.len())));
        }
        g.features.clear();
        g.logits.clear();
        for (i, &y) in batch.y.iter().enumerate() {
            let y = y as usize;
            g.logits.extend(
                out.logits_of(i)
                    .iter()
                    .enumerate()
                    .map(|(k, &z)| self.scale * if k == y { z - self.margins[y] } else { z }),
            );
        }
        // Per-sample losses and softmax probabilities, then the weighted mean's gradient.
        let mut total_w = 0.0f64;
        let mut loss = 0.0f64;
        for (i, &y) in batch.y.iter().enumerate() {
            let row = &mut g.logits[i * c..(i + 1) * c];
            let (l, _) = softmax_cross_entropy(row, &[y], c);
            let w = self.weights[y as usize] as f64;
            loss += w * l;
            total_w += w;
        }
        let total_w = total_w.max(f64::MIN_POSITIVE);
        for (i, &y) in batch.y.iter().enumerate() {
            let w = self.weights[y as usize] as f64;
            let row = &mut g.logits[i * c..(i + 1) * c];
            row[y as usize] -= 1.0;
            row.iter_mut().for_each(|v| *v = (*v as f64 * w * self.scale as f64 / total_w) as f32);
        }
        Ok((loss / total_w) as f32)
    }
}

impl Loss for Ldam {
    fn prepare(&mut self, data: &LossData) -> Result<()> {
        self.margins = margins(&data.class_counts, self.max_margin);
        self.balanced = class_balanced_weights(&data.class_counts, self.beta);
        Ok(())
    }
    fn head(&self, run: &mut LossRun) -> Result<Box<dyn Head + Send + '_>> {
        let weights = self.round_weights(run.round);
        Ok(Box::new(MarginCrossEntropy { margins: self.margins.clone(), weights, scale: self.scale as f32 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::testing::{check_head_gradient, outputs};
    use fedkit_core::CrossEntropy;

    #[test]
    fn margins_and_weights_follow_the_paper() {
        let counts = [5000, 500, 50];
        let m = margins(&counts, 0.5);
        assert!((m[2] - 0.5).abs() < 1e-7, "the rarest class has the largest margin");
        // Delta ratios are (n_i / n_j)^(1/4).
        assert!((m[0] as f64 / m[2] as f64 - (50.0f64 / 5000.0).powf(0.25)).abs() < 1e-6);
        let w = class_balanced_weights(&counts, 0.9999);
        assert!((w.iter().sum::<f32>() - 3.0).abs() < 1e-5 && w[2] > w[1] && w[1] > w[0]);
        // beta = 0: every class weighs 1.
        assert!(class_balanced_weights(&counts, 0.0).iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn zero_margins_unit_weights_are_cross_entropy_and_gradients_are_exact() {
        let (out, batch) = outputs(7, 4, 2);
        let mut plain = MarginCrossEntropy { margins: vec![0.0; 4], weights: vec![1.0; 4], scale: 1.0 };
        let (mut a, mut b) = (OutputGrads::default(), OutputGrads::default());
        let l = plain.value_grad(&out, &batch, &mut a).unwrap();
        let ce = CrossEntropy.value_grad(&out, &batch, &mut b).unwrap();
        assert!((l - ce).abs() < 1e-6);
        a.logits.iter().zip(&b.logits).for_each(|(x, y)| assert!((x - y).abs() < 1e-6));
        let mut full = MarginCrossEntropy {
            margins: margins(&[100, 10, 5, 1], 0.5),
            weights: class_balanced_weights(&[100, 10, 5, 1], 0.99),
            scale: 2.0,
        };
        check_head_gradient(&mut full, &out, &batch);
    }

    #[test]
    fn re_weighting_starts_at_drw_round() {
        let mut ldam = Ldam { drw_round: 5, ..Ldam::default() }.validated().unwrap();
        ldam.prepare(&LossData { class_counts: vec![90, 10], reference: None }).unwrap();
        assert_eq!(ldam.round_weights(4), vec![1.0, 1.0]);
        assert_eq!(ldam.round_weights(5), ldam.balanced);
        assert!(ldam.balanced[1] > 1.0);
        assert!(Ldam { beta: 1.0, ..Ldam::default() }.validated().is_err());
        assert!(Ldam { scale: 0.0, ..Ldam::default() }.validated().is_err());
    }
}
