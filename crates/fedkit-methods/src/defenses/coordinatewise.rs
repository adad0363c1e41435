//! Shared by the coordinate-wise rules (`median`, `trimmed_mean`, Bulyan's second stage): a
//! statistic of the n values of every coordinate, handed over sorted.
//!
//! The values are sorted by a sorting network (Batcher's odd-even merge sort for the next power
//! of two, pruned to n inputs), run on [`LANES`] coordinates at once. They are sorted as integer
//! keys in the order of `f32::total_cmp`, so the sort is exact and a NaN sorts where `total_cmp`
//! puts it (a defence must survive an attacker's NaNs). With AVX2 (detected at run time) one
//! comparator is one vector min and max; the result is the same bits with or without it.
//! Rows are first copied in blocks of [`BLOCK`] coordinates, so that every read streams.

/// Coordinates per gathered block (n x BLOCK values stay in the L2 cache).
const BLOCK: usize = 1024;
/// Coordinates sorted together by one pass of the network.
const LANES: usize = 8;

/// The comparators (i, j), i < j, of Batcher's odd-even merge sort on n inputs, in order: after
/// `v[j] = max, v[i] = min` for each, `v` is sorted. Built for the next power of two p >= n; a
/// comparator touching an input >= n is dropped (those inputs would hold +infinity and never
/// move), so the network sorts n inputs.
pub fn sorting_network(n: usize) -> Vec<(u32, u32)> {
    let p = n.next_power_of_two();
    let mut net = Vec::new();
    let mut size = 1;
    while size < p {
        let mut k = size;
        while k >= 1 {
            let mut j = k % size;
            while j + k < p {
                for i in 0..k.min(p - j - k) {
                    let (a, b) = (i + j, i + j + k);
                    if a / (2 * size) == b / (2 * size) && b < n {
                        net.push((a as u32, b as u32));
                    }
                }
                j += 2 * k;
            }
            k /= 2;
        }
        size *= 2;
    }
    net
}

/// The integer key of `x` in the order of `f32::total_cmp` (the same map it uses); an involution.
fn key(x: i32) -> i32 {
    x ^ (((x >> 31) as u32) >> 1) as i32
}

/// Run the network on every lane of `keys` (one row of lanes per input).
#[inline(always)]
fn sort_lanes_portable(net: &[(u32, u32)], keys: &mut [[i32; LANES]]) {
    for &(a, b) in net {
        let (x, y) = (keys[a as usize], keys[b as usize]);
        let mut lo = [0; LANES];
        let mut hi = [0; LANES];
        for l in 0..LANES {
            lo[l] = x[l].min(y[l]);
            hi[l] = x[l].max(y[l]);
        }
        keys[a as usize] = lo;
        keys[b as usize] = hi;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sort_lanes_avx2(net: &[(u32, u32)], keys: &mut [[i32; LANES]]) {
    sort_lanes_portable(net, keys)
}

fn sort_lanes(net: &[(u32, u32)], keys: &mut [[i32; LANES]]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { sort_lanes_avx2(net, keys) };
        return;
    }
    sort_lanes_portable(net, keys)
}

/// `stat(sorted)` of every coordinate of the rows (all of one length), where `sorted` holds the
/// n values of that coordinate in ascending `total_cmp` order.
pub fn per_coordinate_sorted(rows: &[&[f32]], mut stat: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let net = sorting_network(n);
    let mut out = Vec::with_capacity(d);
    let mut block = vec![0.0f32; n * BLOCK.min(d.max(1))];
    let mut keys = vec![[0i32; LANES]; n];
    let mut sorted = vec![0.0f32; n * LANES];
    for start in (0..d).step_by(BLOCK) {
        let w = BLOCK.min(d - start);
        for (i, r) in rows.iter().enumerate() {
            block[i * w..(i + 1) * w].copy_from_slice(&r[start..start + w]);
        }
        for lane0 in (0..w).step_by(LANES) {
            let lanes = LANES.min(w - lane0);
            for (i, k) in keys.iter_mut().enumerate() {
                let src = &block[i * w + lane0..i * w + lane0 + lanes];
                k.iter_mut().zip(src).for_each(|(k, v)| *k = key(v.to_bits() as i32));
            }
            sort_lanes(&net, &mut keys);
            for (i, k) in keys.iter().enumerate() {
                for (l, k) in k.iter().enumerate().take(lanes) {
                    sorted[l * n + i] = f32::from_bits(key(*k) as u32);
                }
            }
            out.extend(sorted.chunks_exact(n.max(1)).take(lanes).map(&mut stat));
        }
    }
    out
}

/// The median of sorted `v` (the mean of the two middle values for an even count; 0 if empty).
pub fn median_of_sorted(v: &[f32]) -> f64 {
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2] as f64,
        _ => (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0,
    }
}

/// The mean of sorted `v` without its `k` smallest and `k` largest values (in f64); the median
/// when that leaves nothing.
pub fn trimmed_mean_of_sorted(v: &[f32], k: usize) -> f64 {
    let n = v.len();
    if 2 * k >= n {
        return median_of_sorted(v);
    }
    let kept = &v[k..n - k];
    kept.iter().map(|x| *x as f64).sum::<f64>() / kept.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total_sorted(mut v: Vec<f32>) -> Vec<u32> {
        v.sort_by(f32::total_cmp);
        v.into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn the_network_sorts_every_zero_one_input_up_to_12() {
        // The 0-1 principle: a comparator network that sorts every 0-1 input sorts everything.
        for n in 1..=12usize {
            let net = sorting_network(n);
            for bits in 0u32..(1 << n) {
                let mut v: Vec<u32> = (0..n).map(|i| (bits >> i) & 1).collect();
                for &(a, b) in &net {
                    let (a, b) = (a as usize, b as usize);
                    if v[a] > v[b] {
                        v.swap(a, b);
                    }
                }
                assert!(v.windows(2).all(|w| w[0] <= w[1]), "n = {n}, input {bits:b}");
            }
        }
        // Batcher's network on 16 inputs has 63 comparators; 100 inputs need far fewer than 100^2.
        assert_eq!(sorting_network(16).len(), 63);
        assert!(sorting_network(100).len() < 1500);
    }

    #[test]
    fn columns_come_sorted_in_total_order_with_nans_signed_zeros_and_a_ragged_tail() {
        let specials = [f32::NAN, -f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-42, -3.5];
        for n in [1usize, 2, 3, 7, 10, 31, 100, 129] {
            let d = 2 * BLOCK + 13;
            let rows: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    (0..d)
                        .map(|j| match (i * 31 + j * 7) % 23 {
                            s if s < specials.len() => specials[s],
                            s => ((i * 7919 + j * 104729) % 1000) as f32 * 0.37 - s as f32,
                        })
                        .collect()
                })
                .collect();
            let r: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
            let mut j = 0;
            per_coordinate_sorted(&r, |sorted| {
                let want = total_sorted(rows.iter().map(|v| v[j]).collect());
                let got: Vec<u32> = sorted.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "n = {n}, coordinate {j}");
                j += 1;
                0.0
            });
            assert_eq!(j, d);
        }
    }

    #[test]
    fn the_portable_and_the_vector_paths_agree() {
        let net = sorting_network(37);
        let mut a: Vec<[i32; LANES]> =
            (0..37).map(|i| std::array::from_fn(|l| ((i * 7919 + l * 104729) % 2001) as i32 - 1000)).collect();
        let mut b = a.clone();
        sort_lanes(&net, &mut a);
        sort_lanes_portable(&net, &mut b);
        assert_eq!(a, b);
        assert!((0..LANES).all(|l| a.windows(2).all(|w| w[0][l] <= w[1][l])));
    }

    #[test]
    fn statistics_are_exact() {
        assert_eq!(median_of_sorted(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median_of_sorted(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(trimmed_mean_of_sorted(&[-50.0, 1.0, 2.0, 3.0, 10.0], 1), 2.0);
        assert_eq!(trimmed_mean_of_sorted(&[1.0, 2.0, 6.0], 0), 3.0);
        assert_eq!(trimmed_mean_of_sorted(&[1.0, 2.0, 6.0, 7.0], 2), 4.0, "trimming everything leaves the median");
        let rows: Vec<Vec<f32>> = (0..5).map(|i| (0..2500).map(|j| ((i * 7 + j) % 11) as f32).collect()).collect();
        let r: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
        let got = per_coordinate_sorted(&r, median_of_sorted);
        for j in 0..2500 {
            let mut col: Vec<f32> = rows.iter().map(|v| v[j]).collect();
            col.sort_by(f32::total_cmp);
            assert_eq!(got[j], col[2] as f64, "coordinate {j}");
        }
    }
}
