//! `norm_bound`: norm bounding, Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated
//! Learning?", NeurIPS FL workshop 2019.
//!
//! The server clips every update to the norm bound M, delta_i <- delta_i min(1, M / ||delta_i||),
//! then takes the sample-weighted mean. Boosted (model-replacement) updates lose their boost; it
//! rejects no client (detection rates are not logged). Records `norm_clipped`, the fraction of
//! updates it scaled down. (The client-side `clip` stage does the same per client.)
//!
//! Parameters: `max_norm` (M > 0, default 1.0).
//!
//! ```toml
//! [aggregator]
//! use = "norm_bound"
//! max_norm = 1.0
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update};
use serde::{Deserialize, Serialize};

use crate::aggregators::mean::weighted_mean;

/// Norm bounding.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormBound {
    pub max_norm: f64,
}

impl Default for NormBound {
    fn default() -> Self {
        NormBound { max_norm: 1.0 }
    }
}

impl NormBound {
    /// Check M.
    pub fn validated(self) -> Result<Self> {
        if !(self.max_norm > 0.0 && self.max_norm.is_finite()) {
            return Err(Error::config(
                "aggregator.max_norm",
                format!("must be a finite number > 0, got {}", self.max_norm),
            ));
        }
        Ok(self)
    }
}

impl Aggregator for NormBound {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let mut clipped = 0usize;
        let bounded: Vec<Update> = updates
            .iter()
            .map(|u| {
                let mut u = u.clone();
                let n = u.delta.l2();
                if n > self.max_norm {
                    u.delta.scale((self.max_norm / n) as f32);
                    clipped += 1;
                }
                u
            })
            .collect();
        let mut agg = weighted_mean(&bounded, true)?;
        agg.metrics.insert("norm_clipped".into(), clipped as f64 / updates.len().max(1) as f64);
        Ok(agg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn every_update_is_bounded_before_the_mean() {
        let ups = vec![update(0, &[0.3, 0.4], 1.0), update(1, &[30.0, 40.0], 1.0)];
        let a = NormBound { max_norm: 1.0 }.aggregate(&ctx(), &ups).unwrap();
        // (0.3, 0.4) stays; (30, 40) becomes (0.6, 0.8): the mean is (0.45, 0.6).
        assert!((a.delta.as_slice()[0] - 0.45).abs() < 1e-6 && (a.delta.as_slice()[1] - 0.6).abs() < 1e-6);
        assert_eq!(a.metrics["norm_clipped"], 0.5);
        assert!(NormBound { max_norm: 0.0 }.validated().is_err());
    }
}
