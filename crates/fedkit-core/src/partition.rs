//! The partitioner trait: how a pooled dataset is split among clients.

use crate::{Dataset, FeatureAffine, Result, RngStream};

/// Splits a dataset's samples among `n_clients` clients.
pub trait Partitioner: Send + Sync {
    /// One list of sample indices per client. Lists must be disjoint.
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>>;
    /// Per-client feature noise std (NIID-Bench's noise-based feature skew); zeros by default.
    fn feature_noise(&self, n_clients: usize) -> Vec<f32> {
        vec![0.0; n_clients]
    }
    /// Per-client affine feature transform (a fixed feature-shift domain per client); identity by
    /// default.
    fn feature_affine(&self, n_clients: usize) -> Vec<FeatureAffine> {
        vec![FeatureAffine::IDENTITY; n_clients]
    }
    /// Per-client relabelling of the dataset's classes (`map[class]`), for federations whose
    /// clients disagree on the labels (IFCA's permuted-label clusters); `None` (the default,
    /// or for a client): the dataset's labels.
    fn label_maps(&self, _n_clients: usize, _classes: usize) -> Vec<Option<Vec<u32>>> {
        Vec::new()
    }
    /// The true group of every client when the federation is built with known clusters (what
    /// clustering algorithms are scored against: `cluster_acc`); `None` by default.
    fn groups(&self, _n_clients: usize) -> Option<Vec<u32>> {
        None
    }
}
