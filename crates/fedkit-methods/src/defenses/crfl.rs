//! `crfl`: Xie, Chen, Chen, Li, "CRFL: Certifiably Robust Federated Learning against Backdoor
//! Attacks", ICML 2021.
//!
//! Training (this aggregator): the sample-weighted mean of the updates gives the new global
//! model w' = w + mean_i delta_i; its trained parameters are clipped to the norm rho_t,
//! w' <- w' / max(1, ||w'|| / rho_t), and perturbed with Gaussian noise, w' <- w' + N(0,
//! sigma^2 I) (stream `crfl_noise`, deterministic per run seed and round). With `dynamic = true`
//! (the authors' code) the bound grows with the round, rho_t = min(`clip`, 2 + 0.1 t); else
//! rho_t = `clip`. Both act on the trained parameters (normalisation buffers stay as averaged).
//! Clipping bounds how far any update, malicious or not, can move the model; the
//! noise makes the trained model a smoothed one.
//!
//! Test time (`fedkit certify RUN --sigma S`): parameter smoothing. M noisy copies w + N(0, S^2 I)
//! of the final model vote on each test input; with the top class's count n_A, its
//! Clopper-Pearson lower bound p_A (level 1 - alpha) gives the certified radius
//! RAD = S Phi^-1(p_A) when p_A > 1/2 (else abstain): the smoothed prediction is the same for
//! every model within L2 distance RAD of w, the parameter-space radius of CRFL's Theorem 1
//! (the paper then bounds the distance a backdoor can move the final model, through rho_t and
//! the number of rounds, which this radius does not include). `certify.csv` reports the
//! certified accuracy (correct and certified at radius >= r) against r. It rejects no client.
//!
//! Parameters: `clip` (rho > 0, default 15, the authors' MNIST value); `sigma` (training noise
//! >= 0, default 0.01); `dynamic` (default true).
//!
//! ```toml
//! [aggregator]
//! use = "crfl"
//! clip = 15.0
//! sigma = 0.01
//! dynamic = true
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update};
use serde::{Deserialize, Serialize};

use crate::aggregators::mean::weighted_mean;

/// CRFL's training-time rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Crfl {
    pub clip: f64,
    pub sigma: f64,
    pub dynamic: bool,
}

impl Default for Crfl {
    fn default() -> Self {
        Crfl { clip: 15.0, sigma: 0.01, dynamic: true }
    }
}

impl Crfl {
    /// Check rho and sigma.
    pub fn validated(self) -> Result<Self> {
        if !(self.clip > 0.0 && self.clip.is_finite()) {
            return Err(Error::config("aggregator.clip", format!("must be a finite number > 0, got {}", self.clip)));
        }
        if !(self.sigma >= 0.0 && self.sigma.is_finite()) {
            return Err(Error::config("aggregator.sigma", format!("must be a finite number >= 0, got {}", self.sigma)));
        }
        Ok(self)
    }
    /// rho_t for round `t`.
    pub fn bound(&self, t: u32) -> f64 {
        if self.dynamic { self.clip.min(2.0 + 0.1 * t as f64) } else { self.clip }
    }
}

impl Aggregator for Crfl {
    fn aggregate(&mut self, r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let mut agg = weighted_mean(updates, true)?;
        let w = r.global.as_slice();
        if w.len() != agg.delta.len() {
            return Err(Error::Shape(format!("crfl: global model {} values, updates {}", w.len(), agg.delta.len())));
        }
        // Clipping and noise act on the trained parameters (running statistics stay as averaged).
        let ranges: Vec<std::ops::Range<usize>> = agg.delta.layout().trainable_ranges().collect();
        let mut next: Vec<f64> = w.iter().zip(agg.delta.as_slice()).map(|(a, b)| *a as f64 + *b as f64).collect();
        let norm = ranges.iter().flat_map(|r| &next[r.clone()]).map(|v| v * v).sum::<f64>().sqrt();
        let rho = self.bound(r.round);
        let mut rng = r.rng("crfl_noise");
        for range in &ranges {
            for v in &mut next[range.clone()] {
                if norm > rho {
                    *v *= rho / norm;
                }
                *v += self.sigma * rng.normal();
            }
        }
        let d = agg.delta.as_mut_slice();
        for ((o, n), g) in d.iter_mut().zip(&next).zip(w) {
            *o = (n - *g as f64) as f32;
        }
        agg.metrics.insert("crfl_norm".into(), norm);
        agg.metrics.insert("crfl_clipped".into(), (norm > rho) as u8 as f64);
        Ok(agg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn the_new_model_is_clipped_to_rho_then_noised() {
        let mut c = Crfl { clip: 1.0, sigma: 0.0, dynamic: false };
        let mut r = ctx();
        r.global = Box::leak(Box::new(update(0, &[0.0, 0.0], 1.0).delta));
        // Global model 0; the mean update (3, 4) has norm 5: the new model is (0.6, 0.8).
        let a = c.aggregate(&r, &[update(0, &[3.0, 4.0], 1.0), update(1, &[3.0, 4.0], 1.0)]).unwrap();
        assert!((a.delta.as_slice()[0] - 0.6).abs() < 1e-6 && (a.delta.as_slice()[1] - 0.8).abs() < 1e-6);
        let inside = c.aggregate(&r, &[update(0, &[0.3, 0.4], 1.0)]).unwrap();
        assert_eq!(inside.delta.as_slice(), &[0.3, 0.4]);
        c.sigma = 0.5;
        let noisy = c.aggregate(&r, &[update(0, &[0.3, 0.4], 1.0)]).unwrap();
        assert_ne!(noisy.delta.as_slice(), &[0.3, 0.4]);
        assert_eq!(noisy.delta.as_slice(), c.aggregate(&r, &[update(0, &[0.3, 0.4], 1.0)]).unwrap().delta.as_slice());
        // The authors' growing bound.
        let dynamic = Crfl::default();
        assert_eq!((dynamic.bound(10), dynamic.bound(500)), (3.0, 15.0));
        assert!(Crfl { clip: 0.0, ..Crfl::default() }.validated().is_err());
    }
}
