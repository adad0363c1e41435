//! In-memory datasets and the per-client views the engine hands to models.

use std::sync::Arc;

use crate::{Error, Result};

/// A labelled dataset held in memory: features as f32 rows, labels as class indices.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Short name, used in messages ("fashion_mnist/train").
    pub name: String,
    /// `len() * feature_len()` features, row-major.
    pub x: Vec<f32>,
    /// One class index per sample, each `< classes`.
    pub y: Vec<u32>,
    /// Shape of one sample, e.g. `[1, 28, 28]` for images or `[60]` for vectors.
    pub feature_shape: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// The natural owner of each sample (e.g. the user of FedProx's synthetic data), if any.
    pub users: Option<Vec<u32>>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }
    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// Number of f32 values per sample.
    pub fn feature_len(&self) -> usize {
        self.feature_shape.iter().product()
    }
    /// Features of sample `i`.
    pub fn features(&self, i: usize) -> &[f32] {
        let d = self.feature_len();
        &self.x[i * d..(i + 1) * d]
    }
    /// Check internal consistency (sizes, label range).
    pub fn validate(&self) -> Result<()> {
        let d = self.feature_len();
        if self.x.len() != self.y.len() * d {
            return Err(Error::Data(format!(
                "{}: {} feature values for {} samples of {} features",
                self.name,
                self.x.len(),
                self.y.len(),
                d
            )));
        }
        if let Some(&bad) = self.y.iter().find(|&&c| c as usize >= self.classes) {
            return Err(Error::Data(format!("{}: label {bad} outside 0..{}", self.name, self.classes)));
        }
        if let Some(u) = &self.users {
            if u.len() != self.y.len() {
                return Err(Error::Data(format!("{}: {} user ids for {} samples", self.name, u.len(), self.y.len())));
            }
        }
        Ok(())
    }
    /// Count of samples per class among `idx`.
    pub fn label_histogram(&self, idx: &[u32]) -> Vec<usize> {
        let mut h = vec![0; self.classes];
        for &i in idx {
            h[self.y[i as usize] as usize] += 1;
        }
        h
    }
}

/// One client's share of a dataset: indices into a shared [`Dataset`], plus per-client
/// transforms applied when batches are drawn.
#[derive(Clone, Debug)]
pub struct ClientData {
    /// The dataset the indices point into (shared, never copied).
    pub data: Arc<Dataset>,
    /// This client's sample indices.
    pub idx: Arc<[u32]>,
    /// Standard deviation of Gaussian noise added to every feature each time a sample is drawn
    /// (NIID-Bench's noise-based feature skew); 0 for none.
    pub noise_std: f32,
}

impl ClientData {
    /// All of `data`, no transform (e.g. a global test set).
    pub fn whole(data: Arc<Dataset>) -> Self {
        let idx: Arc<[u32]> = (0..data.len() as u32).collect();
        ClientData { data, idx, noise_std: 0.0 }
    }
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.idx.len()
    }
    /// True when the client has no samples.
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }
    /// Shape of one sample.
    pub fn feature_shape(&self) -> &[usize] {
        &self.data.feature_shape
    }
}

/// A mini-batch gathered into contiguous buffers (reused across steps).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// `n * feature_len` features.
    pub x: Vec<f32>,
    /// `n` labels.
    pub y: Vec<u32>,
    /// Shape of one sample.
    pub feature_shape: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.y.len()
    }
    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// Refill with the samples `ids` (positions in `cd.idx`), adding the client's feature noise
    /// drawn from `rng`.
    pub fn fill(&mut self, cd: &ClientData, ids: &[usize], rng: &mut crate::RngStream) {
        let d = cd.data.feature_len();
        self.x.clear();
        self.y.clear();
        self.feature_shape.clone_from(&cd.data.feature_shape);
        self.classes = cd.data.classes;
        for &p in ids {
            let i = cd.idx[p] as usize;
            self.x.extend_from_slice(&cd.data.x[i * d..(i + 1) * d]);
            self.y.push(cd.data.y[i]);
        }
        if cd.noise_std > 0.0 {
            let s = cd.noise_std as f64;
            self.x.iter_mut().for_each(|v| *v += (s * rng.normal()) as f32);
        }
    }
}
