//! `fltrust`: Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
//! Bootstrapping", NDSS 2021.
//!
//! The server holds a small clean root dataset (`root_samples` samples drawn once, seeded, from
//! the pooled training data: a simulation-only stand-in for the data the service provider
//! collects) and each round computes its own update g_0 by training from the global model on it,
//! with the clients' local training settings (`[client]`). Each client's trust score is
//! TS_i = ReLU(cos(g_i, g_0)); each update is rescaled to g_0's norm, g_i ||g_0|| / ||g_i||; the
//! aggregate is sum_i TS_i g_i' / sum_i TS_i. Updates with TS_i = 0 are rejected (detection rates
//! are logged); if every score is 0 the aggregate is zero (the model does not move).
//!
//! Parameters: `root_samples` (the root set's size, default 100 as in the paper).
//!
//! ```toml
//! [aggregator]
//! use = "fltrust"
//! root_samples = 100
//! ```

use fedkit_core::{
    Aggregate, Aggregator, AggregatorView, Error, NoHook, PlainStep, Result, RngStream, RoundCtx, Update, Weighting,
    local_train,
};
use serde::{Deserialize, Serialize};

use super::geometry::{aggregate_of, by_client};

/// FLTrust.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlTrust {
    pub root_samples: usize,
}

impl Default for FlTrust {
    fn default() -> Self {
        FlTrust { root_samples: 100 }
    }
}

/// Trust-weighted, norm-matched combination of the updates `rows` against the server update
/// `g0`: the aggregate values and each row's trust score.
pub fn fltrust_combine(rows: &[&[f32]], g0: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
    let n0 = dot(g0, g0).sqrt();
    let mut acc = vec![0.0f64; g0.len()];
    let mut scores = Vec::with_capacity(rows.len());
    for r in rows {
        let ni = dot(r, r).sqrt();
        let ts = if ni > 0.0 && n0 > 0.0 { (dot(r, g0) / (ni * n0)).max(0.0) } else { 0.0 };
        if ts > 0.0 {
            let k = ts * n0 / ni;
            acc.iter_mut().zip(r.iter()).for_each(|(a, v)| *a += k * *v as f64);
        }
        scores.push(ts);
    }
    let total: f64 = scores.iter().sum();
    if total > 0.0 {
        acc.iter_mut().for_each(|a| *a /= total);
    }
    (acc, scores)
}

impl Aggregator for FlTrust {
    fn aggregate(&mut self, _r: &RoundCtx, _updates: &[Update]) -> Result<Aggregate> {
        Err(Error::Method("fltrust needs the server's view (a model and a root set): run it in the engine".into()))
    }
    fn aggregate_with(&mut self, r: &RoundCtx, updates: &[Update], view: &mut AggregatorView) -> Result<Aggregate> {
        let order = by_client(updates, 1, "fltrust")?;
        if self.root_samples == 0 {
            return Err(Error::config("aggregator.root_samples", "must be at least 1"));
        }
        let data = view.server_data;
        let mut pick =
            RngStream::derive(r.seed, "fltrust_root", 0, 0).choose(data.len(), self.root_samples.min(data.len()));
        pick.sort_unstable();
        let root = data.subset(&pick);
        let mut w = r.global.clone();
        let mut rng = RngStream::derive(r.seed, "fltrust_train", r.round as u64, 0);
        local_train(
            view.model,
            &mut w,
            &root,
            view.train,
            view.train.epochs,
            &mut NoHook,
            &PlainStep,
            r.round,
            &mut rng,
        )?;
        let g0 = w.sub(r.global);
        let rows: Vec<&[f32]> = order.iter().map(|u| u.delta.as_slice()).collect();
        let (values, scores) = fltrust_combine(&rows, g0.as_slice());
        let trusted: Vec<&Update> = order.iter().zip(&scores).filter(|(_, s)| **s > 0.0).map(|(u, _)| *u).collect();
        let mut agg = aggregate_of(&order[0].delta, values, &trusted, Weighting::Robust)?;
        agg.metrics.insert("trust_mean".into(), scores.iter().sum::<f64>() / scores.len() as f64);
        Ok(agg)
    }
    fn filters(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_is_the_clipped_cosine_and_updates_take_the_server_norm() {
        let g0 = [1.0f32, 0.0];
        let rows: Vec<&[f32]> = vec![&[3.0, 0.0], &[1.0, 1.0], &[-5.0, 0.0]];
        let (agg, ts) = fltrust_combine(&rows, &g0);
        let c = 1.0 / 2f64.sqrt();
        assert!((ts[0] - 1.0).abs() < 1e-12 && (ts[1] - c).abs() < 1e-12 && ts[2] == 0.0, "{ts:?}");
        // (1 * (1, 0) + c * (1, 1)/sqrt(2)) / (1 + c)
        let want = [(1.0 + c * c) / (1.0 + c), (c * c) / (1.0 + c)];
        assert!((agg[0] - want[0]).abs() < 1e-9 && (agg[1] - want[1]).abs() < 1e-9, "{agg:?}");
        let (zero, _) = fltrust_combine(&[&[-1.0f32, 0.0][..]], &g0);
        assert_eq!(zero, vec![0.0, 0.0], "nobody trusted: the model does not move");
    }
}
