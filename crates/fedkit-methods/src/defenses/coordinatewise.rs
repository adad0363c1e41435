//! Shared by the coordinate-wise rules (`median`, `trimmed_mean`, Bulyan's second stage): apply
//! a statistic to the n values of every coordinate, in column blocks transposed into a
//! contiguous buffer (so each coordinate's values are contiguous and cache-friendly).

/// Coordinates per transposed block.
const BLOCK: usize = 1024;

/// `stat(values)` of every coordinate of the rows (all of one length), where `values` holds the
/// n values of that coordinate in row order (and may be reordered by `stat`).
pub fn per_coordinate(rows: &[&[f32]], mut stat: impl FnMut(&mut [f32]) -> f64) -> Vec<f64> {
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let mut out = Vec::with_capacity(d);
    let mut block = vec![0.0f32; n * BLOCK];
    for start in (0..d).step_by(BLOCK) {
        let w = BLOCK.min(d - start);
        for (i, r) in rows.iter().enumerate() {
            for (j, v) in r[start..start + w].iter().enumerate() {
                block[j * n + i] = *v;
            }
        }
        for j in 0..w {
            out.push(stat(&mut block[j * n..(j + 1) * n]));
        }
    }
    out
}

/// The median of `v` (the mean of the two middle values for an even count), reordering `v`.
pub fn median(v: &mut [f32]) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let mid = n / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f32::total_cmp);
    let hi = *m as f64;
    if n % 2 == 1 {
        return hi;
    }
    let lo = v[..mid].iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    (lo + hi) / 2.0
}

/// The mean of `v` without its `k` smallest and `k` largest values (in f64), reordering `v`.
pub fn trimmed_mean(v: &mut [f32], k: usize) -> f64 {
    let n = v.len();
    if 2 * k >= n {
        return median(v);
    }
    if k > 0 {
        v.select_nth_unstable_by(k, f32::total_cmp);
        v[k..].select_nth_unstable_by(n - 2 * k - 1, f32::total_cmp);
    }
    let kept = &v[k..n - k];
    kept.iter().map(|x| *x as f64).sum::<f64>() / kept.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_exact() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(trimmed_mean(&mut [10.0, 1.0, 2.0, 3.0, -50.0], 1), 2.0);
        assert_eq!(trimmed_mean(&mut [1.0, 2.0, 6.0], 0), 3.0);
        let rows: Vec<Vec<f32>> = (0..5).map(|i| (0..2500).map(|j| ((i * 7 + j) % 11) as f32).collect()).collect();
        let r: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
        let got = per_coordinate(&r, median);
        for j in 0..2500 {
            let mut col: Vec<f32> = rows.iter().map(|v| v[j]).collect();
            col.sort_by(f32::total_cmp);
            assert_eq!(got[j], col[2] as f64, "coordinate {j}");
        }
    }
}
