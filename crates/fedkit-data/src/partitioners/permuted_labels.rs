//! `permuted_labels`: k groups of clients that disagree on what the labels mean, the clustered
//! federation of IFCA (Ghosh, Chung, Yin, Ramchandran, "An Efficient Framework for Clustered
//! Federated Learning", NeurIPS 2020, whose experiments permute labels or rotate images per
//! cluster).
//!
//! The training samples are split as `iid` does. Client c belongs to group g = c mod k, and its
//! labels are shifted cyclically by g: class y becomes (y + g) mod C (group 0 keeps the dataset's
//! labels). The groups are the ground truth a clustering algorithm is scored against: every
//! round logs `cluster_acc` when the clients report the cluster they chose (IFCA does), the best
//! one-to-one matching of clusters to groups (for up to 8 clusters; the purity beyond). The
//! global test set keeps the dataset's labels: group 0's task. Per-client local test splits carry
//! the client's own labels.
//!
//! Parameters: `groups` (k, default 4; at most the number of classes, so the k tasks differ).
//!
//! ```toml
//! [data.partition]
//! use = "permuted_labels"
//! groups = 4
//! ```

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::Params;
use super::iid::iid_split;

/// The `permuted_labels` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PermutedLabels {
    /// The number of groups k.
    pub groups: usize,
}

impl Default for PermutedLabels {
    fn default() -> Self {
        PermutedLabels { groups: 4 }
    }
}

impl Params for PermutedLabels {
    fn check(&self) -> Result<()> {
        if self.groups == 0 {
            return Err(Error::config("data.partition.groups", "must be at least 1"));
        }
        Ok(())
    }
}

impl Partitioner for PermutedLabels {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        if self.groups > data.classes {
            return Err(Error::config(
                "data.partition.groups",
                format!("{} groups need at least as many classes; {} has {}", self.groups, data.name, data.classes),
            ));
        }
        if self.groups > n_clients {
            return Err(Error::config(
                "data.partition.groups",
                format!("{} groups need at least as many clients, data.clients is {n_clients}", self.groups),
            ));
        }
        Ok(iid_split(data.len(), n_clients, rng))
    }
    fn label_maps(&self, n_clients: usize, classes: usize) -> Vec<Option<Vec<u32>>> {
        (0..n_clients)
            .map(|c| {
                let g = c % self.groups;
                (g > 0).then(|| (0..classes).map(|y| ((y + g) % classes) as u32).collect())
            })
            .collect()
    }
    fn groups(&self, n_clients: usize) -> Option<Vec<u32>> {
        Some((0..n_clients).map(|c| (c % self.groups) as u32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_shift_the_labels_cyclically() {
        let p = PermutedLabels { groups: 3 };
        let maps = p.label_maps(5, 4);
        assert_eq!(maps[0], None);
        assert_eq!(maps[1], Some(vec![1, 2, 3, 0]));
        assert_eq!(maps[2], Some(vec![2, 3, 0, 1]));
        assert_eq!(maps[3], None);
        assert_eq!(p.groups(5), Some(vec![0, 1, 2, 0, 1]));
    }
}
