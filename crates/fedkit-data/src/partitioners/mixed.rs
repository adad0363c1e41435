//! `mixed`: label skew and quantity skew at once, NIID-Bench's "mixed" partition (Li et al.,
//! ICDE 2022, the mixed-skew experiments).
//!
//! Follows NIID-Bench's `partition_data(partition="mixed")`: client i holds two classes, class
//! i mod C and one more drawn uniformly among the classes that fewer than `cap` clients hold
//! (NIID-Bench's cap is 2 with 10 clients and 10 classes; here cap = ceil(2 N / C), so that any
//! number of clients fits); then every class's samples are shuffled and cut among the clients that
//! hold it by proportions ~ Dir(beta), so the clients holding a class get very different amounts
//! of it (quantity skew within the label skew). NIID-Bench draws the per-class proportions over
//! exactly two holders; with other client counts a class may have one or more than two holders,
//! and the proportions are drawn over however many it has. A class no client drew is dealt to
//! client (k mod N) alone.
//!
//! Parameters: `beta` (the Dirichlet concentration > 0, default 0.5, NIID-Bench's default).
//!
//! ```toml
//! [data.partition]
//! use = "mixed"
//! beta = 0.5
//! ```

use fedkit_core::{Dataset, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, check_positive, class_indices, proportion_cuts, split_at_cuts};

/// The `mixed` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mixed {
    /// Dirichlet concentration of the per-class quantity split.
    pub beta: f64,
}

impl Default for Mixed {
    fn default() -> Self {
        Mixed { beta: 0.5 }
    }
}

impl Params for Mixed {
    fn check(&self) -> Result<()> {
        check_positive("beta", self.beta)
    }
}

/// Which two classes each of `n` clients holds (class i mod C, then one more among the classes
/// held by fewer than `cap` clients).
pub fn mixed_classes(n: usize, classes: usize, rng: &mut RngStream) -> Vec<Vec<usize>> {
    let cap = (2 * n).div_ceil(classes.max(1)).max(2);
    // Every class counts its first holders (client i holds class i mod C) from the start, as
    // NIID-Bench's `times = [1] * 10`.
    let mut times = vec![0usize; classes];
    (0..n).for_each(|i| times[i % classes] += 1);
    (0..n)
        .map(|i| {
            let first = i % classes;
            let mut held = vec![first];
            let open: Vec<usize> = (0..classes).filter(|&k| k != first && times[k] < cap).collect();
            if classes > 1 {
                let second = if open.is_empty() {
                    (first + 1 + rng.below(classes as u64 - 1) as usize) % classes
                } else {
                    open[rng.below(open.len() as u64) as usize]
                };
                times[second] += 1;
                held.push(second);
            }
            held
        })
        .collect()
}

impl Partitioner for Mixed {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        let held = mixed_classes(n_clients, data.classes, rng);
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); n_clients];
        for (k, class) in class_indices(data).iter().enumerate() {
            let mut holders: Vec<usize> = (0..n_clients).filter(|&j| held[j].contains(&k)).collect();
            if holders.is_empty() {
                holders.push(k % n_clients);
            }
            let mut idx = class.clone();
            rng.shuffle(&mut idx);
            let p = rng.dirichlet(self.beta, holders.len());
            for (&j, piece) in holders.iter().zip(split_at_cuts(&idx, &proportion_cuts(&p, idx.len()))) {
                parts[j].extend_from_slice(piece);
            }
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn two_classes_each_with_skewed_quantities() {
        let d = toy(10, 500);
        let parts = run("mixed", "beta = 0.5", &d, 10, 7).unwrap();
        assert_disjoint(&parts, d.len(), true);
        for (i, p) in parts.iter().enumerate() {
            assert!(n_labels(&d, p) <= 2, "client {i} holds {} classes", n_labels(&d, p));
            assert!(d.label_histogram(p)[i] > 0 || p.is_empty() || n_labels(&d, p) <= 2);
        }
        // Quantity skew: the two holders of a class get different shares.
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert!(sizes.iter().max().unwrap() > &(2 * sizes.iter().min().unwrap()), "{sizes:?}");
        // NIID-Bench's setting: 10 clients, 10 classes: every class has at most 2 holders.
        let held = mixed_classes(10, 10, &mut RngStream::new(1));
        let mut times = [0; 10];
        held.iter().flatten().for_each(|&k| times[k] += 1);
        assert!(times.iter().all(|&t| t <= 2), "{times:?}");
        // Any number of clients fits (NIID-Bench's loop would not end with 30).
        let parts = run("mixed", "", &d, 30, 2).unwrap();
        assert_disjoint(&parts, d.len(), true);
        assert!(make("mixed", "beta = 0.0").is_err());
    }
}
