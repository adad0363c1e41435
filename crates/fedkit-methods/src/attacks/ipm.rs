//! `ipm`: inner product manipulation, Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-
//! tolerant SGD by Inner Product Manipulation", UAI 2020.
//!
//! The attackers send -epsilon mu, mu the mean of the reference updates (the benign ones with
//! `knowledge = "full"`): the aggregate's inner product with the true descent direction turns
//! negative while each malicious update looks like a scaled benign one. epsilon small (the
//! paper: 0.1) slips past median and Krum; large (e.g. 100) breaks the mean.
//!
//! Parameters: `epsilon` (> 0, default 0.1); `knowledge` (`full` or `partial`).
//!
//! ```toml
//! [[pipeline]]
//! use = "ipm"
//! epsilon = 0.1
//! knowledge = "full"
//! ```

use fedkit_core::{Error, Result, RoundCtx, Stage, Update};
use serde::{Deserialize, Serialize};

use super::cohort::{Knowledge, mean_std, replace, split};

/// Inner product manipulation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ipm {
    pub epsilon: f64,
    pub knowledge: Knowledge,
}

impl Default for Ipm {
    fn default() -> Self {
        Ipm { epsilon: 0.1, knowledge: Knowledge::Full }
    }
}

impl Ipm {
    /// Check epsilon.
    pub fn validated(self) -> Result<Self> {
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(Error::config("epsilon", format!("must be a finite number > 0, got {}", self.epsilon)));
        }
        Ok(self)
    }
}

impl Stage for Ipm {
    fn on_cohort(&mut self, r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        let (bad, reference) = split(r, us, self.knowledge);
        if bad.is_empty() || reference.is_empty() {
            return Ok(());
        }
        let (mu, _) = mean_std(us, &reference)?;
        let values: Vec<f64> = mu.iter().map(|m| -self.epsilon * m).collect();
        replace(us, &bad, &values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx_with, update};

    #[test]
    fn attackers_send_minus_epsilon_times_the_benign_mean() {
        let mut us = vec![update(0, &[1.0, 2.0], 1.0), update(1, &[3.0, 2.0], 1.0), update(5, &[0.0, 0.0], 1.0)];
        Ipm { epsilon: 0.5, knowledge: Knowledge::Full }.on_cohort(&ctx_with(1, &[5]), &mut us).unwrap();
        assert_eq!(us[2].delta.as_slice(), &[-1.0, -1.0]);
        assert_eq!(us[0].delta.as_slice(), &[1.0, 2.0]);
    }
}
