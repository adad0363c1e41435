//! Canonical correlation analysis between representations, and its two refinements:
//!
//! - **CCA** (Hotelling 1936): the canonical correlations rho_1 >= ... >= rho_k of X (n x p1)
//!   and Y (n x p2) are the cosines of the principal angles between their column spaces in
//!   sample space, the singular values of Q_X^T Q_Y for orthonormal bases Q_X, Q_Y;
//!   k = min(rank X, rank Y). Reported as the mean rho-bar = sum rho_i / k (Kornblith et al.'s
//!   "CCA (rho-bar)") and the mean squared correlation R^2_CCA = sum rho_i^2 / k. The bases are
//!   pseudo-inverse ones (directions under the rank tolerance dropped, no ridge term), as Ding et
//!   al.'s `cca_decomp` computes them.
//! - **SVCCA** (Raghu, Gilmer, Yosinski, Sohl-Dickstein, NeurIPS 2017): CCA after keeping each
//!   representation's leading principal directions that explain `share` (99%) of its variance.
//! - **PWCCA** (Morcos, Raghu, Bengio, NeurIPS 2018): the correlations weighted by how much of
//!   X's units each canonical variate accounts for: h_i = Q_X a_i (a_i the left singular vectors
//!   of Q_X^T Q_Y), alpha_i = sum_j |<h_i, x_j>| over X's centred units x_j, normalised to sum
//!   1; PWCCA = sum alpha_i rho_i. Not symmetric: the weights come from the first argument
//!   (as in Ding et al.'s `scoring.py`; Morcos et al.'s `compute_pwcca` takes the side with
//!   fewer units).
//!
//! Every one is invariant to invertible linear transforms of either representation, so a
//! representation wider than the probe set has all correlations 1 with anything of full rank:
//! the failure Kornblith et al. describe. Each is 0 when either representation is constant.
//!
//! ```text
//! fedkit analyze cka --run runs/seed1 --run runs/seed2 --metric cca,svcca,pwcca --out cca
//! ```

use fedkit_core::Result;

use super::linalg::{Mat, sym_eigen};
use super::representation::Representation;

/// The canonical correlations of `a` and `b` (descending) and the matching left singular
/// vectors of Q_a^T Q_b (rank a x k), from the bases `qa`, `qb`.
fn canonical(qa: &Mat, qb: &Mat) -> Result<(Vec<f64>, Mat)> {
    let k = qa.cols.min(qb.cols);
    if k == 0 {
        return Ok((Vec::new(), Mat::zeros(qa.cols, 0)));
    }
    let m = qa.t_mul(qb);
    if qa.cols <= qb.cols {
        let e = sym_eigen(&m.mul_t(&m))?;
        let rho = e.values[..k].iter().map(|v| v.max(0.0).sqrt().min(1.0)).collect();
        return Ok((rho, e.vectors.first_cols(k)));
    }
    // the smaller side: M^T M = B S^2 B^T, then the left vectors a_i = M b_i / s_i
    let e = sym_eigen(&m.t_mul(&m))?;
    let s: Vec<f64> = e.values[..k].iter().map(|v| v.max(0.0).sqrt()).collect();
    let inv: Vec<f64> = s.iter().map(|&v| if v > 0.0 { 1.0 / v } else { 0.0 }).collect();
    let left = m.mul_t(&Mat { rows: k, cols: m.cols, data: transposed(&e.vectors.first_cols(k)) }).scale_cols(&inv);
    Ok((s.into_iter().map(|v| v.min(1.0)).collect(), left))
}

/// The row-major data of `m^T`.
fn transposed(m: &Mat) -> Vec<f64> {
    (0..m.cols).flat_map(|j| (0..m.rows).map(move |i| m.data[i * m.cols + j])).collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// The canonical correlations of `a` and `b`, descending.
pub fn correlations(a: &Representation, b: &Representation) -> Result<Vec<f64>> {
    Ok(canonical(&a.basis(), &b.basis())?.0)
}

/// CCA's mean correlation rho-bar.
pub fn mean_cca(a: &Representation, b: &Representation) -> Result<f64> {
    Ok(mean(&correlations(a, b)?))
}

/// CCA's mean squared correlation R^2_CCA.
pub fn mean_squared_cca(a: &Representation, b: &Representation) -> Result<f64> {
    Ok(mean(&correlations(a, b)?.iter().map(|r| r * r).collect::<Vec<_>>()))
}

/// SVCCA: the mean canonical correlation of the leading principal directions of each that
/// explain `share` of its variance.
pub fn svcca(a: &Representation, b: &Representation, share: f64) -> Result<f64> {
    let qa = a.eigen.vectors.first_cols(a.components_for(share));
    let qb = b.eigen.vectors.first_cols(b.components_for(share));
    Ok(mean(&canonical(&qa, &qb)?.0))
}

/// PWCCA of `a` against `b`, the weights from `a`'s units.
pub fn pwcca(a: &Representation, b: &Representation) -> Result<f64> {
    let qa = a.basis();
    let (rho, vecs) = canonical(&qa, &b.basis())?;
    if rho.is_empty() {
        return Ok(0.0);
    }
    // <h_i, x_j> = a_i^T (Q_a^T X)_j
    let w = vecs.t_mul(&qa.t_mul(&a.x));
    let alpha: Vec<f64> = w.data.chunks_exact(w.cols).map(|row| row.iter().map(|v| v.abs()).sum()).collect();
    let total: f64 = alpha.iter().sum();
    Ok(if total > 0.0 { alpha.iter().zip(&rho).map(|(a, r)| a * r).sum::<f64>() / total } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(v: &[f64], n: usize, p: usize) -> Representation {
        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Representation::new(&f, n, p).unwrap()
    }

    /// Two units over four samples, centred: x1 = (1, -1, 1, -1), x2 = (1, 1, -1, -1);
    /// Y's single unit y = x1 + 0.5 x3 with x3 = (1, -1, -1, 1) orthogonal to both.
    fn small() -> (Representation, Representation) {
        let x = [1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0];
        let y = [1.5, -1.5, 0.5, -0.5];
        (rep(&x, 4, 2), rep(&y, 4, 1))
    }

    #[test]
    fn cca_of_a_small_case_by_hand() {
        let (x, y) = small();
        // y / ||y|| has cosine 2 / sqrt(5) with the plane of x1, x2 (its part in the plane is
        // x1, of norm 2; ||y|| = sqrt(4 + 1))
        let rho = correlations(&x, &y).unwrap();
        let want = 2.0 / 5f64.sqrt();
        assert_eq!(rho.len(), 1);
        assert!((rho[0] - want).abs() < 1e-12, "{rho:?}");
        assert!((mean_squared_cca(&x, &y).unwrap() - 0.8).abs() < 1e-12);
        // PWCCA with one canonical variate is its correlation whatever the weights
        assert!((pwcca(&x, &y).unwrap() - want).abs() < 1e-12);
        // SVCCA at 99% keeps both of x's directions (equal variance) and y's one
        assert!((svcca(&x, &y, 0.99).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn pwcca_weights_the_variate_that_carries_the_units() {
        // X's units: u (large, many copies) and v (small, one unit); Y sees u exactly and v
        // with noise. The correlations are (1, r); PWCCA leans to 1, the mean does not.
        let n = 8;
        let u = [1.0, -1.0, 2.0, -2.0, 1.0, -1.0, 0.5, -0.5];
        let v = [1.0, 1.0, -1.0, -1.0, 0.0, 0.0, 1.0, -1.0];
        let noise = [0.0, 0.0, 0.0, 0.0, 1.0, -1.0, -1.0, 1.0];
        let x: Vec<f64> = (0..n).flat_map(|i| [10.0 * u[i], 10.0 * u[i], 10.0 * u[i], 0.1 * v[i]]).collect();
        let y: Vec<f64> = (0..n).flat_map(|i| [u[i], v[i] + noise[i]]).collect();
        let (a, b) = (rep(&x, n, 4), rep(&y, n, 2));
        let rho = correlations(&a, &b).unwrap();
        assert!((rho[0] - 1.0).abs() < 1e-9 && rho[1] < 0.95, "{rho:?}");
        let (m, pw) = (mean_cca(&a, &b).unwrap(), pwcca(&a, &b).unwrap());
        assert!(pw > m && pw > 0.99, "pwcca {pw} mean {m}");
    }

    #[test]
    fn both_sides_give_the_same_correlations() {
        // ranks 3 and 2: one call eigendecomposes M M^T, the other M^T M
        let mut rng = fedkit_core::RngStream::new(10);
        let n = 12;
        let (x, y): (Vec<f64>, Vec<f64>) =
            ((0..n * 3).map(|_| rng.normal()).collect(), (0..n * 2).map(|_| rng.normal()).collect());
        let (a, b) = (rep(&x, n, 3), rep(&y, n, 2));
        let (ab, ba) = (correlations(&a, &b).unwrap(), correlations(&b, &a).unwrap());
        assert_eq!(ab.len(), 2);
        assert!(ab.iter().zip(&ba).all(|(u, v)| (u - v).abs() < 1e-9), "{ab:?} {ba:?}");
        // PWCCA's weights need left vectors of unit norm on the wider side too
        let (qa, qb) = (a.basis(), b.basis());
        let (_, left) = canonical(&qa, &qb).unwrap();
        let gram = left.t_mul(&left);
        assert!((gram.at(0, 0) - 1.0).abs() < 1e-9 && gram.at(0, 1).abs() < 1e-9);
    }

    #[test]
    fn cca_is_blind_when_units_outnumber_samples() {
        // two unrelated full-rank representations of 5 samples with 8 units each: every
        // canonical correlation is 1
        let mut rng = fedkit_core::RngStream::new(6);
        let (n, p) = (5, 8);
        let mut random = || (0..n * p).map(|_| rng.normal()).collect::<Vec<f64>>();
        let (a, b) = (rep(&random(), n, p), rep(&random(), n, p));
        assert!((mean_cca(&a, &b).unwrap() - 1.0).abs() < 1e-9);
        assert!(super::super::cka::linear_cka(&a, &b) < 0.99);
    }
}
