//! `affine_feature`: feature shift by a fixed per-client affine intensity transform (the non-IID
//! features setting of FedBN: Li et al., "FedBN: Federated Learning on Non-IID Features via Local
//! Batch Normalization", ICLR 2021).
//!
//! FedBN targets federations whose clients draw the same labels from different input domains
//! (digits from MNIST, SVHN, USPS, SynthDigits and MNIST-M; images from different scanners). This
//! partitioner builds such a federation from one dataset: the samples are split as in `iid`
//! (random permutation, `array_split`), and client i (of n) sees every feature x as
//! x' = a_i * x + b_i, a fixed contrast a_i and brightness b_i of its own. With t_i = 2i / (n - 1) - 1
//! evenly spaced in [-1, 1] (t = 0 for a single client):
//! - contrast a_i = exp(contrast * t_i): log-contrasts evenly spaced in [-contrast, contrast], so
//!   a_i runs from exp(-contrast) for client 0 to exp(contrast) for client n - 1;
//! - brightness b_i = -brightness * t_i: evenly spaced in [-brightness, brightness] in the reverse
//!   client order, from +brightness for client 0 to -brightness for client n - 1.
//!
//! Every client's domain differs from every other's (a middle client of an odd n keeps the clean
//! features). The transform is deterministic (no randomness beyond the `iid` split) and applied
//! when batches are drawn (`Batch::fill` applies `ClientData::affine`, before any feature noise),
//! so training and the per-client held-out splits (`[eval] clients = true`) are in the client's
//! domain, while the global test set is evaluated on clean features. A batch-norm layer after the
//! first linear layer, with the client's own statistics, undoes the transform exactly (up to its
//! eps): the mechanism FedBN's local BN layers rely on. Features are on the dataset's scale ([0, 1]
//! pixels for the image datasets).
//!
//! Parameters:
//! - `contrast` (default 1.0, so a_i from 0.37 to 2.72): the largest |log a_i|, in [0, 10].
//! - `brightness` (default 0.5): the largest |b_i|, a finite number >= 0.
//!
//! ```toml
//! [data.partition]
//! use = "affine_feature"
//! contrast = 1.0
//! brightness = 0.5
//! ```

use fedkit_core::{Dataset, Error, FeatureAffine, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, SECTION, iid::iid_split};

/// The largest allowed `contrast` (exp(10) ~ 22026: beyond it the features' scale is meaningless).
const MAX_CONTRAST: f64 = 10.0;

/// The `affine_feature` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AffineFeature {
    /// The largest absolute log-contrast, |log a_i|.
    pub contrast: f64,
    /// The largest absolute brightness offset, |b_i|.
    pub brightness: f64,
}

impl Default for AffineFeature {
    fn default() -> Self {
        AffineFeature { contrast: 1.0, brightness: 0.5 }
    }
}

impl Params for AffineFeature {
    fn check(&self) -> Result<()> {
        if !(0.0..=MAX_CONTRAST).contains(&self.contrast) {
            return Err(Error::config(
                format!("{SECTION}.contrast"),
                format!("must be a number in [0, {MAX_CONTRAST}], got {}", self.contrast),
            ));
        }
        if !(self.brightness.is_finite() && self.brightness >= 0.0) {
            return Err(Error::config(
                format!("{SECTION}.brightness"),
                format!("must be a finite number >= 0, got {}", self.brightness),
            ));
        }
        Ok(())
    }
}

impl Partitioner for AffineFeature {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        Ok(iid_split(data.len(), n_clients, rng))
    }

    fn feature_affine(&self, n_clients: usize) -> Vec<FeatureAffine> {
        let last = n_clients.saturating_sub(1);
        (0..n_clients)
            .map(|i| {
                let t = if last == 0 { 0.0 } else { 2.0 * i as f64 / last as f64 - 1.0 };
                FeatureAffine { scale: (self.contrast * t).exp() as f32, shift: (-self.brightness * t) as f32 }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use fedkit_core::FeatureAffine;

    use super::super::testutil::*;

    #[test]
    fn contrasts_are_log_spaced_and_brightness_runs_the_other_way() {
        let p = make("affine_feature", "contrast = 1.0\nbrightness = 0.5").unwrap();
        let got = p.feature_affine(5);
        let scales = [(-1.0f64).exp(), (-0.5f64).exp(), 1.0, 0.5f64.exp(), 1.0f64.exp()];
        let shifts = [0.5, 0.25, 0.0, -0.25, -0.5];
        assert_eq!(got.len(), 5);
        for (k, a) in got.iter().enumerate() {
            assert!((a.scale as f64 - scales[k]).abs() < 1e-6, "client {k}: {a:?}");
            assert!((a.shift as f64 - shifts[k]).abs() < 1e-6, "client {k}: {a:?}");
        }
        // The middle client keeps the clean features; a lone client too.
        assert!(got[2].is_identity(), "{:?}", got[2]);
        assert_eq!(p.feature_affine(1), [FeatureAffine::IDENTITY]);
        // Defaults: contrast 1.0, brightness 0.5.
        assert_eq!(make("affine_feature", "").unwrap().feature_affine(5), got);
        // Other partitioners leave the features alone.
        assert!(make("iid", "").unwrap().feature_affine(3).iter().all(FeatureAffine::is_identity));
    }

    #[test]
    fn out_of_range_parameters_are_rejected() {
        for bad in ["contrast = -0.1", "contrast = 10.5", "contrast = nan", "brightness = -1.0", "brightness = inf"] {
            let e = make("affine_feature", bad).err().map(|e| e.to_string()).unwrap_or_default();
            let key = bad.split(' ').next().unwrap_or_default();
            assert!(e.contains(&format!("data.partition.{key}")), "{bad}: {e}");
        }
        assert!(make("affine_feature", "contrast = 0.0\nbrightness = 0.0").is_ok());
    }

    #[test]
    fn split_is_iid_disjoint_and_covering() {
        let d = toy(10, 100);
        let a = run("affine_feature", "", &d, 6, 3).unwrap();
        assert_disjoint(&a, d.len(), true);
        assert_eq!(a.iter().map(Vec::len).sum::<usize>(), d.len());
        assert_eq!(a, run("iid", "", &d, 6, 3).unwrap());
        // No feature noise from this partitioner.
        assert_eq!(make("affine_feature", "").unwrap().feature_noise(6), [0.0; 6]);
    }
}
