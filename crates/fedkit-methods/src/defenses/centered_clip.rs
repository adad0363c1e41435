//! `centered_clip`: centered clipping, Karimireddy, He, Jaggi, "Learning from History for
//! Byzantine Robust Optimization", ICML 2021.
//!
//! From the previous round's aggregate v_0 (zero in the first round: the paper's momentum
//! center), `iters` steps of v <- v + (1/n) sum_i (delta_i - v) min(1, tau / ||delta_i - v||):
//! updates far from the center are clipped to radius tau around it, so a minority of arbitrary
//! updates moves the result by at most about (f/n) tau per step. Unweighted (as the paper); it
//! rejects no client. Server state: v (saved in checkpoints).
//!
//! Parameters: `tau` (the clipping radius tau > 0, default 1.0); `iters` (L >= 1, default 1, the
//! paper's choice).
//!
//! ```toml
//! [aggregator]
//! use = "centered_clip"
//! tau = 1.0
//! iters = 1
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::geometry::{aggregate_of, by_client};

/// Centered clipping.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CenteredClip {
    pub tau: f64,
    pub iters: usize,
    /// The previous aggregate (the center), empty before the first round.
    #[serde(skip)]
    center: Vec<f64>,
}

impl Default for CenteredClip {
    fn default() -> Self {
        CenteredClip { tau: 1.0, iters: 1, center: Vec::new() }
    }
}

impl CenteredClip {
    /// Check tau and iters.
    pub fn validated(self) -> Result<Self> {
        if !(self.tau > 0.0 && self.tau.is_finite()) {
            return Err(Error::config("aggregator.tau", format!("must be a finite number > 0, got {}", self.tau)));
        }
        if self.iters == 0 {
            return Err(Error::config("aggregator.iters", "must be at least 1"));
        }
        Ok(self)
    }
}

impl Aggregator for CenteredClip {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "centered_clip")?;
        let d = order[0].delta.len();
        if self.center.len() != d {
            self.center = vec![0.0; d];
        }
        let n = order.len() as f64;
        let mut v = self.center.clone();
        for _ in 0..self.iters {
            let mut step = vec![0.0f64; d];
            for u in &order {
                let diff: Vec<f64> = u.delta.as_slice().iter().zip(&v).map(|(x, c)| *x as f64 - c).collect();
                let norm = diff.iter().map(|x| x * x).sum::<f64>().sqrt();
                let scale = if norm > self.tau { self.tau / norm } else { 1.0 };
                step.iter_mut().zip(&diff).for_each(|(s, x)| *s += scale * x / n);
            }
            v.iter_mut().zip(&step).for_each(|(a, s)| *a += s);
        }
        self.center.clone_from(&v);
        aggregate_of(&order[0].delta, v, &order, Weighting::Robust)
    }
    fn state(&self) -> Result<Vec<u8>> {
        fedkit_core::codec::to_bytes(&self.center, "centered_clip state")
    }
    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            self.center = fedkit_core::codec::from_bytes(bytes, "centered_clip state")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn far_updates_are_clipped_around_the_center() {
        // Within tau of the center (0): the plain mean. One huge outlier moves it by tau / n only.
        let near = vec![update(0, &[0.1, 0.0], 1.0), update(1, &[0.0, 0.1], 1.0), update(2, &[-0.1, 0.0], 1.0)];
        let a = CenteredClip::default().aggregate(&ctx(), &near).unwrap();
        assert!((a.delta.as_slice()[1] - 0.1 / 3.0).abs() < 1e-6);
        let mut with = near.clone();
        with.push(update(3, &[1e6, 0.0], 1.0));
        let mut cc = CenteredClip::default();
        let b = cc.aggregate(&ctx(), &with).unwrap();
        assert!((b.delta.as_slice()[0] - 0.25).abs() < 1e-6, "{:?}", b.delta.as_slice());
        // The center is kept (and survives a state round trip).
        let mut back = CenteredClip::default();
        back.load_state(&cc.state().unwrap()).unwrap();
        assert_eq!(back.center, cc.center);
        assert!(CenteredClip { tau: 0.0, ..CenteredClip::default() }.validated().is_err());
    }
}
