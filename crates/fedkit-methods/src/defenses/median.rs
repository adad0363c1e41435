//! `median`: the coordinate-wise median of the cohort's deltas, Yin, Chen, Ramchandran, Bartlett,
//! "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates", ICML 2018.
//!
//! delta_j = median_i delta_ij for every coordinate j (the mean of the two middle values for an
//! even cohort). Sample counts are ignored (the paper's rule is unweighted); it rejects no
//! client (every update is listed as accepted, and detection rates are not logged). Side
//! payloads are averaged uniformly. Robust to fewer than half of the updates being arbitrary.
//!
//! Parameters: none.
//!
//! ```toml
//! [aggregator]
//! use = "median"
//! ```

use fedkit_core::{Aggregate, Aggregator, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::coordinatewise::{median_of_sorted, per_coordinate_sorted};
use super::geometry::{aggregate_of, by_client, rows};

/// The coordinate-wise median (no parameters).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Median {}

impl Aggregator for Median {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "median")?;
        let values = per_coordinate_sorted(&rows(&order), median_of_sorted);
        aggregate_of(&order[0].delta, values, &order, Weighting::Robust)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn the_median_of_every_coordinate_and_outliers_do_not_move_it() {
        let ups = vec![
            update(0, &[1.0, 10.0, -1.0], 5.0),
            update(1, &[2.0, 20.0, -2.0], 1.0),
            update(2, &[3.0, 30.0, -3.0], 1.0),
            update(3, &[1e6, -1e6, 1e6], 1.0),
            update(4, &[2.5, 25.0, -2.5], 1.0),
        ];
        let a = Median::default().aggregate(&ctx(), &ups).unwrap();
        assert_eq!(a.delta.as_slice(), &[2.5, 20.0, -2.0]);
        assert_eq!(a.accepted, vec![0, 1, 2, 3, 4]);
        assert_eq!(a.weighting, Weighting::Robust);
    }
}
