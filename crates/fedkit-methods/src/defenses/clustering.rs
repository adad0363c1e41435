//! HDBSCAN over precomputed distances (the `hdbscan` crate), shared by FLAME and DeepSight, with
//! Python hdbscan's parameter conventions: the crate counts a point among its own neighbours, so
//! Python's `min_samples = k` is the crate's k + 1 (checked against Python on FLAME's committed
//! fixture, `tests/data/flame_hdbscan.json`). Not a registered method.

use fedkit_core::{Error, Result};
use hdbscan::{DistanceMetric, Hdbscan, HdbscanHyperParams};

/// HDBSCAN labels (-1: noise) of the n points with pairwise distances `d` (n x n, row-major).
/// `min_cluster_size` and `min_samples` as in Python's hdbscan (both capped to what n points
/// allow); with fewer than 3 points everything is one cluster.
pub fn hdbscan_labels(
    d: &[f64],
    n: usize,
    min_cluster_size: usize,
    min_samples: usize,
    allow_single_cluster: bool,
    method: &str,
) -> Result<Vec<i32>> {
    if n < 3 {
        return Ok(vec![0; n]);
    }
    // Off-diagonal zeros become a tiny distance: the crate gives exact duplicates an infinite
    // lambda, which breaks its single-cluster labelling (Python labels the points that join at
    // the largest distance noise; the crate would keep them).
    let tiny = 1e-12 * d.iter().copied().fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let matrix: Vec<Vec<f64>> =
        (0..n).map(|i| (0..n).map(|j| if i != j { d[i * n + j].max(tiny) } else { 0.0 }).collect()).collect();
    let hp = HdbscanHyperParams::builder()
        .min_cluster_size(min_cluster_size.clamp(2, n))
        .min_samples((min_samples + 1).clamp(2, n - 1))
        .allow_single_cluster(allow_single_cluster)
        .dist_metric(DistanceMetric::Precalculated)
        .build();
    Hdbscan::new(&matrix, hp).cluster().map_err(|e| Error::Method(format!("{method}: clustering failed: {e}")))
}

/// Euclidean distances between the rows (n x n).
pub fn euclidean(rows: &[Vec<f64>]) -> Vec<f64> {
    let n = rows.len();
    let mut d = vec![0.0; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let v = rows[i].iter().zip(&rows[j]).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_far_from_one_tight_group_is_noise_as_in_python() {
        // Python: HDBSCAN(metric="precomputed", allow_single_cluster=True, min_samples=3) gives
        // [0]*9 + [-1] for both matrices.
        let n = 10;
        for within in [0.0, 0.01] {
            let d: Vec<f64> = (0..n * n)
                .map(|k| {
                    let (i, j) = (k / n, k % n);
                    if i == j {
                        0.0
                    } else if i == 9 || j == 9 {
                        1.0
                    } else {
                        within
                    }
                })
                .collect();
            let labels = hdbscan_labels(&d, n, 5, 3, true, "t").unwrap();
            assert_eq!(labels, [0, 0, 0, 0, 0, 0, 0, 0, 0, -1], "within {within}");
        }
    }
}
