//! `trimmed_mean`: the coordinate-wise trimmed mean, Yin, Chen, Ramchandran, Bartlett,
//! "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates", ICML 2018.
//!
//! For every coordinate j the k = floor(beta n) largest and k smallest of the n values delta_ij
//! are removed and the rest averaged (unweighted, as the paper). It rejects no client (every
//! update is accepted; detection rates are not logged). beta must leave something: 2k < n,
//! checked against the round's cohort (a clear error otherwise).
//!
//! Parameters: `beta` (the trimmed fraction per side, in [0, 0.5), default 0.1).
//!
//! ```toml
//! [aggregator]
//! use = "trimmed_mean"
//! beta = 0.1
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::coordinatewise::{per_coordinate_sorted, trimmed_mean_of_sorted};
use super::geometry::{aggregate_of, by_client, rows};

/// The coordinate-wise trimmed mean.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrimmedMean {
    /// Fraction trimmed from each side.
    pub beta: f64,
}

impl Default for TrimmedMean {
    fn default() -> Self {
        TrimmedMean { beta: 0.1 }
    }
}

impl TrimmedMean {
    /// Check beta.
    pub fn validated(self) -> Result<Self> {
        if !(0.0..0.5).contains(&self.beta) {
            return Err(Error::config("aggregator.beta", format!("must be in [0, 0.5), got {}", self.beta)));
        }
        Ok(self)
    }
}

impl Aggregator for TrimmedMean {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "trimmed_mean")?;
        let n = order.len();
        let k = (self.beta * n as f64).floor() as usize;
        if 2 * k >= n {
            return Err(Error::config(
                "aggregator.beta",
                format!("beta = {} trims everything from a cohort of {n}", self.beta),
            ));
        }
        let values = per_coordinate_sorted(&rows(&order), |v| trimmed_mean_of_sorted(v, k));
        aggregate_of(&order[0].delta, values, &order, Weighting::Robust)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn trims_k_from_each_side_of_every_coordinate() {
        let ups: Vec<Update> = [[1.0, 5.0], [2.0, 4.0], [3.0, 3.0], [100.0, 2.0], [-100.0, 1.0]]
            .iter()
            .enumerate()
            .map(|(i, v)| update(i as u32, v, 1.0))
            .collect();
        // beta 0.2 of 5: k = 1 per side.
        let a = TrimmedMean { beta: 0.2 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(a.delta.as_slice(), &[2.0, 3.0]);
        let a = TrimmedMean { beta: 0.0 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(a.delta.as_slice(), &[1.2, 3.0], "beta 0 is the plain mean");
        assert!(TrimmedMean { beta: 0.5 }.validated().is_err());
        let two = &ups[..2];
        assert!(TrimmedMean { beta: 0.49 }.aggregate(&ctx(), two).is_ok());
    }
}
