//! Ding, Denain and Steinhardt's grounding test for similarity metrics ("Grounding
//! Representation Similarity with Statistical Testing", NeurIPS 2021): a metric's distance
//! should track changes in what a representation does (sensitivity) and ignore changes that do
//! not matter (specificity). Their principal-component deletion test, as their
//! `experiments/pca_deletion` code runs it:
//!
//! - every model's representation of one layer, with its lowest-variance principal components
//!   deleted in a fixed grid (0, 100, ..., 767 of 768 units: here the same fractions of the
//!   layer's rank), is paired with a reference (the model of highest accuracy, nothing
//!   deleted);
//! - the functional difference of a pair is |acc(reference) - acc(variant)|;
//! - sensitivity is Spearman's rank correlation between the metric's distance (1 - its
//!   similarity, to 1e-9) and the functional difference over all pairs.
//!
//! The CCA family cannot see a deletion within one model: the deleted representation spans a
//! subspace of the reference's, so every canonical correlation is 1 and the distance 0.
//!
//! Departure: their accuracy is a linear probe trained on each deleted representation; fedkit
//! feeds the deleted features (mean restored) to the model's own output layer, so the test runs
//! on the `features` layer, with no probe to train.
//!
//! ```text
//! fedkit analyze cka --run runs/seed1 --run runs/seed2 --run runs/seed3 --out grounding
//! ```

use fedkit_core::Result;
use serde::Serialize;

use super::linalg::spearman;
use super::representation::Representation;
use super::similarity::{Metric, Options};

/// Ding et al.'s deleted counts out of BERT's 768 units.
const DELETED_OF_768: [usize; 14] = [0, 100, 200, 300, 400, 500, 600, 650, 700, 725, 750, 758, 763, 767];

/// The numbers of leading principal components to keep for a representation of rank `rank`:
/// Ding et al.'s grid as fractions of the rank, at least 1, without repeats, descending.
pub fn kept_counts(rank: usize) -> Vec<usize> {
    let mut k: Vec<usize> = DELETED_OF_768
        .iter()
        .map(|&d| rank.saturating_sub((d as f64 / 768.0 * rank as f64).round() as usize).max(1))
        .collect();
    k.dedup();
    k
}

/// A representation and the accuracy of what the model does with it.
pub struct Variant {
    /// The model it comes from (an index into the models compared).
    pub model: usize,
    /// Principal components kept (the rank when nothing was deleted).
    pub kept: usize,
    pub rep: Representation,
    pub accuracy: f64,
}

/// One metric's result of the test.
#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    pub metric: Metric,
    /// Spearman's rho between distance and functional difference (higher is better).
    pub spearman: f64,
    /// The share of pairs among the closest 20% by distance that are among the 20% most
    /// different in accuracy (Ding et al.'s `bad_frac`; lower is better).
    pub bad_share: f64,
}

/// The accuracy of a linear output layer (`weight` `[p, classes]` row-major, as fedkit keeps a
/// linear layer's weight, and `bias`) on `rep`'s samples (mean restored) against `labels`.
pub fn head_accuracy(rep: &Representation, weight: &[f32], bias: &[f32], labels: &[u32]) -> f64 {
    let (n, p, c) = (rep.n(), rep.p(), bias.len());
    let mut right = 0;
    for (i, &label) in labels.iter().enumerate().take(n) {
        let mut logits: Vec<f64> = bias.iter().map(|&b| b as f64).collect();
        for j in 0..p {
            let h = rep.x.at(i, j) + rep.mean[j];
            logits.iter_mut().zip(&weight[j * c..(j + 1) * c]).for_each(|(z, &w)| *z += h * w as f64);
        }
        let best = (0..c).max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a))).unwrap_or(0);
        right += usize::from(best as u32 == label);
    }
    right as f64 / n.max(1) as f64
}

/// The test for `metric`: every variant against `reference` (itself one of the variants, with
/// nothing deleted).
pub fn sensitivity(metric: Metric, reference: &Variant, variants: &[Variant], o: &Options) -> Result<Sensitivity> {
    let mut dist = Vec::with_capacity(variants.len());
    let mut diff = Vec::with_capacity(variants.len());
    for v in variants {
        // rounded, so that equal distances (CCA's 1 for a subspace of the reference) tie
        // instead of being ranked by rounding noise
        dist.push(((1.0 - metric.similarity(&reference.rep, &v.rep, o)?) * 1e9).round() / 1e9);
        diff.push((reference.accuracy - v.accuracy).abs());
    }
    Ok(Sensitivity { metric, spearman: spearman(&dist, &diff), bad_share: bad_share(&dist, &diff) })
}

/// The share of pairs whose distance is in its bottom 20% while their functional difference is
/// in its top 20% (percentile ranks).
fn bad_share(dist: &[f64], diff: &[f64]) -> f64 {
    let pct = |v: &[f64], x: f64| v.iter().filter(|&&y| y < x).count() as f64 / v.len() as f64;
    let bad = dist.iter().zip(diff).filter(|&(&d, &f)| pct(dist, d) < 0.2 && pct(diff, f) >= 0.8).count();
    bad as f64 / dist.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::RngStream;

    #[test]
    fn the_grid_follows_ding_et_al_and_never_keeps_zero() {
        assert_eq!(kept_counts(768), DELETED_OF_768.iter().map(|d| 768 - d).collect::<Vec<_>>());
        let k = kept_counts(10);
        assert_eq!(k.first(), Some(&10));
        assert_eq!(k.last(), Some(&1));
        assert!(k.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn deleting_components_a_head_reads_is_seen_by_the_distance_and_the_accuracy() {
        // 3 classes along 3 orthogonal units with decreasing scale; the head reads each unit
        let mut rng = RngStream::new(8);
        let (n, p) = (90, 3);
        let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let scale = [4.0, 2.0, 1.0];
        let vals: Vec<f32> = (0..n * p)
            .map(|i| {
                let (s, j) = (i / p, i % p);
                let on = if labels[s] as usize == j { 1.0 } else { 0.0 };
                (scale[j] * (on + 0.05 * rng.normal())) as f32
            })
            .collect();
        let rep = Representation::new(&vals, n, p).unwrap();
        let weight: Vec<f32> =
            (0..p * 3).map(|i| if i / 3 == i % 3 { 1.0 / scale[i / 3] as f32 } else { 0.0 }).collect();
        let bias = [0.0f32; 3];
        let full = head_accuracy(&rep, &weight, &bias, &labels);
        assert!(full > 0.99, "{full}");
        let variants: Vec<Variant> = kept_counts(rep.rank)
            .into_iter()
            .map(|k| {
                let r = rep.keep_components(k).unwrap();
                let accuracy = head_accuracy(&r, &weight, &bias, &labels);
                Variant { model: 0, kept: k, rep: r, accuracy }
            })
            .collect();
        assert!(variants.last().unwrap().accuracy < 0.7, "keeping one component loses classes");
        let reference = Variant { model: 0, kept: rep.rank, rep: rep.clone(), accuracy: full };
        for m in [Metric::Cka, Metric::Procrustes] {
            let s = sensitivity(m, &reference, &variants, &Options::default()).unwrap();
            assert!(s.spearman > 0.5, "{m:?}: {s:?}");
        }
    }
}
