//! `krum`: Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries:
//! Byzantine Tolerant Gradient Descent", NeurIPS 2017.
//!
//! With n updates of which at most f are Byzantine, each update i gets the score
//! s(i) = sum of its n - f - 2 smallest squared distances ||delta_i - delta_j||^2 to the others,
//! and Krum keeps the single update with the smallest score (accepted = that client; the others
//! are rejected, so runs log `detect_tpr` and `detect_fpr`). Distances come from one Gram matrix
//! (`geometry.rs`). Needs n > 2f + 2 (checked against `sampling.per_round` when the config is
//! read, and against the round's cohort). `multi_krum` averages the m best instead.
//!
//! Parameters: `f` (the number of Byzantine updates tolerated, default 1).
//!
//! ```toml
//! [aggregator]
//! use = "krum"
//! f = 1
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::geometry::{aggregate_of, by_client, rows, sq_distances};

/// Krum.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Krum {
    /// Byzantine updates tolerated.
    pub f: usize,
}

impl Default for Krum {
    fn default() -> Self {
        Krum { f: 1 }
    }
}

/// The smallest cohort Krum's scores are defined for: n > 2f + 2.
pub fn krum_min_cohort(f: usize) -> usize {
    2 * f + 3
}

/// Krum's score of every row: the sum of its n - f - 2 smallest squared distances to the others.
pub fn krum_scores(d2: &[f64], n: usize, f: usize) -> Vec<f64> {
    let keep = n.saturating_sub(f + 2);
    (0..n)
        .map(|i| {
            let mut others: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| d2[i * n + j]).collect();
            others.sort_by(f64::total_cmp);
            others[..keep.min(others.len())].iter().sum()
        })
        .collect()
}

/// The indices of the rows in increasing order of Krum score (ties by index).
pub fn krum_ranking(updates: &[&Update], f: usize) -> Vec<usize> {
    let n = updates.len();
    let scores = krum_scores(&sq_distances(&rows(updates)), n, f);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    idx
}

/// Check n > 2f + 2 for a cohort of `n`, naming `key`.
pub fn check_cohort(method: &str, f: usize, n: usize, key: &str) -> Result<()> {
    if n < krum_min_cohort(f) {
        return Err(Error::config(
            key,
            format!("{method} with f = {f} needs more than 2f + 2 = {} updates a round, the cohort has {n}", 2 * f + 2),
        ));
    }
    Ok(())
}

impl Aggregator for Krum {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "krum")?;
        check_cohort("krum", self.f, order.len(), "aggregator.f")?;
        let best = krum_ranking(&order, self.f)[0];
        let values = order[best].delta.as_slice().iter().map(|v| *v as f64).collect();
        aggregate_of(&order[0].delta, values, &[order[best]], Weighting::Robust)
    }
    fn filters(&self) -> bool {
        true
    }
    fn check_cohort(&self, n: usize) -> Result<()> {
        check_cohort("krum", self.f, n, "aggregator.f")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn picks_the_update_with_the_smallest_sum_to_its_nearest_neighbours() {
        // Five honest updates near (1, 1) and two far outliers, f = 2: n - f - 2 = 3 neighbours.
        let pts = [[1.0, 1.0], [1.1, 0.9], [0.9, 1.1], [1.05, 1.0], [0.8, 0.8], [9.0, -9.0], [9.1, -9.1]];
        let ups: Vec<Update> = pts.iter().enumerate().map(|(i, p)| update(i as u32, p, 1.0)).collect();
        let a = Krum { f: 2 }.aggregate(&ctx(), &ups).unwrap();
        // Brute force: each point's 3 nearest squared distances.
        let d = |a: &[f32; 2], b: &[f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)) as f64;
        let score = |i: usize| {
            let mut v: Vec<f64> = (0..7).filter(|&j| j != i).map(|j| d(&pts[i], &pts[j])).collect();
            v.sort_by(f64::total_cmp);
            v[..3].iter().sum::<f64>()
        };
        let want = (0..7).min_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap();
        assert_eq!(a.accepted, vec![want as u32]);
        assert_eq!(a.delta.as_slice(), &pts[want]);
        assert!(want < 5, "an outlier is never chosen");
        assert!(Krum { f: 3 }.aggregate(&ctx(), &ups).is_err(), "n = 7 < 2f + 3 = 9");
        assert!(Krum { f: 2 }.check_cohort(6).is_err() && Krum { f: 2 }.check_cohort(7).is_ok());
    }
}
