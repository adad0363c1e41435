//! `label_quantity`: quantity-based label skew, each client holding exactly `k` classes
//! (NIID-Bench's "noniid-#label{k}", #C = k).
//!
//! Follows NIID-Bench's `partition_data(partition="noniid-#label{k}")`: client i always gets class
//! `i % classes`, then further classes drawn uniformly at random (redrawing repeats) until it holds
//! `k` distinct ones. Each class's samples are shuffled and cut with numpy's `array_split` into as
//! many equal parts as there are clients holding it; classes no client holds are left unused (so
//! the partition need not cover the data). `k = classes` gives every client an even share of every
//! class, as NIID-Bench's special case does.
//!
//! Parameters:
//! - `k` (default 2): classes per client, 1 <= k <= the dataset's number of classes.
//!
//! ```toml
//! [data.partition]
//! use = "label_quantity"
//! k = 2
//! ```

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, SECTION, array_split, class_indices};

/// The `label_quantity` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelQuantity {
    /// Classes per client.
    pub k: usize,
}

impl Default for LabelQuantity {
    fn default() -> Self {
        LabelQuantity { k: 2 }
    }
}

impl LabelQuantity {
    fn bad_k(&self, classes: usize) -> Error {
        Error::config(
            format!("{SECTION}.k"),
            format!("must be between 1 and the number of classes ({classes}), got {}", self.k),
        )
    }
}

impl Params for LabelQuantity {
    fn check(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::config(format!("{SECTION}.k"), "must be at least 1 (classes per client), got 0"));
        }
        Ok(())
    }
}

impl Partitioner for LabelQuantity {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        let classes = data.classes;
        if self.k == 0 || self.k > classes {
            return Err(self.bad_k(classes));
        }
        let contain: Vec<Vec<usize>> = (0..n_clients)
            .map(|i| {
                if self.k == classes {
                    return (0..classes).collect();
                }
                let mut current = vec![i % classes];
                while current.len() < self.k {
                    let c = rng.below(classes as u64) as usize;
                    if !current.contains(&c) {
                        current.push(c);
                    }
                }
                current
            })
            .collect();
        let mut out = vec![Vec::new(); n_clients];
        for (c, mut idx) in class_indices(data).into_iter().enumerate() {
            let holders: Vec<usize> = (0..n_clients).filter(|&j| contain[j].contains(&c)).collect();
            if holders.is_empty() {
                continue;
            }
            rng.shuffle(&mut idx);
            for (&j, part) in holders.iter().zip(array_split(&idx, holders.len())) {
                out[j].extend_from_slice(part);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn exactly_k_labels_per_client() {
        let d = toy(10, 200);
        for k in [1, 2, 3, 10] {
            let a = run("label_quantity", &format!("k = {k}"), &d, 20, 4).unwrap();
            assert_disjoint(&a, d.len(), false);
            for p in &a {
                assert_eq!(n_labels(&d, p), k);
            }
            assert_eq!(a, run("label_quantity", &format!("k = {k}"), &d, 20, 4).unwrap());
        }
    }

    #[test]
    fn client_i_holds_class_i_mod_classes_and_k_all_is_even() {
        let d = toy(10, 200);
        let a = run("label_quantity", "k = 2", &d, 13, 8).unwrap();
        for (i, p) in a.iter().enumerate() {
            assert!(d.label_histogram(p)[i % 10] > 0);
        }
        let a = run("label_quantity", "k = 10", &d, 4, 8).unwrap();
        assert_disjoint(&a, d.len(), true);
        for p in &a {
            assert_eq!(d.label_histogram(p), vec![50; 10]);
        }
    }

    #[test]
    fn k_out_of_range_is_rejected() {
        let d = toy(10, 20);
        let e = run("label_quantity", "k = 11", &d, 4, 1).unwrap_err().to_string();
        assert!(e.contains("data.partition.k") && e.contains("10"), "{e}");
        let e = make("label_quantity", "k = 0").err().unwrap().to_string();
        assert!(e.contains("data.partition.k"), "{e}");
    }
}
