//! `min_sum`: the AGR-agnostic Min-Sum attack, Shejwalkar, Houmansadr, "Manipulating the
//! Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.
//!
//! As `min_max` (m = mu + gamma p against the reference updates), but gamma is the largest value
//! for which the sum of m's squared distances to the benign updates is at most the largest such
//! sum of a benign update: sum_i ||m - b_i||^2 <= max_i sum_j ||b_i - b_j||^2 (the halving
//! search of the authors' code). It replaces only the attacking clients' updates.
//!
//! Parameters: `perturbation` (`unit_vec`, `std`, `sign`); `knowledge` (`full` or `partial`).
//!
//! ```toml
//! [[pipeline]]
//! use = "min_sum"
//! perturbation = "unit_vec"
//! knowledge = "full"
//! ```

use fedkit_core::{Result, RoundCtx, Stage, Update};
use serde::{Deserialize, Serialize};

use super::cohort::{Knowledge, Perturbation, largest_gamma, mean_std, perturbation, replace, split, sq_dist};
use crate::defenses::geometry::sq_distances;

/// Min-Sum.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinSum {
    pub perturbation: Perturbation,
    pub knowledge: Knowledge,
}

impl Stage for MinSum {
    fn on_cohort(&mut self, r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        let (bad, reference) = split(r, us, self.knowledge);
        if bad.is_empty() || reference.is_empty() {
            return Ok(());
        }
        let (mu, sigma) = mean_std(us, &reference)?;
        let p = perturbation(self.perturbation, &mu, &sigma);
        let rows: Vec<&[f32]> = reference.iter().map(|&i| us[i].delta.as_slice()).collect();
        let n = rows.len();
        let d2 = sq_distances(&rows);
        let bound = (0..n).map(|i| d2[i * n..(i + 1) * n].iter().sum::<f64>()).fold(0.0, f64::max);
        let at = |g: f64| -> Vec<f64> { mu.iter().zip(&p).map(|(m, p)| m + g * p).collect() };
        let gamma = largest_gamma(|g| {
            let m = at(g);
            rows.iter().map(|b| sq_dist(&m, b)).sum::<f64>() <= bound
        });
        replace(us, &bad, &at(gamma))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx_with, update};

    #[test]
    fn the_sum_of_squared_distances_meets_the_benign_bound() {
        let mut us = vec![
            update(0, &[1.0, 0.0], 1.0),
            update(1, &[0.0, 1.0], 1.0),
            update(2, &[1.0, 1.0], 1.0),
            update(3, &[9.0, 9.0], 1.0),
        ];
        let benign: Vec<Vec<f32>> = us[..3].iter().map(|u| u.delta.as_slice().to_vec()).collect();
        MinSum::default().on_cohort(&ctx_with(1, &[3]), &mut us).unwrap();
        let m: Vec<f64> = us[3].delta.as_slice().iter().map(|v| *v as f64).collect();
        let sum: f64 = benign.iter().map(|b| sq_dist(&m, b)).sum();
        // The benign sums: (1,0): 2 + 1 = 3; (0,1): 3; (1,1): 2: the bound is 3.
        assert!((sum - 3.0).abs() < 1e-3, "{sum}");
    }
}
