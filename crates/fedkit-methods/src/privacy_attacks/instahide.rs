//! `instahide` (stage): the instance encoding of Huang, Song, Li, Arora, "InstaHide:
//! Instance-hiding Schemes for Private Distributed Learning", ICML 2020 (PAPERS.txt 35), the
//! inside-dataset scheme, applied to every mini-batch of local training.
//!
//! Each training image x_i of a batch is replaced by its encoding
//!   x~_i = m + sigma_i o (sum_j lambda_ij x_{pi_j(i)} - m),
//! a mix of k images of the batch (pi_0 the identity, pi_1..pi_{k-1} random permutations of the
//! batch), with weights lambda_i = |g| / ||g||_1, g ~ N(0, I_k), redrawn until no weight exceeds
//! `upper` (the reference implementation's rule), and a fresh pixel-wise random sign mask
//! sigma_i in {-1, +1}^d; its label is the mix sum_j lambda_ij onehot(y_{pi_j(i)}), trained by
//! the cross-entropy against that distribution. The key (pi, lambda, sigma) is new at every step
//! ("one-time secret key") and is never sent; it comes from the client's own stream
//! `instahide_keys` of the run seed (simulation only: whoever knows the seed can regenerate the
//! keys; an OS-entropy source is not built). m is the one pixel value the signs flip around
//! (`center`): the paper standardises images to mean 0 and flips about 0, which is m = the
//! training set's mean pixel here (0.286 for Fashion-MNIST; one value for every channel). The
//! clean test images are then the all-plus mask. `mask = false` is the paper's Mixup baseline:
//! the same k-image mix with the same weights (not Zhang et al.'s Beta-distributed pairs).
//!
//! The stage replaces the local step rule (use `[local] use = "plain"`) and needs the default
//! cross-entropy loss (it trains the mixed-label cross-entropy); algorithms that put their own
//! term into the model's loss (FedAwS, FedHeNN) are refused, hook-based ones (FedProx, SCAFFOLD,
//! FedDyn, ...) compose. A batch-norm model records the running statistics of the encoded
//! images. The cross-dataset scheme (mixing in images of a public dataset) is not built. The
//! attack on the encodings (Carlini et al.'s) is `instahide_attack` (`fedkit attack instahide`).
//!
//! Parameters (the paper's symbols): `k` (images per encoding, 4), `upper` (the largest weight
//! of one image, 0.65), `mask` (the random sign flip, true), `center` (m, 0.5: set it to the
//! training mean).
//!
//! ```toml
//! [[pipeline]]
//! use = "instahide"
//! k = 4
//! upper = 0.65
//! ```

use fedkit_core::model::{check_labels, softmax_cross_entropy};
use fedkit_core::{
    Batch, ClientCtx, Error, Head, LocalStep, Mode, Model, OutputGrads, Outputs, Params, Result, RngStream, RunInfo,
    Stage, StepCtx,
};
use serde::{Deserialize, Serialize};

/// The encoding's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstaHide {
    pub k: usize,
    pub upper: f64,
    pub mask: bool,
    pub center: f32,
}

impl Default for InstaHide {
    fn default() -> Self {
        InstaHide { k: 4, upper: 0.65, mask: true, center: 0.5 }
    }
}

/// The one-time key of one encoded image: the batch positions mixed (the image itself first)
/// with their weights, and the sign of every pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub parts: Vec<(usize, f32)>,
    pub signs: Vec<bool>,
}

impl InstaHide {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if self.k == 0 {
            return Err(Error::config("k", "must be at least 1"));
        }
        if !(self.upper >= 1.0 / self.k as f64 && self.upper <= 1.0) {
            return Err(Error::config(
                "upper",
                format!(
                    "must be in [1/k, 1] = [{:.3}, 1] (no weight can stay below 1/k), got {}",
                    1.0 / self.k as f64,
                    self.upper
                ),
            ));
        }
        if !self.center.is_finite() {
            return Err(Error::config("center", "must be a finite number"));
        }
        Ok(self)
    }

    /// k mixing weights: |g| / ||g||_1 for g ~ N(0, I_k), redrawn while one exceeds `upper`
    /// (at most 1000 times; then equal weights 1/k, which `upper >= 1/k` always admits).
    pub fn weights(&self, rng: &mut RngStream) -> Vec<f32> {
        let draw = |rng: &mut RngStream| {
            let g: Vec<f64> = (0..self.k).map(|_| rng.normal().abs()).collect();
            let s: f64 = g.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            g.into_iter().map(|v| v / s).collect::<Vec<f64>>()
        };
        for _ in 0..1000 {
            let w = draw(rng);
            if w.iter().all(|&v| v <= self.upper) {
                return w.into_iter().map(|v| v as f32).collect();
            }
        }
        vec![1.0 / self.k as f32; self.k]
    }

    /// Encode every image of `batch` with a fresh key from `rng`: the encoded batch (its labels
    /// the batch's, unused: the mixed labels are in the keys) and each image's key.
    pub fn encode(&self, batch: &Batch, rng: &mut RngStream) -> (Batch, Vec<Key>) {
        let (n, d) = (batch.len(), batch.x.len() / batch.len().max(1));
        let perms: Vec<Vec<usize>> = (1..self.k).map(|_| rng.permutation(n)).collect();
        let mut out = Batch { x: vec![0.0; n * d], ..batch.clone() };
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let lambda = self.weights(rng);
            let parts: Vec<(usize, f32)> = std::iter::once(i).chain(perms.iter().map(|p| p[i])).zip(lambda).collect();
            let signs: Vec<bool> = (0..d).map(|_| !self.mask || rng.uniform() < 0.5).collect();
            let row = &mut out.x[i * d..(i + 1) * d];
            for &(j, l) in &parts {
                row.iter_mut().zip(&batch.x[j * d..(j + 1) * d]).for_each(|(r, &x)| *r += l * x);
            }
            row.iter_mut()
                .zip(&signs)
                .for_each(|(r, &s)| *r = self.center + if s { *r - self.center } else { self.center - *r });
            keys.push(Key { parts, signs });
        }
        (out, keys)
    }

    /// Image i of the batch from its encoding and key, given the other images it was mixed with
    /// (`images`: the batch, `d` values each; only the rows the key names besides i are read).
    pub fn decode(&self, encoded: &[f32], key: &Key, images: &[f32]) -> Vec<f32> {
        let d = encoded.len();
        let l0 = key.parts[0].1;
        let mut x: Vec<f32> = encoded
            .iter()
            .zip(&key.signs)
            .map(|(&e, &s)| self.center + if s { e - self.center } else { self.center - e })
            .collect();
        for &(j, l) in &key.parts[1..] {
            x.iter_mut().zip(&images[j * d..(j + 1) * d]).for_each(|(v, &o)| *v -= l * o);
        }
        x.iter_mut().for_each(|v| *v /= l0);
        x
    }
}

/// The cross-entropy of each encoded image's logits against its mixed label
/// sum_j lambda_j onehot(y_{pi_j(i)}), averaged over the batch.
pub struct MixedCrossEntropy<'a> {
    pub keys: &'a [Key],
    pub labels: &'a [u32],
}

impl Head for MixedCrossEntropy<'_> {
    fn value_grad(&mut self, out: &Outputs, _batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        let c = out.classes;
        if out.len() != self.keys.len() {
            return Err(Error::Shape(format!("{} rows of logits for {} encoded images", out.len(), self.keys.len())));
        }
        g.logits.clear();
        g.logits.extend_from_slice(&out.logits);
        g.features.clear();
        let n = self.keys.len();
        if let Some(y) = self.labels.iter().find(|&&y| y as usize >= c) {
            return Err(Error::Shape(format!("label {y} out of range for {c} classes")));
        }
        let mut total = 0.0f64;
        for (i, key) in self.keys.iter().enumerate() {
            let row = &mut g.logits[i * c..(i + 1) * c];
            let mut p = row.to_vec();
            for &(j, l) in &key.parts {
                let (ce, _) = softmax_cross_entropy(&mut row.to_vec(), &[self.labels[j]], c);
                total += l as f64 * ce;
            }
            softmax_cross_entropy(&mut p, &[0], c);
            row.copy_from_slice(&p);
            for &(j, l) in &key.parts {
                row[self.labels[j] as usize] -= l;
            }
            row.iter_mut().for_each(|v| *v /= n as f32);
        }
        Ok((total / n.max(1) as f64) as f32)
    }
}

/// The local step on encoded batches, drawing keys from its own stream.
struct InstaHideStep<'a> {
    cfg: &'a InstaHide,
    keys: std::sync::Mutex<RngStream>,
}

impl LocalStep for InstaHideStep<'_> {
    fn grad(
        &self,
        _sc: &StepCtx,
        model: &mut dyn Model,
        params: &mut Params,
        batch: &mut Batch,
        grad: &mut Params,
        rng: &mut RngStream,
    ) -> Result<f32> {
        if batch.is_empty() {
            grad.as_mut_slice().iter_mut().for_each(|v| *v = 0.0);
            return Ok(0.0);
        }
        check_labels(batch, batch.classes, "instahide")?;
        let (encoded, keys) = {
            let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            self.cfg.encode(batch, &mut k)
        };
        let mut head = MixedCrossEntropy { keys: &keys, labels: &batch.y };
        model.vjp(params, &encoded, Mode::Train, &mut head, Some(grad), None, rng)
    }
}

impl Stage for InstaHide {
    fn prepare(&mut self, run: &RunInfo) -> Result<()> {
        if ["fedaws", "fedhenn"].contains(&run.algorithm.as_str()) {
            return Err(Error::config(
                "algorithm.use",
                format!(
                    "{} adds its own term to the model's loss, which instahide's mixed-label loss would drop",
                    run.algorithm
                ),
            ));
        }
        if !run.local_step.is_empty() && run.local_step != "plain" {
            return Err(Error::config(
                "local.use",
                format!(
                    "instahide replaces the local step rule; `{}` cannot run with it: use \"plain\"",
                    run.local_step
                ),
            ));
        }
        Ok(())
    }
    fn local_step<'a>(
        &'a self,
        cx: &ClientCtx<'a>,
        _inner: &'a dyn LocalStep,
    ) -> Result<Option<Box<dyn LocalStep + 'a>>> {
        if !cx.loss.is_cross_entropy() {
            return Err(Error::config(
                "loss.use",
                "instahide trains its own mixed-label cross-entropy and would drop the configured loss: use the default cross-entropy",
            ));
        }
        Ok(Some(Box::new(InstaHideStep { cfg: self, keys: std::sync::Mutex::new(cx.rng("instahide_keys")) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, d: usize, classes: usize) -> Batch {
        let mut rng = RngStream::new(4);
        Batch {
            x: (0..n * d).map(|_| rng.uniform() as f32).collect(),
            y: (0..n).map(|i| (i % classes) as u32).collect(),
            targets: Vec::new(),
            feature_shape: vec![d],
            classes,
        }
    }

    #[test]
    fn encodings_decode_with_the_key() {
        let ih = InstaHide::default();
        let b = batch(9, 20, 3);
        let (enc, keys) = ih.encode(&b, &mut RngStream::new(1));
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(key.parts[0].0, i);
            let w: f32 = key.parts.iter().map(|p| p.1).sum();
            assert!((w - 1.0).abs() < 1e-5 && key.parts.iter().all(|p| p.1 as f64 <= ih.upper + 1e-6), "{key:?}");
            let x = ih.decode(&enc.x[i * 20..(i + 1) * 20], key, &b.x);
            let err = x.iter().zip(&b.x[i * 20..(i + 1) * 20]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-4, "image {i} decodes with its key: error {err}");
        }
        // Each pixel is the mix, or its reflection about the centre where the sign is minus.
        for (i, key) in keys.iter().enumerate() {
            for p in 0..20 {
                let mix: f32 = key.parts.iter().map(|&(j, l)| l * b.x[j * 20 + p]).sum();
                let want = if key.signs[p] { mix } else { 2.0 * ih.center - mix };
                assert!((enc.x[i * 20 + p] - want).abs() < 1e-5, "image {i}, pixel {p}");
            }
        }
        for slot in 1..ih.k {
            let mut seen: Vec<usize> = keys.iter().map(|k| k.parts[slot].0).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..9).collect::<Vec<_>>(), "slot {slot} is a permutation of the batch");
        }
        // The masks flip about half of the pixels about the centre; without the mask, none.
        let flipped = keys.iter().flat_map(|k| &k.signs).filter(|&&s| !s).count() as f64 / (9.0 * 20.0);
        assert!((0.35..0.65).contains(&flipped), "{flipped}");
        let (_, plain) = InstaHide { mask: false, ..ih.clone() }.encode(&b, &mut RngStream::new(1));
        assert!(plain.iter().all(|k| k.signs.iter().all(|&s| s)));
        // A different key (another step) gives another encoding.
        let (again, _) = ih.encode(&b, &mut RngStream::new(2));
        assert_ne!(enc.x, again.x);
    }

    #[test]
    fn the_mixed_label_loss_is_the_weighted_cross_entropy_and_its_gradient() {
        let c = 3;
        let out =
            Outputs { logits: vec![0.2, -1.0, 0.5, 1.5, 0.0, -0.3], classes: c, features: Vec::new(), feature_dim: 0 };
        let keys = vec![
            Key { parts: vec![(0, 0.7), (1, 0.3)], signs: Vec::new() },
            Key { parts: vec![(1, 1.0)], signs: Vec::new() },
        ];
        let labels = [2u32, 0];
        let mut g = OutputGrads::default();
        let b = batch(2, 1, c);
        let v = MixedCrossEntropy { keys: &keys, labels: &labels }.value_grad(&out, &b, &mut g).unwrap();
        let ce = |z: &[f32], y: u32| softmax_cross_entropy(&mut z.to_vec(), &[y], c).0;
        let want = (0.7 * ce(&out.logits[..3], 2) + 0.3 * ce(&out.logits[..3], 0) + ce(&out.logits[3..], 0)) / 2.0;
        assert!((v as f64 - want).abs() < 1e-6, "{v} vs {want}");
        for (t, &gt) in g.logits.iter().enumerate() {
            let eps = 1e-3f32;
            let at = |s: f32| {
                let mut o = out.clone();
                o.logits[t] += s;
                MixedCrossEntropy { keys: &keys, labels: &labels }
                    .value_grad(&o, &b, &mut OutputGrads::default())
                    .unwrap() as f64
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            assert!((fd - gt as f64).abs() < 1e-3, "logit {t}: {fd} vs {gt}");
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(InstaHide { k: 0, ..InstaHide::default() }.validated().is_err());
        assert!(InstaHide { upper: 0.2, ..InstaHide::default() }.validated().is_err());
        assert!(InstaHide { upper: 1.5, ..InstaHide::default() }.validated().is_err());
        assert!(InstaHide { k: 1, upper: 1.0, ..InstaHide::default() }.validated().is_ok());
        let w = InstaHide { k: 2, upper: 0.5, ..InstaHide::default() }.weights(&mut RngStream::new(0));
        assert_eq!(w, vec![0.5, 0.5], "upper = 1/k leaves equal weights");
    }
}
