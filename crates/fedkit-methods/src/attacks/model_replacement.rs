//! `model_replacement`: model replacement by boosting, Bagdasaryan, Veit, Hua, Estrin, Shmatikov,
//! "How To Backdoor Federated Learning", AISTATS 2020.
//!
//! The attacker scales its update by gamma so that, averaged with the others, it replaces the
//! global model with its own: delta <- gamma delta, gamma = n / eta for n clients a round and
//! server learning rate eta (the paper's choice; with FedAvg's eta = 1, gamma = n). Pair it with
//! `backdoor` (the attacker's local model then carries the backdoor), on the malicious clients:
//! in one round the backdoor is in the global model. `boost = 0` uses gamma = n = the stage's
//! `cohort` (set it to the run's `sampling.per_round`: the stage does not read it), else `boost`
//! itself.
//!
//! Parameters: `boost` (gamma, default 0 = the cohort size given as `cohort`); `cohort` (n, the
//! clients per round the attacker assumes, default 10).
//!
//! ```toml
//! [[pipeline]]
//! use = "model_replacement"
//! on = "malicious"
//! boost = 0.0
//! cohort = 10
//! ```

use fedkit_core::{ClientCtx, Error, Extras, Result, Stage, Update};
use serde::{Deserialize, Serialize};

/// Boosting.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelReplacement {
    pub boost: f64,
    pub cohort: usize,
}

impl Default for ModelReplacement {
    fn default() -> Self {
        ModelReplacement { boost: 0.0, cohort: 10 }
    }
}

impl ModelReplacement {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.boost >= 0.0 && self.boost.is_finite()) || (self.boost == 0.0 && self.cohort == 0) {
            return Err(Error::config(
                "boost",
                "must be a finite number >= 0 (0: the cohort size, which must be >= 1)",
            ));
        }
        Ok(self)
    }
    /// gamma.
    pub fn gamma(&self) -> f64 {
        if self.boost > 0.0 { self.boost } else { self.cohort as f64 }
    }
}

impl Stage for ModelReplacement {
    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        u.delta.scale(self.gamma() as f32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::cx;
    use crate::defenses::testing::update;

    #[test]
    fn the_update_is_boosted_by_gamma() {
        let e = Extras::default();
        let mut u = update(1, &[0.5, -1.0], 1.0);
        ModelReplacement { boost: 0.0, cohort: 10 }.on_update(&cx(1, 1, &e), &mut u, &mut Extras::default()).unwrap();
        assert_eq!(u.delta.as_slice(), &[5.0, -10.0]);
        assert_eq!(ModelReplacement { boost: 3.0, cohort: 10 }.gamma(), 3.0);
        assert!(ModelReplacement { boost: -1.0, cohort: 10 }.validated().is_err());
    }
}
