//! `long_tail`: a long-tailed (class-imbalanced) training set split among clients, as in the
//! long-tail benchmarks of Cao et al. (LDAM, NeurIPS 2019) and Cui et al. ("Class-Balanced Loss
//! Based on Effective Number of Samples", CVPR 2019).
//!
//! The training set is first subsampled to the exponential profile n_k = floor(n_max rho^(-k/(C-1)))
//! for classes k = 0, ..., C - 1 (class 0 the head, class C - 1 the tail, n_max the smallest
//! class's size in the original data, rho = `imbalance` = n_0 / n_(C-1)); each class's kept samples
//! are a seeded random subset. The samples that are not kept belong to no client. The kept samples
//! are then dealt out IID (a random permutation cut into equal parts, as `iid`), or, with
//! `alpha > 0`, label-skewed: each class cut among the clients by proportions ~ Dir(alpha). The
//! test set is unchanged (balanced for Fashion-MNIST and MNIST), so test accuracy there is the
//! balanced accuracy the long-tail papers report.
//!
//! Parameters: `imbalance` (rho >= 1, default 100); `alpha` (Dirichlet concentration for a
//! label-skewed split, default 0 = IID split).
//!
//! ```toml
//! [data.partition]
//! use = "long_tail"
//! imbalance = 100.0
//! alpha = 0.0
//! ```

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, SECTION, array_split, class_indices, proportion_cuts, split_at_cuts};

/// The `long_tail` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongTail {
    /// rho = n_head / n_tail.
    pub imbalance: f64,
    /// Dirichlet concentration of a label-skewed split (0: IID).
    pub alpha: f64,
}

impl Default for LongTail {
    fn default() -> Self {
        LongTail { imbalance: 100.0, alpha: 0.0 }
    }
}

impl Params for LongTail {
    fn check(&self) -> Result<()> {
        if !(self.imbalance >= 1.0 && self.imbalance.is_finite()) {
            return Err(Error::config(
                format!("{SECTION}.imbalance"),
                format!("must be a finite number >= 1, got {}", self.imbalance),
            ));
        }
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return Err(Error::config(
                format!("{SECTION}.alpha"),
                format!("must be a finite number >= 0, got {}", self.alpha),
            ));
        }
        Ok(())
    }
}

/// The kept size of each of `classes` classes: floor(n_max rho^(-k / (C - 1))), at least 1.
pub fn long_tail_sizes(n_max: usize, classes: usize, imbalance: f64) -> Vec<usize> {
    (0..classes)
        .map(|k| {
            let e = if classes > 1 { k as f64 / (classes - 1) as f64 } else { 0.0 };
            ((n_max as f64 * imbalance.powf(-e)).floor() as usize).max(1)
        })
        .collect()
}

impl Partitioner for LongTail {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        let by_class = class_indices(data);
        let n_max = by_class.iter().map(Vec::len).min().unwrap_or(0);
        if n_max == 0 {
            return Err(Error::config(format!("{SECTION}.use"), "long_tail needs samples of every class"));
        }
        let sizes = long_tail_sizes(n_max, data.classes, self.imbalance);
        let kept: Vec<Vec<u32>> = by_class
            .iter()
            .zip(&sizes)
            .map(|(idx, &k)| {
                let mut pick: Vec<u32> = rng.choose(idx.len(), k).into_iter().map(|i| idx[i]).collect();
                pick.sort_unstable();
                pick
            })
            .collect();
        let total: usize = kept.iter().map(Vec::len).sum();
        if total < n_clients {
            return Err(Error::config(
                format!("{SECTION}.imbalance"),
                format!("the long-tailed set has {total} samples, fewer than the {n_clients} clients"),
            ));
        }
        if self.alpha == 0.0 {
            let mut all: Vec<u32> = kept.concat();
            rng.shuffle(&mut all);
            return Ok(array_split(&all, n_clients).into_iter().map(<[u32]>::to_vec).collect());
        }
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); n_clients];
        for class in &kept {
            let mut idx = class.clone();
            rng.shuffle(&mut idx);
            let p = rng.dirichlet(self.alpha, n_clients);
            for (part, piece) in parts.iter_mut().zip(split_at_cuts(&idx, &proportion_cuts(&p, idx.len()))) {
                part.extend_from_slice(piece);
            }
        }
        parts.iter_mut().for_each(|p| rng.shuffle(p));
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn class_sizes_follow_the_exponential_profile() {
        assert_eq!(long_tail_sizes(5000, 10, 100.0)[0], 5000);
        assert_eq!(long_tail_sizes(5000, 10, 100.0)[9], 50);
        let s = long_tail_sizes(1000, 3, 100.0);
        assert_eq!(s, vec![1000, 100, 10]);
        assert!(long_tail_sizes(100, 4, 1.0).iter().all(|&n| n == 100), "rho = 1 keeps every class whole");
    }

    #[test]
    fn the_kept_set_is_long_tailed_disjoint_and_split() {
        let d = toy(5, 400);
        for alpha in [0.0, 0.5] {
            let toml = format!("imbalance = 20.0\nalpha = {alpha}");
            let parts = run("long_tail", &toml, &d, 4, 3).unwrap();
            assert_disjoint(&parts, d.len(), false);
            let mut counts = vec![0usize; 5];
            for p in &parts {
                for (k, c) in d.label_histogram(p).into_iter().enumerate() {
                    counts[k] += c;
                }
            }
            assert_eq!(counts, long_tail_sizes(400, 5, 20.0), "alpha {alpha}");
            assert_eq!(parts, run("long_tail", &toml, &d, 4, 3).unwrap(), "deterministic");
        }
        let iid = run("long_tail", "imbalance = 20.0", &d, 4, 3).unwrap();
        assert!(iid.iter().all(|p| p.len().abs_diff(iid[0].len()) <= 1), "the IID split is equal-size");
        assert!(make("long_tail", "imbalance = 0.5").is_err());
        assert!(make("long_tail", "alpha = -1.0").is_err());
    }
}
