//! `flame`: Nguyen, Rieger, Chen, Yalame, Möllering, Fereidooni, Marchal, Miettinen, Mirhoseini,
//! Zeitouni, Koushanfar, Sadeghi, Schneider, "FLAME: Taming Backdoors in Federated Learning",
//! USENIX Security 2022.
//!
//! Three steps each round:
//! 1. Filtering: pairwise cosine distances 1 - cos(delta_i, delta_j) between the updates (one Gram
//!    matrix), clustered by HDBSCAN with min_cluster_size = n/2 + 1, min_samples = 1 and a single
//!    cluster allowed (the `hdbscan` crate on the precomputed matrix); the updates of the
//!    majority cluster are admitted, the rest (noise and minority clusters) rejected (detection
//!    rates are logged). On a precomputed matrix the Python `hdbscan` package FLAME uses takes a
//!    point's core distance to its min_samples-th neighbour not counting itself, the crate counting
//!    itself, so the crate gets min_samples + 1 = 2; its labels equal Python's (hdbscan 0.8.44) on
//!    all 40 cases of the committed fixture `tests/data/flame_hdbscan.json`.
//! 2. Clipping: S_t = the median of the norms ||delta_i|| of all n updates; every admitted update
//!    is clipped to S_t.
//! 3. Adaptive noise: the mean of the clipped admitted updates gets Gaussian noise of standard
//!    deviation lambda S_t per coordinate (the paper's lambda = 0.001 for image classification),
//!    drawn from the server's stream `flame_noise` (deterministic in simulation; a deployment draws
//!    it from the operating system).
//! The paper clusters the local models; on deltas (fedkit's exchange form) cosine distances
//! between local models are dominated by the shared global model, so fedkit clusters the deltas.
//! Records `flame_clip` (S_t).
//!
//! Parameters: `lambda` (the noise level lambda >= 0, default 0.001).
//!
//! ```toml
//! [aggregator]
//! use = "flame"
//! lambda = 0.001
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::clustering::hdbscan_labels;
use super::geometry::{aggregate_of, by_client, gram, rows};

/// FLAME.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Flame {
    pub lambda: f64,
}

impl Default for Flame {
    fn default() -> Self {
        Flame { lambda: 0.001 }
    }
}

impl Flame {
    /// Check lambda.
    pub fn validated(self) -> Result<Self> {
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return Err(Error::config(
                "aggregator.lambda",
                format!("must be a finite number >= 0, got {}", self.lambda),
            ));
        }
        Ok(self)
    }
}

/// HDBSCAN labels (-1: noise) of the points with pairwise distances `d` (n x n), with FLAME's
/// parameters: min cluster size n/2 + 1, Python's `min_samples = 1`, a single cluster allowed.
pub fn flame_labels(d: &[f64], n: usize) -> Result<Vec<i32>> {
    hdbscan_labels(d, n, n / 2 + 1, 1, true, "flame")
}

/// The admitted indices: the members of the largest cluster (all points when everything is
/// noise, as FLAME's single-cluster setting never leaves a majority unclustered).
pub fn majority(labels: &[i32]) -> Vec<usize> {
    let top = labels.iter().filter(|&&l| l >= 0).max().copied();
    let Some(top) = top else { return (0..labels.len()).collect() };
    let sizes: Vec<usize> = (0..=top).map(|c| labels.iter().filter(|&&l| l == c).count()).collect();
    let best = (0..=top as usize).max_by_key(|&c| (sizes[c], std::cmp::Reverse(c))).unwrap_or(0) as i32;
    (0..labels.len()).filter(|&i| labels[i] == best).collect()
}

impl Aggregator for Flame {
    fn aggregate(&mut self, r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "flame")?;
        let n = order.len();
        let g = gram(&rows(&order));
        let norm: Vec<f64> = (0..n).map(|i| g[i * n + i].sqrt()).collect();
        let dist: Vec<f64> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                if i == j { 0.0 } else { (1.0 - g[k] / (norm[i] * norm[j]).max(f64::MIN_POSITIVE)).max(0.0) }
            })
            .collect();
        let admitted = majority(&flame_labels(&dist, n)?);
        let mut sorted = norm.clone();
        sorted.sort_by(f64::total_cmp);
        let s_t = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        let d = order[0].delta.len();
        let mut values = vec![0.0f64; d];
        for &i in &admitted {
            let k = if norm[i] > s_t { s_t / norm[i] } else { 1.0 };
            values
                .iter_mut()
                .zip(order[i].delta.as_slice())
                .for_each(|(a, v)| *a += k * *v as f64 / admitted.len() as f64);
        }
        if self.lambda > 0.0 {
            let mut rng = r.rng("flame_noise");
            let sigma = self.lambda * s_t;
            values.iter_mut().for_each(|v| *v += sigma * rng.normal());
        }
        let kept: Vec<&Update> = admitted.iter().map(|&i| order[i]).collect();
        let mut agg = aggregate_of(&order[0].delta, values, &kept, Weighting::Robust)?;
        agg.metrics.insert("flame_clip".into(), s_t);
        Ok(agg)
    }
    fn filters(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn identical_benign_updates_are_all_accepted_and_outliers_rejected() {
        let same: Vec<Update> = (0..7).map(|i| update(i, &[1.0, 2.0, 3.0], 1.0)).collect();
        let a = Flame { lambda: 0.0 }.aggregate(&ctx(), &same).unwrap();
        assert_eq!(a.accepted, (0..7).collect::<Vec<_>>(), "n identical benign updates are all accepted");
        assert_eq!(a.delta.as_slice(), &[1.0, 2.0, 3.0]);
        // Seven similar updates and three pointing elsewhere: the three are rejected.
        let mut rng = fedkit_core::RngStream::new(4);
        let mut ups: Vec<Update> = (0..7)
            .map(|i| {
                update(
                    i,
                    &[1.0 + 0.05 * rng.normal() as f32, 1.0 + 0.05 * rng.normal() as f32, 0.02 * rng.normal() as f32],
                    1.0,
                )
            })
            .collect();
        ups.extend((7..10).map(|i| update(i, &[-1.0, 0.2, 3.0 + i as f32 * 0.1], 1.0)));
        let a = Flame { lambda: 0.0 }.aggregate(&ctx(), &ups).unwrap();
        assert!(
            a.accepted.iter().all(|&c| c < 7) && a.accepted.len() >= 5,
            "the three outliers are rejected: {:?}",
            a.accepted
        );
        assert!(Flame { lambda: -1.0 }.validated().is_err());
    }

    #[test]
    fn admitted_updates_are_clipped_to_the_median_norm() {
        // Norms 1, 2, 3, 4, 100 (all the same direction): the median is 3.
        let ups: Vec<Update> =
            [1.0f32, 2.0, 3.0, 4.0, 100.0].iter().enumerate().map(|(i, s)| update(i as u32, &[*s, 0.0], 1.0)).collect();
        let a = Flame { lambda: 0.0 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(a.metrics["flame_clip"], 3.0);
        let want = (1.0 + 2.0 + 3.0 + 3.0 + 3.0) / 5.0;
        assert!((a.delta.as_slice()[0] as f64 - want).abs() < 1e-6, "{:?}", a.delta.as_slice());
    }
}
