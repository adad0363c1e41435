//! `iid`: a uniformly random, equal-size split (NIID-Bench's "homo" partition).
//!
//! Follows NIID-Bench's `partition_data(partition="homo")`: a random permutation of all training
//! samples, cut with numpy's `array_split` into `data.clients` consecutive parts (the first
//! `N % clients` parts get one sample more). Every client sees the same label distribution up to
//! sampling noise. No parameters. This is the default partition for every dataset except
//! `synthetic`, whose default is `natural`.
//!
//! ```toml
//! [data.partition]
//! use = "iid"
//! ```

use fedkit_core::{Dataset, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, array_split, permuted_indices};

/// The `iid` partitioner (no parameters).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Iid {}

impl Params for Iid {}

/// Permute all `len` indices and `array_split` them into `n` parts.
pub(crate) fn iid_split(len: usize, n: usize, rng: &mut RngStream) -> Vec<Vec<u32>> {
    let perm = permuted_indices(len, rng);
    array_split(&perm, n).into_iter().map(<[u32]>::to_vec).collect()
}

impl Partitioner for Iid {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        Ok(iid_split(data.len(), n_clients, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn equal_sizes_disjoint_covering_deterministic() {
        let d = toy(10, 101);
        let a = run("iid", "", &d, 7, 1).unwrap();
        assert_disjoint(&a, d.len(), true);
        let sizes: Vec<usize> = a.iter().map(Vec::len).collect();
        assert_eq!(sizes, [145, 145, 144, 144, 144, 144, 144]);
        assert_eq!(a, run("iid", "", &d, 7, 1).unwrap());
        assert_ne!(a, run("iid", "", &d, 7, 2).unwrap());
    }

    #[test]
    fn parts_are_shuffled_not_contiguous() {
        let d = toy(10, 100);
        let a = run("iid", "", &d, 4, 3).unwrap();
        // A contiguous block of 250 interleaved labels would hold every label exactly 25 times;
        // a random draw almost surely does not.
        assert!(a.iter().any(|p| d.label_histogram(p).iter().any(|&c| c != 25)));
    }
}
