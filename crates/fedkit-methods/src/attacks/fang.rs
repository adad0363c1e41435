//! `fang`: the Krum-targeted local model poisoning attack, Fang, Cao, Jia, Gong, "Local Model
//! Poisoning Attacks to Byzantine-Robust Federated Learning", USENIX Security 2020 (Section 4.2,
//! "Attacking Krum").
//!
//! The attackers estimate the direction s in which the global model would move without attack,
//! s = sign(mean of the reference updates) (the benign updates of the round with `knowledge =
//! "full"`, their own honest updates with `"partial"`), and all c of them send the crafted update
//! delta' = -lambda s, the global model moved against that direction (the paper's w'_1 = w_Re -
//! lambda s; its other attackers sit within epsilon of w'_1, here exactly on it, as the
//! maintained reimplementations do). lambda starts at the paper's upper bound
//!   lambda_0 = min_i sum_{l in G_i} ||b_l - b_i|| / ((m - 2c - 1) sqrt(d)) + max_i ||b_i|| / sqrt(d),
//! over the reference updates b_i, G_i the m - c - 2 references nearest to b_i, m the cohort size
//! and d the model size, and is halved until Krum (with f = c) on the references plus the c
//! crafted copies selects a crafted one, or lambda falls below 1e-5. The distances between the
//! crafted update and the references are closed-form in lambda (||-lambda s - b||^2 = lambda^2
//! |s|_0 + 2 lambda <s, b> + ||b||^2), so the search costs one Gram matrix of the references. It
//! replaces only the attacking clients' updates; `fang_lambda` is not logged (stages have no
//! metrics), the unit test checks the search.
//!
//! Parameters: `knowledge` (`full` or `partial`).
//!
//! ```toml
//! [[pipeline]]
//! use = "fang"
//! on = "malicious"
//! knowledge = "full"
//! ```

use fedkit_core::{Result, RoundCtx, Stage, Update};
use serde::{Deserialize, Serialize};

use super::cohort::{Knowledge, mean_std, replace, split};
use crate::defenses::geometry::sq_distances;
use crate::defenses::krum::krum_scores;

/// Below this lambda the search stops (the paper's threshold).
const LAMBDA_MIN: f64 = 1e-5;

/// Fang et al.'s attack on Krum.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fang {
    pub knowledge: Knowledge,
}

/// The paper's upper bound lambda_0 for references with pairwise squared distances `d2` (r x r),
/// squared norms `norm2`, a cohort of m with c attackers, and d parameters.
fn lambda_bound(d2: &[f64], norm2: &[f64], m: usize, c: usize, d: usize) -> f64 {
    let r = norm2.len();
    let sqrt_d = (d as f64).sqrt();
    let spread = if m > 2 * c + 1 {
        let near = (m - c).saturating_sub(2).min(r - 1);
        let least = (0..r)
            .map(|i| {
                let mut ds: Vec<f64> = (0..r).filter(|&j| j != i).map(|j| d2[i * r + j].max(0.0).sqrt()).collect();
                ds.sort_by(f64::total_cmp);
                ds[..near].iter().sum::<f64>()
            })
            .fold(f64::INFINITY, f64::min);
        least / ((m - 2 * c - 1) as f64 * sqrt_d)
    } else {
        0.0
    };
    spread + norm2.iter().map(|v| v.sqrt()).fold(0.0, f64::max) / sqrt_d
}

/// True when Krum with f = c, on the references (squared distances `d2`) plus c copies of the
/// crafted update (squared distances `to_crafted` to each reference), selects a crafted copy.
fn krum_picks_crafted(d2: &[f64], to_crafted: &[f64], c: usize) -> bool {
    let r = to_crafted.len();
    let n = r + c;
    let mut all = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            all[i * n + j] = match (i < r, j < r) {
                (true, true) => d2[i * r + j],
                (true, false) => to_crafted[i],
                (false, true) => to_crafted[j],
                (false, false) => 0.0,
            };
        }
    }
    let scores = krum_scores(&all, n, c);
    let best = (0..n).min_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b))).unwrap_or(0);
    best >= r
}

impl Stage for Fang {
    fn on_cohort(&mut self, r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        let (bad, reference) = split(r, us, self.knowledge);
        if bad.is_empty() || reference.is_empty() {
            return Ok(());
        }
        let (mu, _) = mean_std(us, &reference)?;
        let s: Vec<f64> = mu
            .iter()
            .map(|m| {
                if *m > 0.0 {
                    1.0
                } else if *m < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            })
            .collect();
        let s_count = s.iter().filter(|v| **v != 0.0).count() as f64;
        let rows: Vec<&[f32]> = reference.iter().map(|&i| us[i].delta.as_slice()).collect();
        let d2 = sq_distances(&rows);
        let norm2: Vec<f64> = rows.iter().map(|b| b.iter().map(|v| (*v as f64).powi(2)).sum()).collect();
        let dot: Vec<f64> = rows.iter().map(|b| b.iter().zip(&s).map(|(v, s)| *v as f64 * s).sum()).collect();
        let c = bad.len();
        let mut lambda = lambda_bound(&d2, &norm2, us.len(), c, s.len());
        while lambda >= LAMBDA_MIN {
            let to_crafted: Vec<f64> =
                (0..rows.len()).map(|i| lambda * lambda * s_count + 2.0 * lambda * dot[i] + norm2[i]).collect();
            if krum_picks_crafted(&d2, &to_crafted, c) {
                break;
            }
            lambda /= 2.0;
        }
        let crafted: Vec<f64> = s.iter().map(|s| -lambda * s).collect();
        replace(us, &bad, &crafted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defenses::geometry::by_client;
    use crate::defenses::krum::{Krum, krum_ranking};
    use crate::defenses::testing::{ctx_with, update};
    use fedkit_core::Aggregator;

    const D: usize = 50;

    /// Seven benign updates spread widely (sd 1 per coordinate) around a small positive mean,
    /// as noisy SGD updates are, and two attackers.
    fn cohort() -> Vec<Update> {
        let mut rng = fedkit_core::RngStream::new(9);
        let mut us: Vec<Update> = (0..7)
            .map(|i| {
                let v: Vec<f32> = (0..D).map(|_| (0.3 + rng.normal()) as f32).collect();
                update(i, &v, 1.0)
            })
            .collect();
        us.push(update(7, &[0.0; D], 1.0));
        us.push(update(8, &[0.0; D], 1.0));
        us
    }

    #[test]
    fn krum_selects_the_crafted_update_which_opposes_the_benign_direction() {
        let mut us = cohort();
        Fang::default().on_cohort(&ctx_with(1, &[7, 8]), &mut us).unwrap();
        let crafted = us[7].delta.as_slice().to_vec();
        assert_eq!(crafted, us[8].delta.as_slice(), "every attacker sends the same update");
        // -lambda sign(benign mean), lambda > 0.
        let (mu, _) = mean_std(&us, &(0..7).collect::<Vec<_>>()).unwrap();
        let lambda = crafted[0].abs();
        assert!(lambda > 0.0);
        for (c, m) in crafted.iter().zip(&mu) {
            assert_eq!(*c, -(lambda * m.signum() as f32), "{crafted:?}");
        }
        let order = by_client(&us, 1, "t").unwrap();
        assert!(krum_ranking(&order, 2)[0] >= 7, "Krum keeps an attacker");
        let agg = Krum { f: 2 }.aggregate(&ctx_with(1, &[7, 8]), &us).unwrap();
        assert_eq!(agg.delta.as_slice(), crafted.as_slice());
        // The benign updates are untouched.
        assert_eq!(
            us[..7].iter().map(|u| u.delta.as_slice().to_vec()).collect::<Vec<_>>(),
            cohort()[..7].iter().map(|u| u.delta.as_slice().to_vec()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn lambda_is_the_largest_halving_of_the_bound_that_krum_accepts() {
        let mut us = cohort();
        Fang::default().on_cohort(&ctx_with(1, &[7, 8]), &mut us).unwrap();
        let lambda = us[7].delta.as_slice()[0].abs() as f64;
        let s: Vec<f64> = us[7].delta.as_slice().iter().map(|v| -(v.signum() as f64)).collect();
        // Twice lambda (the previous step of the search) must fail, unless lambda is the bound.
        let benign: Vec<&[f32]> = us[..7].iter().map(|u| u.delta.as_slice()).collect();
        let d2 = sq_distances(&benign);
        let norm2: Vec<f64> = benign.iter().map(|b| b.iter().map(|v| (*v as f64).powi(2)).sum()).collect();
        let bound = lambda_bound(&d2, &norm2, 9, 2, D);
        let at = |l: f64| -> Vec<f64> {
            benign.iter().map(|b| b.iter().zip(&s).map(|(v, s)| (-l * s - *v as f64).powi(2)).sum()).collect()
        };
        assert!(krum_picks_crafted(&d2, &at(lambda), 2));
        assert!(lambda >= LAMBDA_MIN && lambda <= bound + 1e-9);
        if lambda < bound * 0.99 {
            assert!(!krum_picks_crafted(&d2, &at(2.0 * lambda), 2));
        }
    }
}
