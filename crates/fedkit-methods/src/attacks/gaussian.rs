//! `gaussian`: the Gaussian-noise Byzantine attack (Blanchard et al., "Machine Learning with
//! Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017, section 5): the attacker
//! sends delta ~ N(0, sigma^2 I) instead of its update, drawn from the client's stream
//! `gaussian_attack` (deterministic per seed, round and client).
//!
//! Parameters: `sigma` (> 0, default 1.0).
//!
//! ```toml
//! [[pipeline]]
//! use = "gaussian"
//! on = "malicious"
//! sigma = 1.0
//! ```

use fedkit_core::{ClientCtx, Error, Extras, Result, Stage, Update};
use serde::{Deserialize, Serialize};

/// Gaussian noise in place of the update.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gaussian {
    pub sigma: f64,
}

impl Default for Gaussian {
    fn default() -> Self {
        Gaussian { sigma: 1.0 }
    }
}

impl Gaussian {
    /// Check sigma.
    pub fn validated(self) -> Result<Self> {
        if !(self.sigma > 0.0 && self.sigma.is_finite()) {
            return Err(Error::config("sigma", format!("must be a finite number > 0, got {}", self.sigma)));
        }
        Ok(self)
    }
}

impl Stage for Gaussian {
    fn on_update(&self, cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        let mut rng = cx.rng("gaussian_attack");
        u.delta.as_mut_slice().iter_mut().for_each(|v| *v = (self.sigma * rng.normal()) as f32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::cx;
    use crate::defenses::testing::update;

    #[test]
    fn the_update_becomes_noise_of_the_given_scale() {
        let e = Extras::default();
        let mut u = update(1, &vec![0.5; 20000], 1.0);
        Gaussian { sigma: 2.0 }.on_update(&cx(1, 1, &e), &mut u, &mut Extras::default()).unwrap();
        let v = u.delta.as_slice();
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!(mean.abs() < 0.05 && (sd - 2.0).abs() < 0.05, "{mean} {sd}");
    }
}
