//! The orthogonal Procrustes distance between representations, the "classical baseline" Ding,
//! Denain and Steinhardt ("Grounding Representation Similarity with Statistical Testing",
//! NeurIPS 2021) find to be the most reliable: with X and Y centred per unit and scaled to unit
//! Frobenius norm,
//!
//!   d_Proc(X, Y)^2 = min over orthogonal R of ||X R - Y||_F^2 = 2 - 2 ||X^T Y||_*,
//!
//! (|| ||_* the nuclear norm, the sum of singular values; padding the narrower one with zero
//! units), the squared distance as their `scoring.py` reports it, in [0, 2]. The similarity
//! ||X^T Y||_* in [0, 1] is what the heat maps show. Computed in sample space: the singular
//! values of X^T Y are those of (U_X Sigma_X)^T (U_Y Sigma_Y).
//!
//! ```text
//! fedkit analyze cka --run runs/seed1 --run runs/seed2 --metric procrustes --out proc
//! ```

use fedkit_core::Result;

use super::linalg::sym_eigen;
use super::representation::Representation;

/// ||X^T Y||_* for the unit-norm centred X, Y: 1 for representations equal up to rotation and
/// scale, 0 for ones in orthogonal subspaces.
pub fn procrustes_similarity(a: &Representation, b: &Representation) -> Result<f64> {
    let (sa, sb) = (a.scores(), b.scores());
    if sa.cols == 0 || sb.cols == 0 {
        return Ok(0.0);
    }
    let m = sa.t_mul(&sb);
    let gram = if m.rows <= m.cols { m.mul_t(&m) } else { m.t_mul(&m) };
    let nuclear: f64 = sym_eigen(&gram)?.values.iter().map(|v| v.max(0.0).sqrt()).sum();
    Ok(nuclear.min(1.0))
}

/// Ding et al.'s squared Procrustes distance 2 - 2 ||X^T Y||_*.
pub fn procrustes_distance(a: &Representation, b: &Representation) -> Result<f64> {
    Ok(2.0 - 2.0 * procrustes_similarity(a, b)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::RngStream;

    fn rep(v: &[f64], n: usize, p: usize) -> Representation {
        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Representation::new(&f, n, p).unwrap()
    }

    #[test]
    fn distance_is_zero_up_to_rotation_and_matches_the_optimal_rotation() {
        let mut rng = RngStream::new(7);
        let (n, p) = (10, 2);
        let x: Vec<f64> = (0..n * p).map(|_| rng.normal()).collect();
        // a 2-D rotation by 0.7 rad, scaled by 3
        let (c, s) = (0.7f64.cos(), 0.7f64.sin());
        let y: Vec<f64> =
            x.chunks(2).flat_map(|r| [3.0 * (c * r[0] - s * r[1]), 3.0 * (s * r[0] + c * r[1])]).collect();
        let (a, b) = (rep(&x, n, p), rep(&y, n, p));
        assert!(procrustes_distance(&a, &b).unwrap().abs() < 1e-9);
        assert!(procrustes_distance(&a, &a).unwrap().abs() < 1e-9);
        // a reflection of one unit is also orthogonal; swapping in an unrelated unit is not
        let z: Vec<f64> = x.chunks(2).flat_map(|r| [r[0], -r[1]]).collect();
        assert!(procrustes_distance(&a, &rep(&z, n, p)).unwrap().abs() < 1e-9);
        // against a 1-unit Y = x_1: by hand, ||X^T y||_* = ||X^T y|| / (||X|| ||y||)
        let y1: Vec<f64> = x.chunks(2).map(|r| r[0]).collect();
        let (ax, ay) = (&a.x, &rep(&y1, n, 1).x);
        let xty = ax.t_mul(ay);
        let want = xty.dot(&xty).sqrt() / (ax.dot(ax) * ay.dot(ay)).sqrt();
        let got = procrustes_similarity(&a, &rep(&y1, n, 1)).unwrap();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
}
