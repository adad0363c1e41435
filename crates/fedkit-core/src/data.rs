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
    /// Per-position targets of sequence data, `len() * positions()` class indices (a language
    /// model's next tokens: sample i's targets are `targets[i * T..(i + 1) * T]`); empty for
    /// data with one label per sample. `y` keeps one label per sample either way (for
    /// partitioners and label histograms).
    pub targets: Vec<u32>,
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
    /// Targets per sample: T for sequence data with per-position targets, 0 for one label per
    /// sample.
    pub fn positions(&self) -> usize {
        if self.targets.is_empty() { 0 } else { self.targets.len() / self.len().max(1) }
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
        if !self.targets.is_empty() {
            let t = self.positions();
            if t == 0 || self.targets.len() != self.len() * t {
                return Err(Error::Data(format!(
                    "{}: {} per-position targets for {} samples (a whole number per sample expected)",
                    self.name,
                    self.targets.len(),
                    self.len()
                )));
            }
            if let Some(&bad) = self.targets.iter().find(|&&c| c as usize >= self.classes) {
                return Err(Error::Data(format!("{}: target {bad} outside 0..{}", self.name, self.classes)));
            }
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

/// A per-client affine intensity transform of every feature, `x' = scale * x + shift` (a
/// feature-shift domain: contrast `scale`, brightness `shift`); [`FeatureAffine::IDENTITY`] for none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureAffine {
    /// Multiplier of every feature (contrast).
    pub scale: f32,
    /// Offset added to every feature after scaling (brightness).
    pub shift: f32,
}

impl FeatureAffine {
    /// The transform that leaves features unchanged.
    pub const IDENTITY: FeatureAffine = FeatureAffine { scale: 1.0, shift: 0.0 };
    /// True for the identity transform.
    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }
    /// `scale * x + shift`.
    pub fn apply(&self, x: f32) -> f32 {
        self.scale * x + self.shift
    }
}

impl Default for FeatureAffine {
    fn default() -> Self {
        Self::IDENTITY
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
    /// Affine transform applied to every feature each time a sample is drawn, before the noise
    /// (a fixed per-client feature domain, as in FedBN's feature shift); identity for none.
    pub affine: FeatureAffine,
    /// This client's own label of each of its samples (parallel to `idx`), replacing the
    /// dataset's: label noise, random labels, label flipping; `None`: the dataset's labels.
    pub labels: Option<Arc<[u32]>>,
    /// A trigger stamped onto some of this client's samples when batches are drawn (backdoor
    /// poisoning); `None`: no trigger.
    pub stamp: Option<Stamp>,
}

/// A trigger stamped onto chosen samples: each listed feature (flat offset within a sample) is
/// set to its value, before the client's feature transforms.
#[derive(Clone, Debug, PartialEq)]
pub struct Stamp {
    /// (feature offset, value) pairs.
    pub pixels: Arc<[(u32, f32)]>,
    /// For each of the client's samples (parallel to `idx`): stamp it or not.
    pub positions: Arc<[bool]>,
}

impl ClientData {
    /// All of `data`, no transform (e.g. a global test set).
    pub fn whole(data: Arc<Dataset>) -> Self {
        let idx: Arc<[u32]> = (0..data.len() as u32).collect();
        ClientData { data, idx, noise_std: 0.0, affine: FeatureAffine::IDENTITY, labels: None, stamp: None }
    }
    /// The same samples with no per-client feature transform (no affine transform, no noise):
    /// the clean features that global evaluation sees. The client's labels and trigger are kept
    /// (they are the data, not its domain: the training loss is measured against what the
    /// client trains on, and a backdoor evaluation set is a triggered set).
    pub fn without_transforms(&self) -> ClientData {
        ClientData { noise_std: 0.0, affine: FeatureAffine::IDENTITY, ..self.clone() }
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
    /// The client's samples at `positions` (positions in `idx`), with their own labels and the
    /// client's feature transforms.
    pub fn subset(&self, positions: &[usize]) -> ClientData {
        let idx: Arc<[u32]> = positions.iter().map(|&p| self.idx[p]).collect();
        let labels = self.labels.as_ref().map(|l| positions.iter().map(|&p| l[p]).collect());
        let stamp = self.stamp.as_ref().map(|s| Stamp {
            pixels: s.pixels.clone(),
            positions: positions.iter().map(|&p| s.positions[p]).collect(),
        });
        ClientData { idx, labels, stamp, ..self.clone() }
    }
    /// The label of the client's sample at position `p` (its own label, else the dataset's).
    pub fn label(&self, p: usize) -> u32 {
        match &self.labels {
            Some(l) => l[p],
            None => self.data.y[self.idx[p] as usize],
        }
    }
    /// Check that the client's labels and trigger (if any) match its samples in number, class
    /// range and feature offsets.
    pub fn validate_labels(&self) -> Result<()> {
        if let Some(s) = &self.stamp {
            if s.positions.len() != self.idx.len() {
                return Err(Error::Data(format!("{} trigger flags for {} samples", s.positions.len(), self.idx.len())));
            }
            let d = self.data.feature_len() as u32;
            if let Some(&(o, _)) = s.pixels.iter().find(|(o, _)| *o >= d) {
                return Err(Error::Data(format!("trigger pixel {o} outside a sample of {d} features")));
            }
        }
        if let Some(l) = &self.labels {
            if self.data.positions() > 0 {
                return Err(Error::Data(format!(
                    "{} has per-position targets (sequence data): per-client labels (label noise, label flipping) need one label per sample",
                    self.data.name
                )));
            }
            if l.len() != self.idx.len() {
                return Err(Error::Data(format!("{} labels for {} samples", l.len(), self.idx.len())));
            }
            if let Some(bad) = l.iter().find(|&&y| y as usize >= self.data.classes) {
                return Err(Error::Data(format!("client label {bad} outside 0..{}", self.data.classes)));
            }
        }
        Ok(())
    }
}

/// A mini-batch gathered into contiguous buffers (reused across steps).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// `n * feature_len` features.
    pub x: Vec<f32>,
    /// `n` labels.
    pub y: Vec<u32>,
    /// `n * T` per-position targets of sequence data (see [`Dataset::targets`]); empty for one
    /// label per sample.
    pub targets: Vec<u32>,
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
    /// What a loss is measured against: the per-position targets of sequence data, else the
    /// per-sample labels.
    pub fn labels(&self) -> &[u32] {
        if self.targets.is_empty() { &self.y } else { &self.targets }
    }
    /// Targets per sample: T for sequence data, 0 for one label per sample.
    pub fn positions(&self) -> usize {
        if self.targets.is_empty() { 0 } else { self.targets.len() / self.len().max(1) }
    }
    /// Make `one` the single sample `k` of this batch (features, label and per-position targets),
    /// reusing its buffers.
    pub fn copy_sample(&self, k: usize, one: &mut Batch) {
        let d = if self.is_empty() { 0 } else { self.x.len() / self.len() };
        let t = self.positions();
        one.x.clear();
        one.x.extend_from_slice(&self.x[k * d..(k + 1) * d]);
        one.y.clear();
        one.y.push(self.y[k]);
        one.targets.clear();
        one.targets.extend_from_slice(&self.targets[k * t..(k + 1) * t]);
        one.feature_shape.clone_from(&self.feature_shape);
        one.classes = self.classes;
    }
    /// Refill with the samples `ids` (positions in `cd.idx`), applying the client's affine
    /// transform and then adding its feature noise drawn from `rng`.
    pub fn fill(&mut self, cd: &ClientData, ids: &[usize], rng: &mut crate::RngStream) {
        let d = cd.data.feature_len();
        let t = cd.data.positions();
        self.x.clear();
        self.y.clear();
        self.targets.clear();
        self.feature_shape.clone_from(&cd.data.feature_shape);
        self.classes = cd.data.classes;
        for &p in ids {
            let i = cd.idx[p] as usize;
            self.targets.extend_from_slice(&cd.data.targets[i * t..(i + 1) * t]);
            let start = self.x.len();
            self.x.extend_from_slice(&cd.data.x[i * d..(i + 1) * d]);
            if let Some(s) = cd.stamp.as_ref().filter(|s| s.positions[p]) {
                for &(o, v) in s.pixels.iter() {
                    self.x[start + o as usize] = v;
                }
            }
            self.y.push(cd.label(p));
        }
        if !cd.affine.is_identity() {
            self.x.iter_mut().for_each(|v| *v = cd.affine.apply(*v));
        }
        if cd.noise_std > 0.0 {
            let s = cd.noise_std as f64;
            self.x.iter_mut().for_each(|v| *v += (s * rng.normal()) as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RngStream;

    /// Six samples of two features, `x = [i, -i / 2]`, labels `i % 3`, dealt to a client holding
    /// samples 1, 3 and 4 with the given transforms.
    fn client(noise_std: f32, affine: FeatureAffine) -> ClientData {
        let x = (0..6).flat_map(|i| [i as f32, -(i as f32) / 2.0]).collect();
        let y = (0..6).map(|i| i % 3).collect();
        let data =
            Dataset { name: "t".into(), x, y, feature_shape: vec![2], classes: 3, users: None, targets: Vec::new() };
        ClientData { data: Arc::new(data), idx: [1, 3, 4].into(), noise_std, affine, labels: None, stamp: None }
    }

    fn filled(cd: &ClientData, ids: &[usize], seed: u64) -> Batch {
        let mut b = Batch::default();
        b.fill(cd, ids, &mut RngStream::new(seed));
        b
    }

    #[test]
    fn copy_sample_takes_one_sample_with_its_targets() {
        let b = Batch {
            x: vec![0.0, 1.0, 2.0, 3.0],
            y: vec![5, 6],
            targets: vec![1, 2, 3, 4],
            feature_shape: vec![2],
            classes: 7,
        };
        let mut one = Batch::default();
        b.copy_sample(1, &mut one);
        assert_eq!(
            (one.x.as_slice(), one.y.as_slice(), one.targets.as_slice()),
            (&[2.0, 3.0][..], &[6][..], &[3, 4][..])
        );
        assert_eq!((one.positions(), one.classes, one.feature_shape.as_slice()), (2, 7, &[2][..]));
        let flat = Batch { targets: Vec::new(), ..b };
        flat.copy_sample(0, &mut one);
        assert!(one.targets.is_empty() && one.y == [5]);
    }

    #[test]
    fn batch_features_are_exactly_the_affine_image() {
        let affine = FeatureAffine { scale: 2.5, shift: -0.75 };
        let cd = client(0.0, affine);
        let b = filled(&cd, &[2, 0], 1);
        let want: Vec<f32> = [4.0f32, -2.0, 1.0, -0.5].iter().map(|&x| 2.5 * x - 0.75).collect();
        assert_eq!(b.x, want);
        assert_eq!(b.y, [1, 1]);
        // The identity leaves the features bit for bit, and the clean view drops the transform.
        assert_eq!(filled(&client(0.0, FeatureAffine::IDENTITY), &[2, 0], 1).x, [4.0, -2.0, 1.0, -0.5]);
        assert_eq!(filled(&cd.without_transforms(), &[2, 0], 1).x, [4.0, -2.0, 1.0, -0.5]);
    }

    #[test]
    fn sequence_targets_travel_with_their_samples_and_are_checked() {
        let mut cd = client(0.0, FeatureAffine::IDENTITY);
        let mut data = (*cd.data).clone();
        // Two targets per sample: sample i's are [i, (i + 1) % 3].
        data.targets = (0..6).flat_map(|i| [i % 3, (i + 1) % 3]).collect();
        data.validate().unwrap();
        assert_eq!(data.positions(), 2);
        cd.data = Arc::new(data.clone());
        let b = filled(&cd, &[2, 0], 1);
        assert_eq!((b.positions(), b.labels()), (2, &[1u32, 2, 1, 2][..]), "samples 4 and 1, in order");
        assert_eq!(b.y, [1, 1], "one label per sample stays");
        let mut bad = data.clone();
        bad.targets.pop();
        assert!(bad.validate().is_err(), "11 targets for 6 samples");
        bad.targets = vec![3; 12];
        assert!(bad.validate().is_err(), "target 3 of 3 classes");
        // Per-client labels cannot relabel sequence data.
        cd.labels = Some([0u32, 0, 0].into());
        let e = cd.validate_labels().unwrap_err().to_string();
        assert!(e.contains("per-position targets"), "{e}");
    }

    #[test]
    fn a_client_s_own_labels_replace_the_dataset_s() {
        let mut cd = client(0.0, FeatureAffine::IDENTITY);
        assert_eq!(filled(&cd, &[0, 1, 2], 1).y, [1, 0, 1]);
        cd.labels = Some([2u32, 2, 0].into());
        let b = filled(&cd, &[2, 0], 1);
        assert_eq!((b.y, b.x), (vec![0, 2], vec![4.0, -2.0, 1.0, -0.5]), "labels change, features do not");
        assert!(cd.validate_labels().is_ok());
        cd.labels = Some([2u32, 3, 0].into());
        assert!(cd.validate_labels().is_err(), "label 3 of 3 classes");
        cd.labels = Some([2u32].into());
        assert!(cd.validate_labels().is_err(), "one label for three samples");
    }

    #[test]
    fn a_trigger_is_stamped_on_the_chosen_samples_only() {
        let mut cd = client(0.0, FeatureAffine::IDENTITY);
        cd.stamp = Some(Stamp { pixels: [(1u32, 9.0f32)].into(), positions: [false, true, false].into() });
        cd.validate_labels().unwrap();
        let b = filled(&cd, &[0, 1, 2], 1);
        assert_eq!(b.x, [1.0, -0.5, 3.0, 9.0, 4.0, -2.0], "only the second sample's feature 1 is set");
        // A subset keeps each sample's flag; the trigger survives the clean view.
        let sub = cd.subset(&[1]);
        assert_eq!(filled(&sub.without_transforms(), &[0], 1).x, [3.0, 9.0]);
        cd.stamp = Some(Stamp { pixels: [(2u32, 1.0f32)].into(), positions: [true; 3].into() });
        assert!(cd.validate_labels().is_err(), "feature 2 of 2");
    }

    #[test]
    fn affine_is_applied_before_the_noise() {
        let affine = FeatureAffine { scale: 0.5, shift: 2.0 };
        let b = filled(&client(0.3, affine), &[0, 1, 2], 9);
        let mut rng = RngStream::new(9);
        let want: Vec<f32> = [1.0f32, -0.5, 3.0, -1.5, 4.0, -2.0]
            .iter()
            .map(|&x| (0.5 * x + 2.0) + (0.3f32 as f64 * rng.normal()) as f32)
            .collect();
        assert_eq!(b.x, want);
        // Noise applied to the transformed features, not the transform applied to noisy ones.
        let noisy_first: Vec<f32> =
            filled(&client(0.3, FeatureAffine::IDENTITY), &[0, 1, 2], 9).x.iter().map(|&v| affine.apply(v)).collect();
        assert_ne!(b.x, noisy_first);
        // The clean view drops both transforms and shares the data.
        let cd = client(0.3, affine);
        let clean = cd.without_transforms();
        assert!(clean.noise_std == 0.0 && clean.affine.is_identity() && Arc::ptr_eq(&clean.data, &cd.data));
    }
}
