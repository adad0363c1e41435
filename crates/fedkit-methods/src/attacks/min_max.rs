//! `min_max`: the AGR-agnostic Min-Max attack, Shejwalkar, Houmansadr, "Manipulating the
//! Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.
//!
//! The attackers send m = mu + gamma p, with mu the mean of the reference updates (the benign ones
//! with `knowledge = "full"`) and p a perturbation direction (`perturbation`: `unit_vec`, -mu /
//! ||mu||, default; `std`, -sigma; `sign`, -sign(mu)), and gamma the largest value for which m is
//! no farther from any benign update than the benign updates are from each other:
//! max_i ||m - b_i|| <= max_{i,j} ||b_i - b_j|| (found by the halving search of the authors'
//! code, to 1e-5; `defenses/geometry.rs` gives the benign distances). It replaces only the
//! attacking clients' updates.
//!
//! Parameters: `perturbation`; `knowledge` (`full` or `partial`).
//!
//! ```toml
//! [[pipeline]]
//! use = "min_max"
//! perturbation = "unit_vec"
//! knowledge = "full"
//! ```

use fedkit_core::{Result, RoundCtx, Stage, Update};
use serde::{Deserialize, Serialize};

use super::cohort::{Knowledge, Perturbation, largest_gamma, mean_std, perturbation, replace, split, sq_dist};
use crate::defenses::geometry::sq_distances;

/// Min-Max.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinMax {
    pub perturbation: Perturbation,
    pub knowledge: Knowledge,
}

impl Stage for MinMax {
    fn on_cohort(&mut self, r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        let (bad, reference) = split(r, us, self.knowledge);
        if bad.is_empty() || reference.is_empty() {
            return Ok(());
        }
        let (mu, sigma) = mean_std(us, &reference)?;
        let p = perturbation(self.perturbation, &mu, &sigma);
        let rows: Vec<&[f32]> = reference.iter().map(|&i| us[i].delta.as_slice()).collect();
        let bound = sq_distances(&rows).into_iter().fold(0.0, f64::max);
        let at = |g: f64| -> Vec<f64> { mu.iter().zip(&p).map(|(m, p)| m + g * p).collect() };
        let gamma = largest_gamma(|g| {
            let m = at(g);
            rows.iter().all(|b| sq_dist(&m, b) <= bound)
        });
        replace(us, &bad, &at(gamma))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx_with, update};

    #[test]
    fn the_malicious_update_stays_within_the_benign_diameter_at_the_largest_gamma() {
        let mut us = vec![
            update(0, &[1.0, 0.0], 1.0),
            update(1, &[0.0, 1.0], 1.0),
            update(2, &[1.0, 1.0], 1.0),
            update(3, &[5.0, 5.0], 1.0),
        ];
        let benign: Vec<Vec<f32>> = us[..3].iter().map(|u| u.delta.as_slice().to_vec()).collect();
        MinMax::default().on_cohort(&ctx_with(1, &[3]), &mut us).unwrap();
        let m: Vec<f64> = us[3].delta.as_slice().iter().map(|v| *v as f64).collect();
        let diameter2 = 2.0; // the benign updates' largest squared distance, (1,0)-(0,1)
        let far = benign.iter().map(|b| sq_dist(&m, b)).fold(0.0, f64::max);
        assert!(far <= diameter2 + 1e-4 && far >= diameter2 - 1e-3, "at the boundary: {far}");
        // It points against the benign mean (2/3, 2/3).
        assert!(m[0] < 2.0 / 3.0 && m[1] < 2.0 / 3.0, "{m:?}");
        assert_eq!(us[0].delta.as_slice(), &[1.0, 0.0]);
    }
}
