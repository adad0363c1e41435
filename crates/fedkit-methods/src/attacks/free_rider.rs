//! `free_rider`: a client that sends an update without training for it, to collect the
//! federation's model for free. The RFFL paper's free rider (Xu and Lyu, FL-ICML 2021,
//! section 4.1; Lin, Du, Liu, "Free-riders in Federated Learning: Attacks and Defenses",
//! arXiv:1911.06111) uploads uniform noise: delta_j ~ U[-scale, scale], drawn from the
//! client's stream `free_rider` (deterministic per seed, round and client). Its local training
//! still runs in simulation (the engine has no way to skip it), but nothing of it is sent.
//!
//! Parameters: `scale` (> 0, default 1.0: the paper's U[-1, 1]).
//!
//! ```toml
//! [[pipeline]]
//! use = "free_rider"
//! on = "malicious"
//! scale = 1.0
//! ```

use fedkit_core::{ClientCtx, Error, Extras, Result, Stage, Update};
use serde::{Deserialize, Serialize};

/// Uniform noise in place of the update.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreeRider {
    pub scale: f64,
}

impl Default for FreeRider {
    fn default() -> Self {
        FreeRider { scale: 1.0 }
    }
}

impl FreeRider {
    /// Check the scale.
    pub fn validated(self) -> Result<Self> {
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::config("scale", format!("must be a finite number > 0, got {}", self.scale)));
        }
        Ok(self)
    }
}

impl Stage for FreeRider {
    fn on_update(&self, cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        let mut rng = cx.rng("free_rider");
        u.delta.as_mut_slice().iter_mut().for_each(|v| *v = (self.scale * (2.0 * rng.uniform() - 1.0)) as f32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::cx;
    use crate::defenses::testing::update;

    #[test]
    fn the_update_becomes_uniform_noise_on_the_interval() {
        let e = Extras::default();
        let mut u = update(1, &vec![0.5; 20000], 1.0);
        FreeRider { scale: 2.0 }.on_update(&cx(1, 1, &e), &mut u, &mut Extras::default()).unwrap();
        let v = u.delta.as_slice();
        assert!(v.iter().all(|x| x.abs() <= 2.0));
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // U[-a, a]: mean 0, variance a^2 / 3.
        assert!(mean.abs() < 0.05 && (var - 4.0 / 3.0).abs() < 0.05, "{mean} {var}");
        let mut w = update(1, &vec![0.5; 20000], 1.0);
        FreeRider { scale: 2.0 }.on_update(&cx(2, 1, &e), &mut w, &mut Extras::default()).unwrap();
        assert_ne!(u.delta, w.delta, "fresh noise every round");
    }
}
