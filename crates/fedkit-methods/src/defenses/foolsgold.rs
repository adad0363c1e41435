//! `foolsgold`: Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil
//! Settings", RAID 2020 (FoolsGold).
//!
//! Sybils pushing the same poisoned objective send similar updates over time. The server keeps
//! each client's history H_i (the sum of its updates so far) and, each round, over the cohort:
//! cs_ij = cos(H_i, H_j); v_i = max_{j != i} cs_ij; pardoning cs_ij <- cs_ij v_i / v_j when
//! v_j > v_i; alpha_i = 1 - max_j cs_ij, clipped to [0, 1], divided by the largest alpha (the
//! most distinct client gets 1; the one with the largest is set to 0.99 first, as the authors'
//! code), then the logit alpha_i <- kappa (ln(alpha_i / (1 - alpha_i)) + 0.5) clipped to [0, 1]
//! (kappa = 1). The aggregate is sum_i alpha_i delta_i / sum_i alpha_i; clients with alpha_i = 0
//! are rejected (detection rates are logged). Server state: the histories of every client seen
//! (saved in checkpoints; memory: one model-sized vector per client).
//!
//! Parameters: `kappa` (the logit confidence, default 1.0).
//!
//! ```toml
//! [aggregator]
//! use = "foolsgold"
//! kappa = 1.0
//! ```

use std::collections::BTreeMap;

use fedkit_core::{Aggregate, Aggregator, Error, Result, RoundCtx, Update, Weighting};
use serde::{Deserialize, Serialize};

use super::geometry::{aggregate_of, by_client, gram};

/// FoolsGold.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FoolsGold {
    pub kappa: f64,
    #[serde(skip)]
    history: BTreeMap<u32, Vec<f32>>,
}

impl Default for FoolsGold {
    fn default() -> Self {
        FoolsGold { kappa: 1.0, history: BTreeMap::new() }
    }
}

/// FoolsGold's weights for the rows' cosine similarity matrix (n x n).
pub fn foolsgold_weights(cs: &[f64], n: usize, kappa: f64) -> Vec<f64> {
    let mut cs = cs.to_vec();
    for i in 0..n {
        cs[i * n + i] = f64::NEG_INFINITY;
    }
    let v: Vec<f64> =
        (0..n).map(|i| cs[i * n..(i + 1) * n].iter().copied().fold(f64::NEG_INFINITY, f64::max)).collect();
    for i in 0..n {
        for j in 0..n {
            if i != j && v[j] > v[i] && v[j] > 0.0 {
                cs[i * n + j] *= v[i] / v[j];
            }
        }
    }
    let mut alpha: Vec<f64> = (0..n)
        .map(|i| (1.0 - cs[i * n..(i + 1) * n].iter().copied().fold(f64::NEG_INFINITY, f64::max)).clamp(0.0, 1.0))
        .collect();
    let top = alpha.iter().copied().fold(0.0, f64::max);
    if top <= 0.0 {
        return vec![0.0; n];
    }
    alpha.iter_mut().for_each(|a| *a /= top);
    alpha.iter_mut().for_each(|a| {
        let x = a.min(0.99);
        *a = if x <= 0.0 { 0.0 } else { (kappa * ((x / (1.0 - x)).ln() + 0.5)).clamp(0.0, 1.0) };
    });
    alpha
}

impl Aggregator for FoolsGold {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "foolsgold")?;
        let d = order[0].delta.len();
        for u in &order {
            let h = self.history.entry(u.client).or_insert_with(|| vec![0.0; d]);
            if h.len() != d {
                return Err(Error::Shape(format!(
                    "foolsgold: client {}'s history has {} values, its update {d}",
                    u.client,
                    h.len()
                )));
            }
            h.iter_mut().zip(u.delta.as_slice()).for_each(|(a, v)| *a += v);
        }
        let n = order.len();
        let hist: Vec<&[f32]> = order.iter().map(|u| self.history[&u.client].as_slice()).collect();
        let g = gram(&hist);
        let norm: Vec<f64> = (0..n).map(|i| g[i * n + i].sqrt().max(f64::MIN_POSITIVE)).collect();
        let cs: Vec<f64> = (0..n * n).map(|k| g[k] / (norm[k / n] * norm[k % n])).collect();
        let alpha = if n == 1 { vec![1.0] } else { foolsgold_weights(&cs, n, self.kappa) };
        let total: f64 = alpha.iter().sum();
        let mut values = vec![0.0f64; d];
        if total > 0.0 {
            for (u, a) in order.iter().zip(&alpha) {
                values.iter_mut().zip(u.delta.as_slice()).for_each(|(x, v)| *x += a * *v as f64 / total);
            }
        }
        let kept: Vec<&Update> = order.iter().zip(&alpha).filter(|(_, a)| **a > 0.0).map(|(u, _)| *u).collect();
        aggregate_of(&order[0].delta, values, &kept, Weighting::Robust)
    }
    fn filters(&self) -> bool {
        true
    }
    fn state(&self) -> Result<Vec<u8>> {
        fedkit_core::codec::to_bytes(&self.history, "foolsgold state")
    }
    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            self.history = fedkit_core::codec::from_bytes(bytes, "foolsgold state")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn sybils_with_identical_histories_get_zero_weight() {
        // Three distinct honest directions and two sybils sending the same update.
        let ups = vec![
            update(0, &[1.0, 0.0, 0.0, 0.1], 1.0),
            update(1, &[0.0, 1.0, 0.0, 0.1], 1.0),
            update(2, &[0.0, 0.0, 1.0, 0.1], 1.0),
            update(3, &[0.5, 0.5, 0.5, 5.0], 1.0),
            update(4, &[0.5, 0.5, 0.5, 5.0], 1.0),
        ];
        let mut fg = FoolsGold::default();
        let a = fg.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(a.accepted, vec![0, 1, 2], "the sybils are rejected");
        assert!(a.delta.as_slice()[3] < 0.2, "{:?}", a.delta.as_slice());
        let mut back = FoolsGold::default();
        back.load_state(&fg.state().unwrap()).unwrap();
        assert_eq!(back.history, fg.history);
    }
}
