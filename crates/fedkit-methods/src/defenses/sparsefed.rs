//! `sparsefed`: Panda, Mahloujifar, Bhagoji, Chakraborty, Mittal, "SparseFed: Mitigating Model
//! Poisoning Attacks in Federated Learning with Sparsification", AISTATS 2022.
//!
//! Every update is clipped to the norm `clip` (the clients' half; here applied by the server to
//! what it receives, which is the same in simulation), the clipped updates are averaged into the
//! server's error-feedback accumulator e <- e + mean_i clip(delta_i), and only the top-k
//! coordinates of e (by magnitude; k = `fraction` of the model, a linear-time selection) are
//! applied: delta = top_k(e), e <- e - delta. An attacker's update survives only where it
//! dominates the benign majority over rounds. It rejects no client. Server state: e (saved in
//! checkpoints).
//!
//! Parameters: `clip` (L2 bound > 0, default 1.0); `fraction` (k / d in (0, 1], default 0.1).
//!
//! ```toml
//! [aggregator]
//! use = "sparsefed"
//! clip = 1.0
//! fraction = 0.1
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::geometry::{aggregate_of, by_client};
use crate::sparse::top_k;

/// SparseFed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SparseFed {
    pub clip: f64,
    pub fraction: f64,
    #[serde(skip)]
    residual: Vec<f64>,
}

impl Default for SparseFed {
    fn default() -> Self {
        SparseFed { clip: 1.0, fraction: 0.1, residual: Vec::new() }
    }
}

impl SparseFed {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.clip > 0.0 && self.clip.is_finite()) {
            return Err(Error::config("aggregator.clip", format!("must be a finite number > 0, got {}", self.clip)));
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(Error::config("aggregator.fraction", format!("must be in (0, 1], got {}", self.fraction)));
        }
        Ok(self)
    }
}

impl Aggregator for SparseFed {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "sparsefed")?;
        let d = order[0].delta.len();
        if self.residual.len() != d {
            self.residual = vec![0.0; d];
        }
        let n = order.len() as f64;
        for u in &order {
            let norm = u.delta.l2();
            let k = if norm > self.clip { self.clip / norm } else { 1.0 };
            self.residual.iter_mut().zip(u.delta.as_slice()).for_each(|(e, v)| *e += k * *v as f64 / n);
        }
        let as_f32: Vec<f32> = self.residual.iter().map(|v| *v as f32).collect();
        let keep = top_k(&as_f32, (self.fraction * d as f64).ceil() as usize);
        let mut values = vec![0.0f64; d];
        for j in keep {
            let j = j as usize;
            values[j] = self.residual[j];
            self.residual[j] = 0.0;
        }
        aggregate_of(&order[0].delta, values, &order, Weighting::Robust)
    }
    fn state(&self) -> Result<Vec<u8>> {
        fedkit_core::codec::to_bytes(&self.residual, "sparsefed state")
    }
    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            self.residual = fedkit_core::codec::from_bytes(bytes, "sparsefed state")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn applies_the_top_k_of_the_accumulator_and_keeps_the_rest_for_later() {
        let mut s = SparseFed { clip: 100.0, fraction: 0.5, ..SparseFed::default() };
        let ups = vec![update(0, &[4.0, 1.0, 0.0, -3.0], 1.0), update(1, &[4.0, 1.0, 2.0, -3.0], 1.0)];
        let a = s.aggregate(&ctx(), &ups).unwrap();
        // mean (4, 1, 1, -3): the top 2 are coordinates 0 and 3; 1 and 1 wait in e.
        assert_eq!(a.delta.as_slice(), &[4.0, 0.0, 0.0, -3.0]);
        assert_eq!(s.residual, vec![0.0, 1.0, 1.0, 0.0]);
        // Error feedback: the residual plus what was sent equals the input.
        let b = s.aggregate(&ctx(), &[update(0, &[0.0, 0.5, 0.0, 0.0], 1.0)]).unwrap();
        assert_eq!(b.delta.as_slice(), &[0.0, 1.5, 1.0, 0.0]);
        // Clipping bounds every update first.
        let mut c = SparseFed { clip: 1.0, fraction: 1.0, ..SparseFed::default() };
        let a = c.aggregate(&ctx(), &[update(0, &[30.0, 40.0], 1.0)]).unwrap();
        assert!((a.delta.l2() - 1.0).abs() < 1e-6);
        assert!(SparseFed { fraction: 0.0, ..SparseFed::default() }.validated().is_err());
    }
}
