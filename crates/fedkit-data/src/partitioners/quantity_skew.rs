//! `quantity_skew`: IID labels but Dirichlet-distributed client sizes (NIID-Bench's
//! "iid-diff-quantity", q ~ Dir(beta)).
//!
//! Follows NIID-Bench's `partition_data(partition="iid-diff-quantity")`: a random permutation of
//! all N training samples; proportions p ~ Dir(alpha) over the clients are redrawn until
//! `min(p) * N >= min_size`; the permutation is cut at `(cumsum(p) * N)` (as integers, the last cut
//! dropped). Smaller `alpha` gives more unequal sizes.
//!
//! Parameters:
//! - `alpha` (default 0.5): Dirichlet concentration, > 0 (`beta`, the paper's name, is an alias).
//! - `min_size` (default 10, fixed at 10 in NIID-Bench): the smallest allowed client.
//!
//! After 1000 redraws without success it stops with an error suggesting fewer clients, a larger
//! alpha or a smaller min_size (NIID-Bench would loop forever).
//!
//! ```toml
//! [data.partition]
//! use = "quantity_skew"
//! alpha = 0.5
//! ```

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{
    MAX_REDRAWS, Params, SECTION, check_min_size, check_positive, permuted_indices, proportion_cuts, split_at_cuts,
};

/// The `quantity_skew` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantitySkew {
    /// Dirichlet concentration (the paper's beta).
    #[serde(alias = "beta")]
    pub alpha: f64,
    /// Smallest allowed client size.
    pub min_size: usize,
}

impl Default for QuantitySkew {
    fn default() -> Self {
        QuantitySkew { alpha: 0.5, min_size: 10 }
    }
}

impl Params for QuantitySkew {
    fn check(&self) -> Result<()> {
        check_positive("alpha", self.alpha)
    }
}

impl Partitioner for QuantitySkew {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        check_min_size(self.min_size, n_clients, data.len())?;
        let idx = permuted_indices(data.len(), rng);
        let total = data.len() as f64;
        for _ in 0..MAX_REDRAWS {
            let p = rng.dirichlet(self.alpha, n_clients);
            if p.iter().all(|&x| x * total >= self.min_size as f64) {
                let cuts = proportion_cuts(&p, idx.len());
                return Ok(split_at_cuts(&idx, &cuts).into_iter().map(<[u32]>::to_vec).collect());
            }
        }
        Err(Error::config(
            format!("{SECTION}.alpha"),
            format!(
                "no Dirichlet draw gave each of {n_clients} clients at least {} of {} samples in {MAX_REDRAWS} tries \
                 (alpha = {}); use fewer clients (data.clients), a larger alpha or a smaller min_size",
                self.min_size,
                data.len(),
                self.alpha
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn sizes_vary_covering_deterministic() {
        let d = toy(10, 300);
        let a = run("quantity_skew", "alpha = 0.5", &d, 10, 2).unwrap();
        assert_eq!(a.len(), 10);
        assert_disjoint(&a, d.len(), true);
        let sizes: Vec<usize> = a.iter().map(Vec::len).collect();
        let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
        assert!(min >= 10, "{sizes:?}");
        assert!(max >= 3 * min, "alpha 0.5 should give unequal sizes: {sizes:?}");
        assert_eq!(a, run("quantity_skew", "alpha = 0.5", &d, 10, 2).unwrap());
    }

    #[test]
    fn large_alpha_is_nearly_equal() {
        let d = toy(10, 300);
        let a = run("quantity_skew", "alpha = 10000.0", &d, 10, 2).unwrap();
        assert!(a.iter().all(|p| (270..=330).contains(&p.len())), "{:?}", a.iter().map(Vec::len).collect::<Vec<_>>());
    }

    #[test]
    fn bad_alpha_and_too_many_clients() {
        let e = make("quantity_skew", "beta = 0.0").err().unwrap().to_string();
        assert!(e.contains("data.partition.alpha"), "{e}");
        let d = toy(2, 10);
        let e = run("quantity_skew", "", &d, 3, 1).unwrap_err().to_string();
        assert!(e.contains("fewer clients"), "{e}");
    }
}
