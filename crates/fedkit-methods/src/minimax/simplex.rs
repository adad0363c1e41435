//! Euclidean projection onto the probability simplex {y : y_i >= 0, sum_i y_i = 1}, by the
//! sort-based algorithm of Duchi, Shalev-Shwartz, Singer and Chandra, "Efficient Projections onto
//! the l1-Ball for Learning in High Dimensions" (ICML 2008), as written out by Wang and
//! Carreira-Perpinan, "Projection onto the probability simplex: An efficient algorithm with a
//! simple proof, and an application" (arXiv:1309.1541, 2013): sort v decreasingly into u, take
//! rho = max{j : u_j + (1 - sum_{i<=j} u_i) / j > 0} and theta = (sum_{i<=rho} u_i - 1) / rho,
//! and return max(v - theta, 0). O(n log n).

use fedkit_core::{Error, Result};

/// The point of the probability simplex closest (in Euclidean distance) to `v`. `v` must be
/// non-empty and finite.
pub fn project_simplex(v: &[f64]) -> Result<Vec<f64>> {
    if v.is_empty() {
        return Err(Error::Method("cannot project onto the simplex of dimension 0".into()));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::Method(format!("cannot project a non-finite vector onto the simplex: {v:?}")));
    }
    let mut u = v.to_vec();
    u.sort_by(|a, b| b.total_cmp(a));
    let (mut prefix, mut theta) = (0.0, 0.0);
    for (j, &uj) in u.iter().enumerate() {
        prefix += uj;
        let t = (prefix - 1.0) / (j + 1) as f64;
        // j = 0 always qualifies (u_1 - (u_1 - 1) = 1 > 0); the last qualifying j is rho.
        if uj - t > 0.0 {
            theta = t;
        }
    }
    Ok(v.iter().map(|x| (x - theta).max(0.0)).collect())
}

/// True when `y` lies in the probability simplex within `tol` (entries >= -tol, sum within tol
/// of 1).
pub fn in_simplex(y: &[f64], tol: f64) -> bool {
    !y.is_empty() && y.iter().all(|&x| x >= -tol) && (y.iter().sum::<f64>() - 1.0).abs() <= tol
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::RngStream;

    fn dist2(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    }

    /// The exact projection by enumeration: for every support S, the projection onto the affine
    /// hull of that face (y_S = v_S - (sum v_S - 1) / |S|, y elsewhere 0); the closest of the
    /// feasible ones is the projection (it lies in the relative interior of some face).
    fn brute_force(v: &[f64]) -> Vec<f64> {
        let n = v.len();
        let mut best: Option<(f64, Vec<f64>)> = None;
        for mask in 1u32..(1 << n) {
            let s: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
            let shift = (s.iter().map(|&i| v[i]).sum::<f64>() - 1.0) / s.len() as f64;
            let mut y = vec![0.0; n];
            s.iter().for_each(|&i| y[i] = v[i] - shift);
            if y.iter().all(|&x| x >= 0.0) {
                let d = dist2(&y, v);
                if best.as_ref().is_none_or(|b| d < b.0) {
                    best = Some((d, y));
                }
            }
        }
        best.expect("some face is feasible").1
    }

    #[test]
    fn projection_is_in_the_simplex_and_is_the_closest_point() {
        let mut rng = RngStream::new(7);
        for case in 0..300 {
            let n = 1 + case % 6;
            let scale = [0.1, 1.0, 10.0][case % 3];
            let v: Vec<f64> = (0..n).map(|_| rng.gaussian(0.0, scale)).collect();
            let y = project_simplex(&v).unwrap();
            assert!(in_simplex(&y, 1e-12), "{v:?} -> {y:?}");
            let want = brute_force(&v);
            assert!(dist2(&y, &want) < 1e-20, "{v:?}: got {y:?}, brute force {want:?}");
            // No point of a random sample of the simplex is closer.
            for _ in 0..20 {
                let z = rng.dirichlet(0.5, n);
                assert!(dist2(&y, &v) <= dist2(&z, &v) + 1e-12);
            }
        }
    }

    #[test]
    fn known_projections() {
        assert_eq!(project_simplex(&[0.2, 0.3, 0.5]).unwrap(), vec![0.2, 0.3, 0.5]);
        assert_eq!(project_simplex(&[5.0, 0.0]).unwrap(), vec![1.0, 0.0]);
        assert_eq!(project_simplex(&[1.0, 1.0]).unwrap(), vec![0.5, 0.5]);
        // Adding a constant to every entry does not move the projection.
        let a = project_simplex(&[0.3, -0.2, 0.9]).unwrap();
        let b = project_simplex(&[3.3, 2.8, 3.9]).unwrap();
        assert!(dist2(&a, &b) < 1e-24, "{a:?} vs {b:?}");
        assert!(project_simplex(&[]).is_err());
        assert!(project_simplex(&[f64::NAN, 1.0]).is_err());
    }
}
