//! How close a recovered token sequence is to the one it recovers: ROUGE-1, ROUGE-2 and ROUGE-L
//! F1 (Lin 2004) over token ids, and the precision and recall of a recovered bag of tokens.
//!
//! - ROUGE-n: clipped n-gram overlap (each n-gram counts at most as often as in the other
//!   sequence); precision over the candidate's n-grams, recall over the reference's, F1 their
//!   harmonic mean.
//! - ROUGE-L: the longest common subsequence; precision LCS / |candidate|, recall LCS /
//!   |reference|, F1 their harmonic mean.

use std::collections::{BTreeSet, HashMap};

/// F1 of precision `p` and recall `r` (0 when both are 0).
fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
}

/// ROUGE-n F1 of `candidate` against `reference`.
pub fn rouge_n(candidate: &[u32], reference: &[u32], n: usize) -> f64 {
    let grams = |s: &[u32]| -> HashMap<Vec<u32>, usize> {
        let mut m = HashMap::new();
        for w in s.windows(n) {
            *m.entry(w.to_vec()).or_insert(0) += 1;
        }
        m
    };
    let (c, r) = (grams(candidate), grams(reference));
    let overlap: usize = c.iter().map(|(g, &k)| k.min(r.get(g).copied().unwrap_or(0))).sum();
    let (nc, nr) = (c.values().sum::<usize>(), r.values().sum::<usize>());
    if nc == 0 || nr == 0 {
        return 0.0;
    }
    f1(overlap as f64 / nc as f64, overlap as f64 / nr as f64)
}

/// Length of the longest common subsequence.
fn lcs(a: &[u32], b: &[u32]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for &x in a {
        let mut diag = 0;
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { row[j + 1].max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// ROUGE-L F1 of `candidate` against `reference`.
pub fn rouge_l(candidate: &[u32], reference: &[u32]) -> f64 {
    if candidate.is_empty() || reference.is_empty() {
        return 0.0;
    }
    let l = lcs(candidate, reference) as f64;
    f1(l / candidate.len() as f64, l / reference.len() as f64)
}

/// Precision and recall of the recovered token set against the true one.
pub fn bag_precision_recall(recovered: &BTreeSet<u32>, truth: &BTreeSet<u32>) -> (f64, f64) {
    let hit = recovered.intersection(truth).count() as f64;
    let p = if recovered.is_empty() { 0.0 } else { hit / recovered.len() as f64 };
    let r = if truth.is_empty() { 0.0 } else { hit / truth.len() as f64 };
    (p, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    // "the cat sat on the mat" against "the cat on the mat" (ids: the 1, cat 2, sat 3, on 4, mat 5).
    #[test]
    fn rouge_has_its_textbook_values() {
        let reference = [1, 2, 3, 4, 1, 5];
        let candidate = [1, 2, 4, 1, 5];
        // ROUGE-1: 5 of 5 candidate unigrams match, 5 of 6 reference ones: F1 = 10/11.
        assert!((rouge_n(&candidate, &reference, 1) - 10.0 / 11.0).abs() < 1e-12);
        // ROUGE-2: bigrams (the cat), (on the), (the mat) match: P 3/4, R 3/5, F1 = 2/3.
        assert!((rouge_n(&candidate, &reference, 2) - 2.0 / 3.0).abs() < 1e-12);
        // ROUGE-L: LCS "the cat on the mat" = 5: the same F1 as ROUGE-1.
        assert!((rouge_l(&candidate, &reference) - 10.0 / 11.0).abs() < 1e-12);
        assert_eq!(rouge_l(&reference, &reference), 1.0);
        assert_eq!(rouge_n(&[7, 8], &reference, 1), 0.0);
        // Repeats are clipped: of "the the the" only two match the reference's two "the".
        assert!((rouge_n(&[1, 1, 1], &reference, 1) - f1(2.0 / 3.0, 2.0 / 6.0)).abs() < 1e-12);
    }

    #[test]
    fn bag_precision_and_recall_count_the_shared_tokens() {
        let got: BTreeSet<u32> = [1, 2, 3, 9].into();
        let truth: BTreeSet<u32> = [1, 2, 3, 4, 5].into();
        assert_eq!(bag_precision_recall(&got, &truth), (0.75, 0.6));
    }
}
