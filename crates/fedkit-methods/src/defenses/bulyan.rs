//! `bulyan`: El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in
//! Byzantium", ICML 2018.
//!
//! Two stages against f Byzantine updates among n >= 4f + 3: (1) selection: theta = n - 2f
//! updates are chosen one at a time by Krum (the update with the smallest Krum score among those
//! left, scores recomputed on the remaining set of m updates after each removal, with f capped at
//! m - 3 so that the score stays defined: with n = 4f + 3 the last pick runs with a smaller f); (2)
//! aggregation: for every coordinate, of the theta selected values the beta = theta - 2f closest
//! to their median are averaged. The clients not selected in (1) are rejected (detection rates are
//! logged). Unweighted, as the paper.
//!
//! Parameters: `f` (Byzantine updates tolerated, default 1).
//!
//! ```toml
//! [aggregator]
//! use = "bulyan"
//! f = 1
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::coordinatewise::{median_of_sorted, per_coordinate_sorted};
use super::geometry::{aggregate_of, by_client, rows, sq_distances};
use super::krum::krum_scores;

/// Bulyan.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bulyan {
    pub f: usize,
}

impl Default for Bulyan {
    fn default() -> Self {
        Bulyan { f: 1 }
    }
}

fn check(f: usize, n: usize) -> Result<()> {
    if n < 4 * f + 3 {
        return Err(Error::config(
            "aggregator.f",
            format!("bulyan with f = {f} needs at least 4f + 3 = {} updates a round, the cohort has {n}", 4 * f + 3),
        ));
    }
    Ok(())
}

/// Bulyan's selection: theta = n - 2f indices chosen by iterated Krum.
pub fn bulyan_select(d2: &[f64], n: usize, f: usize) -> Vec<usize> {
    let mut left: Vec<usize> = (0..n).collect();
    let mut chosen = Vec::new();
    while chosen.len() < n - 2 * f {
        let m = left.len();
        let sub: Vec<f64> = left.iter().flat_map(|&i| left.iter().map(move |&j| d2[i * n + j])).collect();
        let scores = krum_scores(&sub, m, f.min(m.saturating_sub(3)));
        let best = (0..m).min_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b))).unwrap_or(0);
        chosen.push(left.remove(best));
    }
    chosen.sort_unstable();
    chosen
}

/// The mean of the `beta` values of sorted `v` closest to its median (ties to the smaller
/// value), summed in order of closeness. They are a contiguous run of `v`: grow it from the
/// median outwards, one side at a time.
fn closest_to_median(v: &[f32], beta: usize) -> f64 {
    let med = median_of_sorted(v) as f32;
    let closer = |a: f32, b: f32| (a - med).abs().total_cmp(&(b - med).abs()).then(a.total_cmp(&b)).is_le();
    let mut left = v.partition_point(|x| x.total_cmp(&med).is_lt());
    let mut right = left;
    let mut sum = 0.0f64;
    for _ in 0..beta {
        let take_left = left > 0 && (right == v.len() || closer(v[left - 1], v[right]));
        if take_left {
            left -= 1;
            sum += v[left] as f64;
        } else {
            sum += v[right] as f64;
            right += 1;
        }
    }
    sum / beta as f64
}

impl Aggregator for Bulyan {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "bulyan")?;
        let n = order.len();
        check(self.f, n)?;
        let chosen: Vec<&Update> =
            bulyan_select(&sq_distances(&rows(&order)), n, self.f).into_iter().map(|i| order[i]).collect();
        let beta = chosen.len() - 2 * self.f;
        let values = per_coordinate_sorted(&rows(&chosen), |v| closest_to_median(v, beta));
        aggregate_of(&order[0].delta, values, &chosen, Weighting::Robust)
    }
    fn filters(&self) -> bool {
        true
    }
    fn check_cohort(&self, n: usize) -> Result<()> {
        check(self.f, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn selects_n_minus_2f_and_averages_beta_per_coordinate() {
        // n = 7, f = 1: theta = 5 selected, beta = 3 averaged per coordinate.
        let pts = [[1.0f32, 0.0], [1.1, 0.1], [0.9, -0.1], [1.0, 0.2], [1.2, 0.0], [30.0, 30.0], [1.05, -0.05]];
        let ups: Vec<Update> = pts.iter().enumerate().map(|(i, p)| update(i as u32, p, 1.0)).collect();
        let a = Bulyan { f: 1 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(a.accepted.len(), 5, "theta = n - 2f");
        assert!(!a.accepted.contains(&5), "the outlier is not selected");
        // Coordinate 0 of the selected: the 3 closest to their median, averaged.
        let mut x: Vec<f32> = a.accepted.iter().map(|&c| pts[c as usize][0]).collect();
        x.sort_by(f32::total_cmp);
        let med = x[2];
        x.sort_by(|a, b| (a - med).abs().total_cmp(&(b - med).abs()));
        let want = (x[0] + x[1] + x[2]) as f64 / 3.0;
        assert!((a.delta.as_slice()[0] as f64 - want).abs() < 1e-6);
        assert!(Bulyan { f: 2 }.aggregate(&ctx(), &ups).is_err(), "n = 7 < 4f + 3 = 11");
        assert!(Bulyan { f: 1 }.check_cohort(6).is_err());
    }

    #[test]
    fn the_beta_closest_to_the_median_match_a_sort_by_closeness() {
        for n in 1..40usize {
            let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 * 0.5 - 2.0).collect();
            let mut sorted = v.clone();
            sorted.sort_by(f32::total_cmp);
            let med = median_of_sorted(&sorted) as f32;
            let mut by_closeness = v.clone();
            by_closeness.sort_by(|a, b| (a - med).abs().total_cmp(&(b - med).abs()).then(a.total_cmp(b)));
            for beta in 1..=n {
                let want = by_closeness[..beta].iter().map(|x| *x as f64).sum::<f64>() / beta as f64;
                assert_eq!(closest_to_median(&sorted, beta).to_bits(), want.to_bits(), "n = {n}, beta = {beta}");
            }
        }
    }
}
