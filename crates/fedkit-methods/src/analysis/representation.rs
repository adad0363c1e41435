//! A layer's representation of a probe set, prepared once for every similarity metric: the
//! activations centred per unit (n samples x p units, f64), their Gram matrix K = X X^T and its
//! eigendecomposition. Every metric is computed in sample space from these, so a layer wider
//! than the probe set (a flattened convolution) costs no more than n x n.

use fedkit_core::{Error, Result};

use super::linalg::{Mat, SymEigen, sym_eigen};

/// Eigenvalues of K below this share of the largest are treated as zero (the representation's
/// rank): directions with a singular value under 1e-5 of the top one are rounding noise.
const RANK_TOL: f64 = 1e-10;

/// One layer's centred activations on a probe set, with its Gram matrix's eigendecomposition.
#[derive(Clone, Debug)]
pub struct Representation {
    /// The centred activations, n x p.
    pub x: Mat,
    /// Each unit's mean, which centring removed.
    pub mean: Vec<f64>,
    /// K = X X^T (n x n).
    pub gram: Mat,
    /// K's eigendecomposition (descending) on its non-zero part: the `rank` left singular
    /// vectors U of X (n x rank) and its squared singular values.
    pub eigen: SymEigen,
    /// The number of eigenvalues above the rank tolerance.
    pub rank: usize,
}

impl Representation {
    /// The representation of `values` (`n x dim`, row-major: one row per sample), centred per
    /// unit. Errors on a size mismatch, fewer than 2 samples or non-finite values.
    pub fn new(values: &[f32], n: usize, dim: usize) -> Result<Representation> {
        if n < 2 || dim == 0 || values.len() != n * dim {
            return Err(Error::Shape(format!(
                "a representation needs >= 2 samples of >= 1 unit ({} values for {n} samples x {dim} units)",
                values.len()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Method("the activations have non-finite values".into()));
        }
        let mut x = Mat { rows: n, cols: dim, data: values.iter().map(|&v| v as f64).collect() };
        let mut mean = vec![0.0; dim];
        for (j, m) in mean.iter_mut().enumerate() {
            *m = (0..n).map(|i| x.data[i * dim + j]).sum::<f64>() / n as f64;
            (0..n).for_each(|i| x.data[i * dim + j] -= *m);
        }
        Representation::from_centred(x, mean)
    }

    /// The representation of already-centred activations with unit means `mean`. The singular
    /// vectors come from the smaller of the two Gram matrices: K = X X^T (n x n) directly, or
    /// X^T X = V Lambda V^T (p x p) and U = X V Lambda^(-1/2) when there are fewer units.
    fn from_centred(x: Mat, mean: Vec<f64>) -> Result<Representation> {
        let gram = x.mul_t(&x);
        let (n, p) = (x.rows, x.cols);
        let e = if p < n { sym_eigen(&x.t_mul(&x))? } else { sym_eigen(&gram)? };
        let top = e.values.first().copied().unwrap_or(0.0).max(0.0);
        let rank = e.values.iter().take_while(|&&v| v > RANK_TOL * top && v > 0.0).count();
        let values = e.values[..rank].to_vec();
        let vectors = if p < n {
            let inv: Vec<f64> = values.iter().map(|v| 1.0 / v.sqrt()).collect();
            let v = e.vectors.first_cols(rank);
            x.mul_t(&Mat { rows: rank, cols: p, data: transpose(&v) }).scale_cols(&inv)
        } else {
            e.vectors.first_cols(rank)
        };
        Ok(Representation { x, mean, gram, eigen: SymEigen { values, vectors }, rank })
    }

    /// Samples.
    pub fn n(&self) -> usize {
        self.x.rows
    }

    /// Units.
    pub fn p(&self) -> usize {
        self.x.cols
    }

    /// ||X||_F^2, the total variance (times n).
    pub fn total_variance(&self) -> f64 {
        self.eigen.values.iter().sum()
    }

    /// An orthonormal basis of the span of X's columns in sample space (n x rank): the left
    /// singular vectors with non-zero singular values.
    pub fn basis(&self) -> Mat {
        self.eigen.vectors.first_cols(self.rank)
    }

    /// The number of leading principal directions that explain at least `share` of the
    /// variance (SVCCA's truncation).
    pub fn components_for(&self, share: f64) -> usize {
        let total = self.total_variance();
        let mut acc = 0.0;
        for (k, v) in self.eigen.values[..self.rank].iter().enumerate() {
            acc += v;
            if acc >= share * total {
                return k + 1;
            }
        }
        self.rank
    }

    /// U Sigma scaled to unit Frobenius norm (n x rank): X up to a rotation of its units, so
    /// `a.scores()^T b.scores()` has the singular values of X_a^T X_b / (||X_a|| ||X_b||).
    pub fn scores(&self) -> Mat {
        let total = self.total_variance().sqrt();
        let s: Vec<f64> = self.eigen.values[..self.rank].iter().map(|v| v.sqrt() / total).collect();
        self.basis().scale_cols(&s)
    }

    /// This representation with all but its `k` leading principal components deleted (the
    /// lowest-variance ones go first, as in Ding et al.'s deletion test): X_k = U_k U_k^T X.
    /// Its eigendecomposition is this one's, truncated.
    pub fn keep_components(&self, k: usize) -> Result<Representation> {
        let k = k.min(self.rank);
        let uk = self.eigen.vectors.first_cols(k);
        let x = uk.mul_t(&uk).t_mul(&self.x);
        let values = self.eigen.values[..k].to_vec();
        let gram = uk.clone().scale_cols(&values).mul_t(&uk);
        Ok(Representation { x, mean: self.mean.clone(), gram, eigen: SymEigen { values, vectors: uk }, rank: k })
    }
}

/// The row-major transpose of `m`.
fn transpose(m: &Mat) -> Vec<f64> {
    let mut t = vec![0.0; m.rows * m.cols];
    for i in 0..m.rows {
        for j in 0..m.cols {
            t[j * m.rows + i] = m.data[i * m.cols + j];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::RngStream;

    #[test]
    fn centres_ranks_and_deletes_components() {
        let mut rng = RngStream::new(3);
        let (n, p) = (12, 4);
        // rank 2 plus a constant offset per unit
        let u: Vec<f64> = (0..n * 2).map(|_| rng.normal()).collect();
        let vals: Vec<f32> =
            (0..n * p).map(|i| (u[(i / p) * 2] * (i % p) as f64 + u[(i / p) * 2 + 1] + 5.0) as f32).collect();
        let r = Representation::new(&vals, n, p).unwrap();
        assert_eq!(r.rank, 2);
        for j in 0..p {
            assert!((0..n).map(|i| r.x.at(i, j)).sum::<f64>().abs() < 1e-9, "centred");
        }
        let s = r.scores();
        assert!((s.dot(&s) - 1.0).abs() < 1e-9, "unit Frobenius norm");
        let kept = r.keep_components(1).unwrap();
        assert_eq!(kept.rank, 1);
        assert!((kept.total_variance() - r.eigen.values[0]).abs() < 1e-6 * r.eigen.values[0]);
        assert_eq!(r.components_for(1.0), 2);
        assert!(Representation::new(&[1.0, 2.0], 1, 2).is_err());
        // both routes (fewer units than samples, and more) give orthonormal U with U L U^T = K
        for (n, p) in [(9, 4), (4, 9)] {
            let v: Vec<f32> = (0..n * p).map(|_| rng.normal() as f32).collect();
            let r = Representation::new(&v, n, p).unwrap();
            assert_eq!(r.rank, p.min(n - 1), "centring removes one dimension");
            let u = &r.eigen.vectors;
            let (utu, back) = (u.t_mul(u), u.clone().scale_cols(&r.eigen.values).mul_t(u));
            for i in 0..r.rank {
                for j in 0..r.rank {
                    assert!((utu.at(i, j) - f64::from(u8::from(i == j))).abs() < 1e-9, "{n} x {p}");
                }
            }
            assert!(back.data.iter().zip(&r.gram.data).all(|(a, b)| (a - b).abs() < 1e-8), "{n} x {p}");
        }
        assert!(Representation::new(&[1.0, f32::NAN, 0.0, 1.0], 2, 2).is_err());
    }
}
