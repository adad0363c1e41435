//! `membership`: was a sample in the training data? Two attacks on a trained model, scored by
//! ROC (Carlini, Chien, Nasr, Song, Terzis, Tramèr, "Membership Inference Attacks From First
//! Principles", IEEE S&P 2022; PAPERS.txt 69 applies them to distilled students).
//!
//! - **Loss threshold** (Yeom et al. 2018): score = -loss(x, y); members have lower loss.
//! - **LiRA, online** (Carlini et al. 2022, Algorithm 1): train shadow models on random halves of
//!   a population that holds the targets; for each target (x, y), the shadows that trained on it
//!   (IN) and those that did not (OUT) give two samples of the logit-scaled confidence
//!   phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j. Fit Gaussians N(mu_in, s^2) and
//!   N(mu_out, s^2) and score the target model's phi by the log likelihood ratio
//!   log N(phi; mu_in, s^2) - log N(phi; mu_out, s^2). With few shadows (< 64) the paper fits
//!   one variance for all samples ("global variance"); here s^2 is the pooled variance of IN and
//!   OUT around their per-sample means (the reference code uses the spread of all IN values; a
//!   single shared s^2 does not change the ranking, so no reported metric depends on it). A
//!   target without an IN (or OUT) shadow scores with the population's mean IN-OUT gap.
//! - **Metrics**: the ROC curve, its AUC, and the true-positive rate at 0.1% and 1% false
//!   positives (the paper's low-FPR regime).
//!
//! `fedkit attack membership --run DIR [--shadows K]` trains the K shadows by re-running the
//! run's own federated training (its config with seed + 1 + k: another initialisation, cohort
//! and batch order) on a random half of the population: the run's members plus as many training
//! samples no client holds (the non-members), each kept with probability 1/2 by the client that
//! holds it (a non-member by a client drawn at random, which makes the shadows' clients more
//! alike than a non-iid target's). The shadows are thus trained as the target was, on the run's
//! own data. A distilled student (FedDF, FedBE: the server distils the client models'
//! ensemble on unlabeled data) is attacked as the run's final model: the server's unlabeled
//! pool (`[data] unlabeled_share` < 1 of the samples no client holds) is neither member nor
//! non-member, the non-members come from the rest, and every shadow distils on the target's
//! pool. `--personalised` scores each sample on the model of the client that holds it (a
//! non-member: the client it is given to in the population) in the run and in every shadow:
//! the algorithm's personalised model (`Engine::client_model`: standalone `local` training,
//! pFedMe, FedFomo, Per-FedAvg's adaptation step, ...), the global model where it has none.
//! Refused: a distilling run whose pool is every unheld sample (no non-member left),
//! aggregators that read server-side training samples (FLTrust, DeepSight), a `[threat]`,
//! per-client models and losses prepared from the data.
//!
//! Parameters (`fedkit attack membership` flags): `shadows` (K, 16), `personalised`.
//!
//! Example:
//! ```text
//! fedkit run configs/papers/membership_fmnist.toml --out runs/mia
//! fedkit attack membership --run runs/mia --shadows 16
//! ```

/// The logit-scaled confidence phi = z_y - logsumexp_{j != y} z_j of a row of logits.
pub fn logit_confidence(logits: &[f32], y: usize) -> f64 {
    let others = logits.iter().enumerate().filter(|&(j, _)| j != y).map(|(_, &z)| z as f64);
    let max = others.clone().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + others.map(|z| (z - max).exp()).sum::<f64>().ln();
    logits[y] as f64 - lse
}

/// The online LiRA score of each target: `target[i]` is phi under the attacked model, and
/// `shadows[k][i]` phi under shadow k with `in_shadow[k][i]` whether shadow k trained on target i.
pub fn lira_online(target: &[f64], shadows: &[Vec<f64>], in_shadow: &[Vec<bool>]) -> Vec<f64> {
    let n = target.len();
    let mean_of = |want: bool| -> Vec<Option<f64>> {
        (0..n)
            .map(|i| {
                let v: Vec<f64> =
                    shadows.iter().zip(in_shadow).filter(|(_, m)| m[i] == want).map(|(s, _)| s[i]).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            })
            .collect()
    };
    let (mu_in, mu_out) = (mean_of(true), mean_of(false));
    // Pooled variance around the per-sample means.
    let (mut ss, mut count) = (0.0f64, 0usize);
    for (s, m) in shadows.iter().zip(in_shadow) {
        for i in 0..n {
            if let Some(mu) = if m[i] { mu_in[i] } else { mu_out[i] } {
                ss += (s[i] - mu).powi(2);
                count += 1;
            }
        }
    }
    let var = (ss / count.max(1) as f64).max(1e-12);
    // Fallback for a target without IN or OUT shadows: the mean gap between the two.
    let gaps: Vec<f64> = (0..n).filter_map(|i| Some(mu_in[i]? - mu_out[i]?)).collect();
    let gap = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    (0..n)
        .map(|i| {
            let (a, b) = match (mu_in[i], mu_out[i]) {
                (Some(a), Some(b)) => (a, b),
                (Some(a), None) => (a, a - gap),
                (None, Some(b)) => (b + gap, b),
                (None, None) => (gap / 2.0, -gap / 2.0),
            };
            ((target[i] - b).powi(2) - (target[i] - a).powi(2)) / (2.0 * var)
        })
        .collect()
}

/// The ROC curve of `scores` (higher = member) against `member`: (false-positive rate,
/// true-positive rate) points from (0, 0) to (1, 1), ties stepped together.
pub fn roc(scores: &[f64], member: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = member.iter().filter(|&&m| m).count().max(1) as f64;
    let neg = member.iter().filter(|&&m| !m).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = vec![(0.0, 0.0)];
    let mut k = 0;
    while k < order.len() {
        let s = scores[order[k]];
        while k < order.len() && scores[order[k]] == s {
            if member[order[k]] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            k += 1;
        }
        out.push((fp / neg, tp / pos));
    }
    out
}

/// Area under a ROC curve (trapezoids).
pub fn auc(curve: &[(f64, f64)]) -> f64 {
    curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum()
}

/// The largest true-positive rate at a false-positive rate of at most `fpr`.
pub fn tpr_at(curve: &[(f64, f64)], fpr: f64) -> f64 {
    curve.iter().filter(|p| p.0 <= fpr + 1e-12).map(|p| p.1).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logit_confidence_is_the_log_odds_of_the_label() {
        let z = [1.0f32, 2.0, 0.5];
        let p: Vec<f64> = {
            let e: Vec<f64> = z.iter().map(|&v| (v as f64).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        for y in 0..3 {
            assert!((logit_confidence(&z, y) - (p[y] / (1.0 - p[y])).ln()).abs() < 1e-9);
        }
    }

    #[test]
    fn roc_auc_and_low_fpr_rates_have_their_known_values() {
        let member = [true, true, false, false];
        let perfect = roc(&[4.0, 3.0, 2.0, 1.0], &member);
        assert_eq!(auc(&perfect), 1.0);
        assert_eq!(tpr_at(&perfect, 0.0), 1.0);
        assert_eq!(auc(&roc(&[1.0, 2.0, 3.0, 4.0], &member)), 0.0);
        // All tied: the diagonal.
        assert_eq!(auc(&roc(&[1.0; 4], &member)), 0.5);
        // One member above both non-members, one below: AUC 1/2, TPR 1/2 at FPR 0.
        let mixed = roc(&[3.0, 0.0, 2.0, 1.0], &member);
        assert_eq!(auc(&mixed), 0.5);
        assert_eq!(tpr_at(&mixed, 0.0), 0.5);
    }

    #[test]
    fn lira_scores_a_sample_by_which_of_its_two_gaussians_explains_it() {
        // Two targets; shadows alternate IN/OUT. IN phi = 2, OUT phi = 0 (plus small noise).
        let k = 8;
        let in_shadow: Vec<Vec<bool>> = (0..k).map(|j| vec![j % 2 == 0, j % 2 == 1]).collect();
        let noise = |j: usize| 0.1 * (j as f64 - 3.5) / 3.5;
        let shadows: Vec<Vec<f64>> =
            (0..k).map(|j| in_shadow[j].iter().map(|&m| if m { 2.0 } else { 0.0 } + noise(j)).collect()).collect();
        // The target model saw sample 0 (phi 2) and not sample 1 (phi 0).
        let s = lira_online(&[2.0, 0.0], &shadows, &in_shadow);
        assert!(s[0] > 10.0 && s[1] < -10.0, "{s:?}");
        // Halfway between: no evidence either way.
        assert!(lira_online(&[1.0, 1.0], &shadows, &in_shadow).iter().all(|v| v.abs() < 1e-2));
    }
}
