//! Shared pieces of the robust aggregators: the cohort's deltas in client-id order, their Gram
//! matrix and pairwise squared distances (one blocked f64 matrix product, never nested loops
//! over coordinates), and the aggregate of a chosen subset.

use fedkit_core::{Aggregate, Error, Extras, Metrics, Params, Result, Update, Weighting};

/// Columns converted to f64 per block of the Gram product (bounds the extra memory to
/// n x BLOCK doubles).
const BLOCK: usize = 1 << 15;

/// The updates sorted by client id, checked to have deltas of one length; an error naming
/// `method` when there are fewer than `min` of them.
pub fn by_client<'a>(updates: &'a [Update], min: usize, method: &str) -> Result<Vec<&'a Update>> {
    let mut order: Vec<&Update> = updates.iter().collect();
    order.sort_by_key(|u| u.client);
    if order.len() < min.max(1) {
        return Err(Error::Method(format!(
            "{method}: {} updates this round, but the rule needs at least {min} (raise sampling.per_round or lower the rule's f)",
            order.len()
        )));
    }
    let len = order[0].delta.len();
    if let Some(u) = order.iter().find(|u| u.delta.len() != len) {
        return Err(Error::Shape(format!(
            "{method}: client {} sent {} values, expected {len}",
            u.client,
            u.delta.len()
        )));
    }
    Ok(order)
}

/// The Gram matrix G_ij = <x_i, x_j> of the rows (n x n, row-major), accumulated in f64 over
/// column blocks with one matrix product per block.
pub fn gram(rows: &[&[f32]]) -> Vec<f64> {
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let mut g = vec![0.0f64; n * n];
    let mut block = vec![0.0f64; n * BLOCK.min(d.max(1))];
    for start in (0..d).step_by(BLOCK) {
        let w = BLOCK.min(d - start);
        for (i, r) in rows.iter().enumerate() {
            block[i * w..(i + 1) * w].iter_mut().zip(&r[start..start + w]).for_each(|(b, v)| *b = *v as f64);
        }
        // SAFETY: `block` holds n rows of w values (row stride w); `g` holds n x n values; the
        // product reads block as n x w and its transpose as w x n, and writes g (no aliasing).
        unsafe {
            gemm::gemm(
                n,
                n,
                w,
                g.as_mut_ptr(),
                1,
                n as isize,
                true,
                block.as_ptr(),
                1,
                w as isize,
                block.as_ptr(),
                w as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    g
}

/// Pairwise squared Euclidean distances ||x_i - x_j||^2 (n x n, row-major) from the Gram
/// matrix, clamped at 0 against rounding.
pub fn sq_distances(rows: &[&[f32]]) -> Vec<f64> {
    let n = rows.len();
    let g = gram(rows);
    let mut d = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            if i != j {
                d[i * n + j] = (g[i * n + i] + g[j * n + j] - 2.0 * g[i * n + j]).max(0.0);
            }
        }
    }
    d
}

/// The deltas of `updates` as slices.
pub fn rows<'a>(updates: &[&'a Update]) -> Vec<&'a [f32]> {
    updates.iter().map(|u| u.delta.as_slice()).collect()
}

/// An aggregate with delta `values` (laid out like `like`) over the `accepted` updates (their
/// total weight, and their extras averaged uniformly).
pub fn aggregate_of(like: &Params, values: Vec<f64>, accepted: &[&Update], weighting: Weighting) -> Result<Aggregate> {
    let delta = Params::from_vec(like.layout().clone(), values.into_iter().map(|v| v as f32).collect())?;
    let extras = Extras::weighted_mean(&accepted.iter().map(|u| (&u.extras, 1.0)).collect::<Vec<_>>())?;
    let mut ids: Vec<u32> = accepted.iter().map(|u| u.client).collect();
    ids.sort_unstable();
    Ok(Aggregate {
        delta,
        weight: accepted.iter().map(|u| u.weight).sum(),
        extras,
        accepted: ids,
        metrics: Metrics::new(),
        weighting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::RngStream;

    #[test]
    fn distances_from_the_gram_matrix_are_exact() {
        let mut rng = RngStream::new(1);
        // Several blocks and a ragged last one.
        let d = 2 * BLOCK + 17;
        let data: Vec<Vec<f32>> = (0..5).map(|_| (0..d).map(|_| rng.normal() as f32).collect()).collect();
        let rows: Vec<&[f32]> = data.iter().map(|v| v.as_slice()).collect();
        let got = sq_distances(&rows);
        for i in 0..5 {
            for j in 0..5 {
                let want: f64 = rows[i].iter().zip(rows[j]).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
                assert!((got[i * 5 + j] - want).abs() <= 1e-9 * want.max(1.0), "{i} {j}: {} vs {want}", got[i * 5 + j]);
            }
        }
    }
}
