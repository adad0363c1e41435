//! Sparse selections shared by the methods that keep the largest coordinates (Neurotoxin's
//! mask, SparseFed's global top-k; the communication issue's `topk` compressor builds on it): a
//! linear-time selection (`select_nth_unstable`), never a full sort.

/// The indices of the `k` largest magnitudes of `v`, sorted by index (ties broken by the lower
/// index).
pub fn top_k(v: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    idx.select_nth_unstable_by(k - 1, |&a, &b| v[b as usize].abs().total_cmp(&v[a as usize].abs()).then(a.cmp(&b)));
    let mut top = idx[..k].to_vec();
    top.sort_unstable();
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_exactly_the_k_largest_magnitudes() {
        assert_eq!(top_k(&[0.1, -5.0, 2.0, 0.0, 3.0], 2), vec![1, 4]);
        assert_eq!(top_k(&[1.0, -1.0, 1.0], 2), vec![0, 1], "ties go to the lower index");
        assert!(top_k(&[1.0], 0).is_empty());
        let mut rng = fedkit_core::RngStream::new(3);
        let v: Vec<f32> = (0..1000).map(|_| rng.normal() as f32).collect();
        let top = top_k(&v, 37);
        let threshold = top.iter().map(|&i| v[i as usize].abs()).fold(f32::INFINITY, f32::min);
        assert_eq!(top.len(), 37);
        assert_eq!(v.iter().filter(|x| x.abs() > threshold).count(), 36, "everything larger is in");
    }
}
