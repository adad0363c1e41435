//! `weak_dp`: norm bounding plus "weak differential privacy", Sun, Kairouz, Suresh, McMahan, "Can
//! You Really Backdoor Federated Learning?", NeurIPS FL workshop 2019 (Section 3).
//!
//! Every update is clipped to the norm bound M (as `norm_bound`), the clipped updates are
//! averaged with sample weights, and Gaussian noise N(0, sigma^2 I) is added to the aggregate:
//! delta = mean_i clip_M(delta_i) + N(0, sigma^2 I). The noise is far below what a formal DP
//! guarantee needs (formal DP, with an accountant, is the privacy family's job, ROADMAP row F;
//! not built yet); the paper shows this small amount
//! already weakens backdoors at a small cost in main accuracy. The noise comes from the server's
//! stream `weak_dp_noise` (run seed, round), so runs are deterministic. It rejects no client.
//!
//! Parameters: `max_norm` (M > 0, default 1.0); `sigma` (the noise's standard deviation per
//! coordinate, >= 0, default 0.001; the paper uses 0.025 on EMNIST).
//!
//! ```toml
//! [aggregator]
//! use = "weak_dp"
//! max_norm = 1.0
//! sigma = 0.001
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update};
use serde::{Deserialize, Serialize};

use super::norm_bound::NormBound;

/// Norm bounding with weak DP noise on the aggregate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeakDp {
    pub max_norm: f64,
    pub sigma: f64,
}

impl Default for WeakDp {
    fn default() -> Self {
        WeakDp { max_norm: 1.0, sigma: 0.001 }
    }
}

impl WeakDp {
    /// Check M and sigma.
    pub fn validated(self) -> Result<Self> {
        NormBound { max_norm: self.max_norm }.validated()?;
        if !(self.sigma >= 0.0 && self.sigma.is_finite()) {
            return Err(Error::config("aggregator.sigma", format!("must be a finite number >= 0, got {}", self.sigma)));
        }
        Ok(self)
    }
}

impl Aggregator for WeakDp {
    fn aggregate(&mut self, r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let mut agg = NormBound { max_norm: self.max_norm }.aggregate(r, updates)?;
        if self.sigma > 0.0 {
            let mut rng = r.rng("weak_dp_noise");
            let s = self.sigma as f32;
            agg.delta.as_mut_slice().iter_mut().for_each(|v| *v += s * rng.normal() as f32);
        }
        Ok(agg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn bounds_then_adds_noise_of_the_given_spread() {
        let d = 20_000;
        let big: Vec<f32> = vec![1.0; d];
        let ups = vec![update(0, &big, 1.0), update(1, &vec![0.0; d], 1.0)];
        let clean = WeakDp { max_norm: 1.0, sigma: 0.0 }.aggregate(&ctx(), &ups).unwrap();
        // The norm-sqrt(d) update is scaled to norm 1 before the mean with the zero update.
        let expect = 0.5 / (d as f64).sqrt();
        assert!(clean.delta.as_slice().iter().all(|v| (*v as f64 - expect).abs() < 1e-7));
        let noisy = WeakDp { max_norm: 1.0, sigma: 0.01 }.aggregate(&ctx(), &ups).unwrap();
        let diff: Vec<f64> =
            noisy.delta.as_slice().iter().zip(clean.delta.as_slice()).map(|(a, b)| (*a - *b) as f64).collect();
        let mean = diff.iter().sum::<f64>() / d as f64;
        let sd = (diff.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64).sqrt();
        assert!(mean.abs() < 3e-4 && (sd - 0.01).abs() < 3e-4, "mean {mean} sd {sd}");
        // Deterministic in (seed, round).
        let again = WeakDp { max_norm: 1.0, sigma: 0.01 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(noisy.delta.as_slice(), again.delta.as_slice());
        assert!(WeakDp { max_norm: 1.0, sigma: -1.0 }.validated().is_err());
    }
}
