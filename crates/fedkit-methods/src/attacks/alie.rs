//! `alie`: "A Little Is Enough", Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing
//! Defenses For Distributed Learning", NeurIPS 2019.
//!
//! With n clients in the round, m of them attacking, the attackers send mu - z sigma, the
//! coordinate-wise mean mu and standard deviation sigma of the reference updates (the benign
//! ones with `knowledge = "full"`) shifted by z standard deviations, small enough to pass
//! distance- and median-based defences: z = Phi^-1((n - s) / n) with s = floor(n / 2 + 1) - m
//! the number of benign clients the attackers need on their side (the paper's z_max); `z > 0`
//! overrides it. It replaces only the attacking clients' updates (`RoundCtx::malicious`).
//!
//! Parameters: `z` (default 0 = the paper's z_max); `knowledge` (`full` or `partial`).
//!
//! ```toml
//! [[pipeline]]
//! use = "alie"
//! z = 0.0
//! knowledge = "full"
//! ```

use fedkit_core::{Error, Result, RoundCtx, Stage, Update};
use serde::{Deserialize, Serialize};

use super::cohort::{Knowledge, mean_std, normal_quantile, replace, split};

/// A little is enough.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alie {
    pub z: f64,
    pub knowledge: Knowledge,
}

impl Alie {
    /// Check z.
    pub fn validated(self) -> Result<Self> {
        if !(self.z >= 0.0 && self.z.is_finite()) {
            return Err(Error::config("z", format!("must be a finite number >= 0, got {}", self.z)));
        }
        Ok(self)
    }
    /// The paper's z_max for n clients of which m attack.
    pub fn z_max(n: usize, m: usize) -> f64 {
        let s = ((n as f64 / 2.0 + 1.0).floor() - m as f64).max(0.0);
        normal_quantile(((n as f64 - s) / n as f64).clamp(1e-6, 1.0 - 1e-6))
    }
}

impl Stage for Alie {
    fn on_cohort(&mut self, r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        let (bad, reference) = split(r, us, self.knowledge);
        if bad.is_empty() || reference.is_empty() {
            return Ok(());
        }
        let z = if self.z > 0.0 { self.z } else { Self::z_max(us.len(), bad.len()) };
        let (mu, sigma) = mean_std(us, &reference)?;
        let values: Vec<f64> = mu.iter().zip(&sigma).map(|(m, s)| m - z * s).collect();
        replace(us, &bad, &values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx_with, update};

    #[test]
    fn attackers_send_mean_minus_z_std_of_the_benign_updates_and_benign_ones_are_untouched() {
        let mut us = vec![update(0, &[1.0, 0.0], 1.0), update(1, &[3.0, 2.0], 1.0), update(2, &[9.0, 9.0], 1.0)];
        let benign = us[..2].to_vec();
        Alie { z: 1.5, knowledge: Knowledge::Full }.on_cohort(&ctx_with(1, &[2]), &mut us).unwrap();
        // mean (2, 1), population std (1, 1): 2 - 1.5, 1 - 1.5.
        assert_eq!(us[2].delta.as_slice(), &[0.5, -0.5]);
        assert_eq!(us[0].delta, benign[0].delta);
        assert_eq!(us[1].delta, benign[1].delta);
        // The paper's z: n = 50, m = 12: s = 14, z = Phi^-1(36 / 50) = 0.58.
        assert!((Alie::z_max(50, 12) - 0.5828).abs() < 1e-3);
    }
}
