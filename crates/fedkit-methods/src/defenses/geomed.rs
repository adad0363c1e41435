//! `geomed`: the geometric median of the updates (robust federated aggregation, RFA), Pillutla,
//! Kakade, Harchaoui, "Robust Aggregation for Federated Learning", IEEE TSP 2022 (arXiv 2019).
//!
//! The weighted geometric median argmin_v sum_i alpha_i ||v - delta_i|| (alpha_i the sample
//! weights) by the smoothed Weiszfeld algorithm: from the weighted mean,
//! v <- sum_i beta_i delta_i / sum_i beta_i with beta_i = alpha_i / max(nu, ||v - delta_i||),
//! for `iters` iterations (RFA uses a few; each costs one pass over the updates). It rejects no
//! client (detection rates are not logged). Robust to a minority of arbitrary updates (breakdown
//! point 1/2).
//!
//! Parameters: `iters` (Weiszfeld iterations, default 3); `nu` (the smoothing nu > 0, default
//! 1e-6).
//!
//! ```toml
//! [aggregator]
//! use = "geomed"
//! iters = 3
//! nu = 1e-6
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::geometry::{aggregate_of, by_client};

/// The geometric median (RFA).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoMed {
    pub iters: usize,
    pub nu: f64,
}

impl Default for GeoMed {
    fn default() -> Self {
        GeoMed { iters: 3, nu: 1e-6 }
    }
}

impl GeoMed {
    /// Check nu.
    pub fn validated(self) -> Result<Self> {
        if !(self.nu > 0.0 && self.nu.is_finite()) {
            return Err(Error::config("aggregator.nu", format!("must be a finite number > 0, got {}", self.nu)));
        }
        Ok(self)
    }
}

/// sum_i w_i x_i / sum_i w_i in f64.
fn weighted(rows: &[&Update], w: &[f64]) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    let mut acc = vec![0.0f64; rows[0].delta.len()];
    for (u, &wi) in rows.iter().zip(w) {
        acc.iter_mut().zip(u.delta.as_slice()).for_each(|(a, v)| *a += wi * *v as f64);
    }
    acc.iter_mut().for_each(|a| *a /= total.max(f64::MIN_POSITIVE));
    acc
}

impl Aggregator for GeoMed {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "geomed")?;
        let alpha: Vec<f64> = order.iter().map(|u| u.weight.max(0.0) as f64).collect();
        let mut v = weighted(&order, &alpha);
        for _ in 0..self.iters {
            let beta: Vec<f64> = order
                .iter()
                .zip(&alpha)
                .map(|(u, a)| {
                    let d = u.delta.as_slice().iter().zip(&v).map(|(x, m)| (*x as f64 - m).powi(2)).sum::<f64>().sqrt();
                    a / d.max(self.nu)
                })
                .collect();
            v = weighted(&order, &beta);
        }
        aggregate_of(&order[0].delta, v, &order, Weighting::Robust)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn converges_to_the_geometric_median_and_resists_an_outlier() {
        // Four points at the corners of a unit square and one far away: the outlier pulls the
        // geometric median along the diagonal by less than one unit (it pulls the mean by 20).
        let pts = [[0.0f32, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [100.0, 100.0]];
        let ups: Vec<Update> = pts.iter().enumerate().map(|(i, p)| update(i as u32, p, 1.0)).collect();
        let a = GeoMed { iters: 200, nu: 1e-9 }.aggregate(&ctx(), &ups).unwrap();
        let (x, y) = (a.delta.as_slice()[0], a.delta.as_slice()[1]);
        assert!((0.5..1.0).contains(&x) && (x - y).abs() < 1e-4, "({x}, {y})");
        // Its defining property: no direction decreases sum ||v - x_i|| (the gradient vanishes).
        let g: (f64, f64) = pts.iter().fold((0.0, 0.0), |g, p| {
            let (dx, dy) = ((x - p[0]) as f64, (y - p[1]) as f64);
            let n = (dx * dx + dy * dy).sqrt();
            (g.0 + dx / n, g.1 + dy / n)
        });
        assert!(g.0.abs() < 1e-3 && g.1.abs() < 1e-3, "{g:?}");
        assert!(GeoMed { nu: 0.0, ..GeoMed::default() }.validated().is_err());
    }
}
