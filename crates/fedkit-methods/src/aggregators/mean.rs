//! `mean`: the (weighted) average of the cohort's deltas, FedAvg's aggregation rule
//! (McMahan et al., AISTATS 2017): delta = sum_k p_k delta_k with p_k = n_k / sum n_k
//! (`weighted = true`, the default) or p_k = 1/K (`weighted = false`).
//!
//! Sums run in f64 in client-id order, so the result does not depend on the order in which
//! clients finished. Accepts every client. Side payloads (`Update.extras`: control variates,
//! step counts) are averaged key by key with the same weights (`Extras::weighted_mean`).
//!
//! ```toml
//! [aggregator]
//! use = "mean"
//! weighted = true
//! ```

use fedkit_core::{Aggregate, Aggregator, Error, Extras, Metrics, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

/// The mean aggregator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mean {
    /// Weight each update by its sample count (true) or equally (false).
    pub weighted: bool,
}

impl Default for Mean {
    fn default() -> Self {
        Mean { weighted: true }
    }
}

/// The weighted mean of `updates` (sorted by client id first); weights are the updates' own when
/// `weighted`, else 1.
pub fn weighted_mean(updates: &[Update], weighted: bool) -> Result<Aggregate> {
    let first = updates.first().ok_or_else(|| Error::Method("no updates to aggregate".into()))?;
    let mut order: Vec<&Update> = updates.iter().collect();
    order.sort_by_key(|u| u.client);
    let mut acc = vec![0.0f64; first.delta.len()];
    let mut total = 0.0f64;
    for u in &order {
        let w = if weighted { u.weight as f64 } else { 1.0 };
        if u.delta.len() != acc.len() {
            return Err(Error::Shape(format!(
                "update of client {} has {} values, expected {}",
                u.client,
                u.delta.len(),
                acc.len()
            )));
        }
        total += w;
        acc.iter_mut().zip(u.delta.as_slice()).for_each(|(a, d)| *a += w * *d as f64);
    }
    if total <= 0.0 {
        return Err(Error::Method("aggregation weights sum to zero".into()));
    }
    let mut delta = first.delta.zeros_like();
    delta.as_mut_slice().iter_mut().zip(&acc).for_each(|(d, a)| *d = (a / total) as f32);
    Ok(Aggregate {
        delta,
        weight: total as f32,
        extras: Extras::weighted_mean(
            &order.iter().map(|u| (&u.extras, if weighted { u.weight as f64 } else { 1.0 })).collect::<Vec<_>>(),
        )?,
        accepted: order.iter().map(|u| u.client).collect(),
        metrics: Metrics::new(),
        weighting: if weighted { Weighting::UpdateWeights } else { Weighting::Uniform },
    })
}

impl Aggregator for Mean {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        weighted_mean(updates, self.weighted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::{Layout, ParamKind, Params};
    use std::sync::Arc;

    fn up(client: u32, v: Vec<f32>, weight: f32) -> Update {
        let mut l = Layout::new();
        l.push("w", &[v.len()], ParamKind::Weight);
        let delta = Params::from_vec(Arc::new(l), v).unwrap();
        Update { client, delta, weight, extras: Extras::default(), metrics: Metrics::new() }
    }

    #[test]
    fn weights_are_respected_and_order_does_not_matter() {
        let a = vec![up(0, vec![1.0, 0.0], 1.0), up(1, vec![4.0, 3.0], 3.0)];
        let m = weighted_mean(&a, true).unwrap();
        assert_eq!(m.delta.as_slice(), &[3.25, 2.25]);
        let u = weighted_mean(&a, false).unwrap();
        assert_eq!(u.delta.as_slice(), &[2.5, 1.5]);
        let rev: Vec<Update> = a.iter().rev().cloned().collect();
        assert_eq!(weighted_mean(&rev, true).unwrap().delta, m.delta);
        assert_eq!(m.accepted, vec![0, 1]);
    }

    #[test]
    fn extras_are_averaged_with_the_same_weights() {
        let mut a = vec![up(0, vec![1.0, 0.0], 1.0), up(1, vec![4.0, 3.0], 3.0)];
        a[0].extras.insert("tau", fedkit_core::Extra::Scalar(2.0));
        a[1].extras.insert("tau", fedkit_core::Extra::Scalar(6.0));
        a[0].extras.insert("c", fedkit_core::Extra::Vector(vec![1.0, -1.0]));
        a[1].extras.insert("c", fedkit_core::Extra::Vector(vec![5.0, 3.0]));
        let m = weighted_mean(&a, true).unwrap();
        assert_eq!(m.extras.scalar("tau"), Some(5.0));
        assert_eq!(m.extras.get("c"), Some(&fedkit_core::Extra::Vector(vec![4.0, 2.0])));
        a[1].extras.insert("c", fedkit_core::Extra::Vector(vec![5.0]));
        assert!(weighted_mean(&a, true).is_err(), "mismatched lengths are an error");
    }

    #[test]
    fn identical_updates_return_that_update() {
        let a: Vec<Update> = (0..5).map(|i| up(i, vec![0.1, -0.7, 3.0], 1.0 + i as f32)).collect();
        assert_eq!(weighted_mean(&a, true).unwrap().delta.as_slice(), &[0.1, -0.7, 3.0]);
    }
}
