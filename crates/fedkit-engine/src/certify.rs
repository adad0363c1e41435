//! Parameter smoothing and its certified radius (CRFL, Xie et al., ICML 2021; the randomised
//! smoothing bound of Cohen et al., ICML 2019, applied to the model's parameters): `fedkit certify
//! RUN`.
//!
//! M noisy copies w + N(0, sigma^2 I) of the final model (noise on the trained parameters only;
//! copy j from the stream `certify_noise` of the run seed) vote on every test input. With n_A
//! votes for the top class, p_A is its one-sided Clopper-Pearson lower bound at level 1 - alpha;
//! when p_A > 1/2 the smoothed prediction is certified at radius RAD = sigma Phi^-1(p_A) (it is
//! the same for every model within L2 distance RAD of w), otherwise the input is an abstention.
//! The certified accuracy at radius r is the fraction of test inputs predicted correctly and
//! certified at RAD >= r.

use fedkit_core::stats::{clopper_pearson_lower, normal_quantile};
use fedkit_core::{Batch, ClientData, Error, Mode, Outputs, Result, RngStream, argmax};

use crate::Engine;

/// One test input's smoothed prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Certified {
    /// The top class (None: abstained, p_A <= 1/2).
    pub class: Option<u32>,
    /// The true label.
    pub label: u32,
    /// The certified radius (0 when abstained).
    pub radius: f64,
}

/// The settings of a certification.
#[derive(Clone, Copy, Debug)]
pub struct Smoothing {
    pub sigma: f64,
    pub samples: usize,
    pub alpha: f64,
    /// At most this many test inputs (the first ones).
    pub limit: usize,
}

/// The certified accuracy at each radius: the fraction of `cs` correct with radius >= r.
pub fn certified_accuracy(cs: &[Certified], radii: &[f64]) -> Vec<f64> {
    radii
        .iter()
        .map(|&r| {
            let ok = cs.iter().filter(|c| c.class == Some(c.label) && c.radius >= r).count();
            ok as f64 / cs.len().max(1) as f64
        })
        .collect()
}

/// The smoothed prediction of each input from its vote counts.
pub fn from_votes(votes: &[Vec<u32>], labels: &[u32], s: &Smoothing) -> Vec<Certified> {
    votes
        .iter()
        .zip(labels)
        .map(|(v, &label)| {
            let (top, n_a) = v.iter().enumerate().fold((0, 0), |a, (k, &n)| if n > a.1 { (k, n) } else { a });
            let p_a = clopper_pearson_lower(n_a as u64, s.samples as u64, s.alpha);
            if p_a > 0.5 {
                Certified { class: Some(top as u32), label, radius: s.sigma * normal_quantile(p_a) }
            } else {
                Certified { class: None, label, radius: 0.0 }
            }
        })
        .collect()
}

impl Engine {
    /// Certify the current global model on the test set by parameter smoothing.
    pub fn certify(&mut self, s: &Smoothing) -> Result<Vec<Certified>> {
        if !(s.sigma > 0.0 && s.sigma.is_finite()) {
            return Err(Error::config("--sigma", format!("must be a finite number > 0, got {}", s.sigma)));
        }
        if s.samples == 0 {
            return Err(Error::config("--samples", "must be at least 1"));
        }
        if !(s.alpha > 0.0 && s.alpha < 1.0) {
            return Err(Error::config("--alpha", format!("must be in (0, 1), got {}", s.alpha)));
        }
        let test = self.test.without_transforms();
        if test.data.positions() > 0 {
            return Err(Error::Method(format!(
                "certify predicts one class per sample; {} has a target per position (sequence data)",
                test.data.name
            )));
        }
        let n = test.len().min(s.limit);
        let classes = test.data.classes;
        let (global, seed, batch) = (self.global.clone(), self.cfg.seed, self.cfg.eval.batch_size.max(1));
        let global = &global;
        let ranges: Vec<std::ops::Range<usize>> = global.layout().trainable_ranges().collect();
        let predictions = self.workers_mut().map(s.samples, |model, j| -> Result<Vec<u32>> {
            let mut w = global.clone();
            let mut rng = RngStream::derive(seed, "certify_noise", 0, j as u64);
            let ws = w.as_mut_slice();
            for r in &ranges {
                ws[r.clone()].iter_mut().for_each(|v| *v += (s.sigma * rng.normal()) as f32);
            }
            predict(model, &w, &test, n, batch)
        });
        let mut votes = vec![vec![0u32; classes]; n];
        for p in predictions {
            for (v, c) in votes.iter_mut().zip(p?) {
                v[c as usize] += 1;
            }
        }
        let labels: Vec<u32> = (0..n).map(|p| test.label(p)).collect();
        Ok(from_votes(&votes, &labels, s))
    }
}

/// The top-1 class of the first `n` samples of `data` under `params`.
fn predict(
    model: &mut dyn fedkit_core::Model,
    params: &fedkit_core::Params,
    data: &ClientData,
    n: usize,
    batch: usize,
) -> Result<Vec<u32>> {
    let (mut b, mut out, mut rng) = (Batch::default(), Outputs::default(), RngStream::new(0));
    let mut preds = Vec::with_capacity(n);
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(batch) {
        b.fill(data, chunk, &mut rng);
        model.forward(params, &b, Mode::Eval, &mut out)?;
        preds.extend((0..chunk.len()).map(|i| argmax(out.logits_of(i)) as u32));
    }
    Ok(preds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanimous_votes_certify_at_sigma_times_the_quantile_and_split_votes_abstain() {
        let s = Smoothing { sigma: 0.5, samples: 100, alpha: 0.001, limit: usize::MAX };
        let cs = from_votes(&[vec![100, 0], vec![50, 50], vec![0, 100]], &[0, 0, 0], &s);
        let r = 0.5 * normal_quantile(0.001f64.powf(0.01));
        assert_eq!(cs[0].class, Some(0));
        assert!((cs[0].radius - r).abs() < 1e-9);
        assert_eq!(cs[1], Certified { class: None, label: 0, radius: 0.0 });
        assert_eq!(cs[2].class, Some(1), "certified but wrong");
        assert_eq!(certified_accuracy(&cs, &[0.0, r - 1e-6, r + 1e-6]), vec![1.0 / 3.0, 1.0 / 3.0, 0.0]);
    }
}
