//! `sign_flip`: the sign-flipping Byzantine attack (Li, Xu, Chen, Giannakis, Ling, "RSA:
//! Byzantine-Robust Stochastic Aggregation Methods for Distributed Learning from Heterogeneous
//! Datasets", AAAI 2019; a baseline of every robust-aggregation benchmark): the
//! attacker sends delta <- -scale delta, pushing the model away from its descent direction.
//!
//! Parameters: `scale` (> 0, default 1).
//!
//! ```toml
//! [[pipeline]]
//! use = "sign_flip"
//! on = "malicious"
//! scale = 1.0
//! ```

use fedkit_core::{ClientCtx, Error, Extras, Result, Stage, Update};
use serde::{Deserialize, Serialize};

/// Sign flipping.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignFlip {
    pub scale: f64,
}

impl Default for SignFlip {
    fn default() -> Self {
        SignFlip { scale: 1.0 }
    }
}

impl SignFlip {
    /// Check the scale.
    pub fn validated(self) -> Result<Self> {
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::config("scale", format!("must be a finite number > 0, got {}", self.scale)));
        }
        Ok(self)
    }
}

impl Stage for SignFlip {
    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        u.delta.scale(-(self.scale as f32));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::cx;
    use crate::defenses::testing::update;

    #[test]
    fn the_update_is_negated_and_scaled() {
        let e = Extras::default();
        let mut u = update(1, &[0.5, -1.0], 1.0);
        SignFlip { scale: 2.0 }.on_update(&cx(1, 1, &e), &mut u, &mut Extras::default()).unwrap();
        assert_eq!(u.delta.as_slice(), &[-1.0, 2.0]);
    }
}
