//! `noise_feature`: noise-based feature skew (NIID-Bench's "noise" partition, x~ ~ Gau(sigma)).
//!
//! Follows NIID-Bench: the samples are split as in `iid` (random permutation, `array_split`), and
//! client i (of n) adds Gaussian noise N(0, sigma_i^2) with sigma_i = sigma * i / (n - 1) to every
//! feature (sigma_i = 0 for a single client), so noise levels run from 0 to sigma. As NIID-Bench's
//! `AddGaussianNoise` transform does, the noise is drawn afresh each time a sample is drawn into a
//! batch (`Batch::fill` applies `ClientData::noise_std`), not fixed once per sample; features are
//! on the dataset's scale ([0, 1] pixels for the image datasets, as after torchvision's
//! `ToTensor`).
//!
//! Parameters:
//! - `sigma` (default 0.1): the largest noise standard deviation, >= 0.
//!
//! ```toml
//! [data.partition]
//! use = "noise_feature"
//! sigma = 0.1
//! ```

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, SECTION, iid::iid_split};

/// The `noise_feature` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseFeature {
    /// The largest (last client's) noise standard deviation.
    pub sigma: f64,
}

impl Default for NoiseFeature {
    fn default() -> Self {
        NoiseFeature { sigma: 0.1 }
    }
}

impl Params for NoiseFeature {
    fn check(&self) -> Result<()> {
        if self.sigma.is_finite() && self.sigma >= 0.0 {
            Ok(())
        } else {
            Err(Error::config(format!("{SECTION}.sigma"), format!("must be a finite number >= 0, got {}", self.sigma)))
        }
    }
}

impl Partitioner for NoiseFeature {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        Ok(iid_split(data.len(), n_clients, rng))
    }

    fn feature_noise(&self, n_clients: usize) -> Vec<f32> {
        let last = n_clients.saturating_sub(1).max(1) as f64;
        (0..n_clients).map(|i| (self.sigma * i as f64 / last) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn noise_levels_run_from_zero_to_sigma() {
        let p = make("noise_feature", "sigma = 0.4").unwrap();
        let s = p.feature_noise(5);
        let want = [0.0, 0.1, 0.2, 0.3, 0.4];
        assert!(s.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{s:?}");
        assert_eq!(p.feature_noise(1), [0.0]);
        assert!(make("noise_feature", "sigma = -0.1").is_err());
    }

    #[test]
    fn split_is_iid() {
        let d = toy(10, 100);
        let a = run("noise_feature", "", &d, 6, 3).unwrap();
        assert_disjoint(&a, d.len(), true);
        assert_eq!(a, run("iid", "", &d, 6, 3).unwrap());
    }
}
