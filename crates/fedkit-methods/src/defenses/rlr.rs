//! `rlr`: the robust learning rate, Ozdayi, Kantarcioglu, Gel, "Defending against Backdoors in
//! Federated Learning with Robust Learning Rate", AAAI 2021.
//!
//! For every coordinate j, the sign agreement of the cohort a_j = |sum_i sign(delta_ij)|; where
//! a_j < theta the coordinate's learning rate is negated: delta_j = -mean_i delta_ij (the
//! server moves *against* a direction too few clients agree on, undoing a backdoor that lives
//! in coordinates benign clients do not push), else delta_j = mean_i delta_ij. The mean is
//! sample-weighted (the paper's FedAvg). It rejects no client. Records `rlr_flipped`, the
//! fraction of coordinates negated. theta above the cohort size is an error.
//!
//! Parameters: `theta` (the agreement threshold, default 4 as in the paper's Fashion-MNIST runs).
//!
//! ```toml
//! [aggregator]
//! use = "rlr"
//! theta = 4
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use crate::aggregators::mean::weighted_mean;

/// The robust learning rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rlr {
    pub theta: usize,
}

impl Default for Rlr {
    fn default() -> Self {
        Rlr { theta: 4 }
    }
}

fn check(theta: usize, n: usize) -> Result<()> {
    if theta > n {
        return Err(Error::config(
            "aggregator.theta",
            format!("theta = {theta} is above the cohort size {n}: every coordinate would be negated"),
        ));
    }
    Ok(())
}

impl Aggregator for Rlr {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        check(self.theta, updates.len())?;
        let mut agg = weighted_mean(updates, true)?;
        let mut agreement = vec![0i64; agg.delta.len()];
        for u in updates {
            agreement.iter_mut().zip(u.delta.as_slice()).for_each(|(a, v)| {
                *a += if *v > 0.0 {
                    1
                } else if *v < 0.0 {
                    -1
                } else {
                    0
                }
            });
        }
        let mut flipped = 0usize;
        for (d, a) in agg.delta.as_mut_slice().iter_mut().zip(&agreement) {
            if (a.unsigned_abs() as usize) < self.theta {
                *d = -*d;
                flipped += 1;
            }
        }
        agg.metrics.insert("rlr_flipped".into(), flipped as f64 / agreement.len().max(1) as f64);
        agg.weighting = Weighting::Robust;
        Ok(agg)
    }
    fn check_cohort(&self, n: usize) -> Result<()> {
        check(self.theta, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn flips_exactly_the_coordinates_with_agreement_below_theta() {
        // Coordinate 0: 4 agree (+), mean 1; coordinate 1: 2 vs 2 (agreement 0), mean -0.25;
        // coordinate 2: 3 vs 1 (agreement 2), mean 0.5.
        let ups = vec![
            update(0, &[1.0, 1.0, 1.0], 1.0),
            update(1, &[1.0, 1.0, 1.0], 1.0),
            update(2, &[1.0, -1.0, 1.0], 1.0),
            update(3, &[1.0, -2.0, -1.0], 1.0),
        ];
        let a = Rlr { theta: 3 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(a.delta.as_slice(), &[1.0, 0.25, -0.5]);
        assert!((a.metrics["rlr_flipped"] - 2.0 / 3.0).abs() < 1e-12);
        let b = Rlr { theta: 2 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(b.delta.as_slice(), &[1.0, 0.25, 0.5], "agreement 2 is not below 2");
        assert!(Rlr { theta: 5 }.aggregate(&ctx(), &ups).is_err());
    }
}
