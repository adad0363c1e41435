//! `multi_krum`: Multi-Krum, Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with
//! Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017.
//!
//! Ranks the n updates by Krum's score (the sum of the n - f - 2 smallest squared distances to
//! the others; see `krum`) and averages the m best with their sample weights (the paper averages
//! them equally; with equal client sizes the two agree); the other n - m
//! are rejected (detection rates are logged). m = 0 (the default) keeps n - f. Needs
//! n > 2f + 2.
//!
//! Parameters: `f` (Byzantine updates tolerated, default 1); `m` (updates kept, default 0 = n - f).
//!
//! ```toml
//! [aggregator]
//! use = "multi_krum"
//! f = 1
//! m = 0
//! ```

use fedkit_core::{Aggregate, Aggregator, Result, RoundCtx, Update};
use serde::{Deserialize, Serialize};

use super::geometry::by_client;
use super::krum::{check_cohort, krum_ranking};
use crate::aggregators::mean::weighted_mean;

/// Multi-Krum.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiKrum {
    pub f: usize,
    pub m: usize,
}

impl Default for MultiKrum {
    fn default() -> Self {
        MultiKrum { f: 1, m: 0 }
    }
}

impl Aggregator for MultiKrum {
    fn aggregate(&mut self, _r: &RoundCtx, updates: &[Update]) -> Result<Aggregate> {
        let order = by_client(updates, 1, "multi_krum")?;
        let n = order.len();
        check_cohort("multi_krum", self.f, n, "aggregator.f")?;
        let m = if self.m == 0 { n - self.f } else { self.m.min(n) };
        let kept: Vec<Update> = krum_ranking(&order, self.f)[..m].iter().map(|&i| order[i].clone()).collect();
        weighted_mean(&kept, true)
    }
    fn filters(&self) -> bool {
        true
    }
    fn check_cohort(&self, n: usize) -> Result<()> {
        check_cohort("multi_krum", self.f, n, "aggregator.f")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn averages_the_m_best_by_krum_score() {
        let pts = [[1.0f32, 1.0], [1.2, 0.8], [0.8, 1.2], [1.0, 1.1], [50.0, 50.0]];
        let ups: Vec<Update> = pts.iter().enumerate().map(|(i, p)| update(i as u32, p, 1.0 + i as f32)).collect();
        let a = MultiKrum { f: 1, m: 0 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(a.accepted, vec![0, 1, 2, 3], "the outlier is rejected");
        let w: Vec<f32> = (1..=4).map(|x| x as f32).collect();
        let want = |k: usize| (0..4).map(|i| w[i] * pts[i][k]).sum::<f32>() / w.iter().sum::<f32>();
        assert!((a.delta.as_slice()[0] - want(0)).abs() < 1e-6 && (a.delta.as_slice()[1] - want(1)).abs() < 1e-6);
        let one = MultiKrum { f: 1, m: 1 }.aggregate(&ctx(), &ups).unwrap();
        assert_eq!(one.accepted.len(), 1, "m = 1 is Krum");
    }
}
