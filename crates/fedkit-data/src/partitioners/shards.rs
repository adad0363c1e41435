//! `shards`: the pathological non-IID split of McMahan et al. (FedAvg, "Communication-Efficient
//! Learning of Deep Networks from Decentralized Data", AISTATS 2017).
//!
//! Sort the samples by label (stably), cut the sorted list with numpy's `array_split` into
//! `clients * shards_per_client` shards of (nearly) equal size, and give each client
//! `shards_per_client` shards drawn at random without replacement (FedAvg's MNIST setting: 200
//! shards of 300, two per client for 100 clients). Each client therefore sees about
//! `shards_per_client` labels (a shard can straddle two labels when class sizes do not divide
//! evenly). Covers all samples.
//!
//! Parameters:
//! - `shards_per_client` (default 2): >= 1; clients * shards_per_client must not exceed the number
//!   of samples.
//!
//! ```toml
//! [data.partition]
//! use = "shards"
//! shards_per_client = 2
//! ```

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, SECTION, array_split};

/// The `shards` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shards {
    /// Shards given to each client.
    pub shards_per_client: usize,
}

impl Default for Shards {
    fn default() -> Self {
        Shards { shards_per_client: 2 }
    }
}

impl Params for Shards {
    fn check(&self) -> Result<()> {
        if self.shards_per_client == 0 {
            return Err(Error::config(format!("{SECTION}.shards_per_client"), "must be at least 1, got 0"));
        }
        Ok(())
    }
}

impl Partitioner for Shards {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        let s = self.shards_per_client;
        let total = n_clients.saturating_mul(s);
        if total > data.len() {
            return Err(Error::config(
                format!("{SECTION}.shards_per_client"),
                format!(
                    "{n_clients} clients x {s} shards = {total} shards, more than the {} samples; \
                     use fewer clients (data.clients) or fewer shards per client",
                    data.len()
                ),
            ));
        }
        let mut order: Vec<u32> = (0..data.len() as u32).collect();
        order.sort_by_key(|&i| data.y[i as usize]);
        let shards = array_split(&order, total);
        let perm = rng.permutation(total);
        Ok(perm.chunks(s.max(1)).map(|mine| mine.iter().flat_map(|&k| shards[k].iter().copied()).collect()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn at_most_two_labels_each_disjoint_covering() {
        // 10 classes of 100, 50 clients x 2 shards of 10: every shard holds one label.
        let d = toy(10, 100);
        let a = run("shards", "", &d, 50, 6).unwrap();
        assert_eq!(a.len(), 50);
        assert_disjoint(&a, d.len(), true);
        assert!(a.iter().all(|p| p.len() == 20 && n_labels(&d, p) <= 2));
        assert!(a.iter().any(|p| n_labels(&d, p) == 2), "shards should be mixed across labels");
        assert_eq!(a, run("shards", "", &d, 50, 6).unwrap());
        assert_ne!(a, run("shards", "", &d, 50, 7).unwrap());
    }

    #[test]
    fn one_shard_each_is_one_label() {
        let d = toy(5, 40);
        let a = run("shards", "shards_per_client = 1", &d, 10, 1).unwrap();
        assert!(a.iter().all(|p| n_labels(&d, p) == 1));
    }

    #[test]
    fn too_many_shards_is_rejected() {
        let e = run("shards", "shards_per_client = 3", &toy(2, 5), 4, 1).unwrap_err().to_string();
        assert!(e.contains("data.partition.shards_per_client"), "{e}");
        assert!(make("shards", "shards_per_client = 0").is_err());
    }
}
