//! Randomness that the server must not know: the operating system's CSPRNG (getrandom) for
//! deployments, where noise or secrets derived from the run seed would be known to whoever
//! knows the seed. Simulations keep the seed-derived streams, for reproducibility.

use rand_secagg::{RngExt, SeedableRng, rngs::StdRng};

use crate::{PrivacyError, Result};

/// 32 bytes from the operating system's CSPRNG.
pub fn os_entropy() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| PrivacyError::new("noise_source", format!("the OS random source failed: {e}")))?;
    Ok(b)
}

/// Standard normal draws from a ChaCha12 stream (rand's `StdRng`) keyed by OS entropy, by the
/// Box-Muller transform in f64. Floating-point Gaussian samplers leak through their low bits
/// in theory (Mironov 2012); discrete noise is the remedy (`crate::skellam`).
pub struct OsGaussian {
    rng: StdRng,
    spare: Option<f64>,
}

impl OsGaussian {
    /// A fresh stream keyed by OS entropy.
    pub fn new() -> Result<Self> {
        Ok(OsGaussian { rng: StdRng::from_seed(os_entropy()?), spare: None })
    }

    /// One N(0, 1) draw.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1]: never ln(0).
        let u1 = 1.0 - self.rng.random::<f64>();
        let u2 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }

    /// One uniform draw in [0, 1) from the same stream (DP-SGD's batch sampling).
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_noise_is_standard_normal_and_never_repeats() {
        let mut g = OsGaussian::new().unwrap();
        let v: Vec<f64> = (0..200_000).map(|_| g.normal()).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
        let mut h = OsGaussian::new().unwrap();
        assert_ne!(v[..8], (0..8).map(|_| h.normal()).collect::<Vec<_>>()[..], "two streams differ");
        assert_ne!(os_entropy().unwrap(), os_entropy().unwrap());
    }
}

/// A ChaCha12 stream (rand's `StdRng`) keyed by 32 bytes: OS entropy in a deployment, bytes
/// derived from the run seed in a simulation.
pub fn seeded_rng(key: [u8; 32]) -> StdRng {
    StdRng::from_seed(key)
}
