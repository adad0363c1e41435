//! Label noise (`[data.label_noise]`): each client's own labels, with a fraction of its samples
//! relabelled, for the memorisation experiments of Arpit et al., "A Closer Look at Memorization in
//! Deep Networks", ICML 2017 (real data with noisy or random labels), and for learning with
//! noisy labels in general.
//!
//! Every training sample of every client is relabelled with probability `fraction` (a seeded
//! draw per client, stream `label_noise`), by `kind`:
//! - `symmetric` (default): a class drawn uniformly among the other classes (the label is always
//!   wrong);
//! - `random`: a class drawn uniformly among all classes (Arpit et al.'s and Zhang et al.'s random
//!   labels; `fraction = 1` is fully random labels, a few of which are right by chance);
//! - `pair`: the next class, y -> (y + 1) mod C (a structured flip).
//! The dataset's true labels stay in the data; the client's labels are a per-client transform
//! (`ClientData::labels`) applied when batches are drawn. Evaluation on the test set is
//! unaffected. Runs with noise record the memorisation metrics (`fedkit explain label_noise`
//! lists them): `train_acc_clean` (the global model's accuracy on clean training samples),
//! `noisy_memorized` (the fraction of relabelled samples predicted as their noisy label) and
//! `noisy_true` (the fraction predicted as their true label).
//!
//! Parameters: `fraction` (in [0, 1], default 0 = off); `kind`.
//!
//! ```toml
//! [data.label_noise]
//! fraction = 0.4
//! kind = "symmetric"
//! ```

use std::sync::Arc;

use fedkit_core::{ClientData, Error, Result, RngStream};
use serde::{Deserialize, Serialize};

/// How a relabelled sample's label is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    #[default]
    Symmetric,
    Random,
    Pair,
}

/// `[data.label_noise]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelNoise {
    /// Probability that a sample is relabelled.
    pub fraction: f64,
    pub kind: NoiseKind,
}

impl LabelNoise {
    /// Check the fraction.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.fraction) {
            return Err(Error::config(
                "data.label_noise.fraction",
                format!("must be in [0, 1], got {}", self.fraction),
            ));
        }
        Ok(())
    }

    /// Give every client its own (noisy) labels; nothing when `fraction` is 0.
    pub fn apply(&self, clients: &mut [ClientData], seed: u64) -> Result<()> {
        self.validate()?;
        if self.fraction == 0.0 {
            return Ok(());
        }
        for (c, d) in clients.iter_mut().enumerate() {
            let classes = d.data.classes as u64;
            if classes < 2 {
                return Err(Error::config("data.label_noise", "label noise needs at least 2 classes"));
            }
            let mut rng = RngStream::derive(seed, "label_noise", 0, c as u64);
            let labels: Arc<[u32]> = (0..d.len())
                .map(|p| {
                    let y = d.label(p) as u64;
                    if rng.uniform() >= self.fraction {
                        return y as u32;
                    }
                    (match self.kind {
                        NoiseKind::Symmetric => (y + 1 + rng.below(classes - 1)) % classes,
                        NoiseKind::Random => rng.below(classes),
                        NoiseKind::Pair => (y + 1) % classes,
                    }) as u32
                })
                .collect();
            d.labels = Some(labels);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::Dataset;

    fn clients() -> Vec<ClientData> {
        let n = 4000;
        let data = Arc::new(Dataset {
            name: "t".into(),
            x: vec![0.0; n],
            y: (0..n).map(|i| (i % 5) as u32).collect(),
            feature_shape: vec![1],
            classes: 5,
            users: None,
            targets: Vec::new(),
        });
        (0..2)
            .map(|c| ClientData {
                idx: (c * 2000..(c + 1) * 2000).map(|i| i as u32).collect(),
                ..ClientData::whole(data.clone())
            })
            .collect()
    }

    fn flipped(d: &ClientData) -> Vec<usize> {
        (0..d.len()).filter(|&p| d.label(p) != d.data.y[d.idx[p] as usize]).collect()
    }

    #[test]
    fn the_fraction_and_kind_are_respected() {
        for kind in [NoiseKind::Symmetric, NoiseKind::Pair] {
            let mut cs = clients();
            LabelNoise { fraction: 0.3, kind }.apply(&mut cs, 7).unwrap();
            for d in &cs {
                d.validate_labels().unwrap();
                let f = flipped(d).len() as f64 / d.len() as f64;
                assert!((f - 0.3).abs() < 0.04, "{kind:?}: {f}");
                if kind == NoiseKind::Pair {
                    assert!(flipped(d).iter().all(|&p| d.label(p) == (d.data.y[d.idx[p] as usize] + 1) % 5));
                }
            }
        }
        // Random labels: 1 in C of the relabelled ones are right by chance.
        let mut cs = clients();
        LabelNoise { fraction: 1.0, kind: NoiseKind::Random }.apply(&mut cs, 7).unwrap();
        let f = flipped(&cs[0]).len() as f64 / 2000.0;
        assert!((f - 0.8).abs() < 0.04, "{f}");
        // Off: no labels; deterministic per seed; out-of-range fractions are errors.
        let mut cs = clients();
        LabelNoise::default().apply(&mut cs, 7).unwrap();
        assert!(cs.iter().all(|d| d.labels.is_none()));
        let (mut a, mut b) = (clients(), clients());
        LabelNoise { fraction: 0.5, ..LabelNoise::default() }.apply(&mut a, 3).unwrap();
        LabelNoise { fraction: 0.5, ..LabelNoise::default() }.apply(&mut b, 3).unwrap();
        assert_eq!(a[1].labels, b[1].labels);
        assert!(LabelNoise { fraction: 1.5, ..LabelNoise::default() }.validate().is_err());
    }
}
