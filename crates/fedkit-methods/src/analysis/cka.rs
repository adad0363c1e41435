//! Centered kernel alignment (Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network
//! Representations Revisited", ICML 2019): the similarity of two representations X (n x p1) and
//! Y (n x p2) of the same n samples as the alignment of their centred kernel matrices,
//!
//!   CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),  HSIC(K, L) = tr(K H L H) / (n - 1)^2,
//!
//! with H = I - 11^T / n the centring matrix; the biased HSIC estimator, the paper's and its
//! demo's default. Linear CKA takes K = X X^T (then CKA = ||Y^T X||_F^2 / (||X^T X||_F
//! ||Y^T Y||_F)); RBF CKA takes K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)) with sigma a fraction
//! (`sigma`, 0.5 in the demo) of the median distance: sigma^2 = fraction^2 x the median of the
//! n^2 squared distances (diagonal included, as the demo's `gram_rbf` computes it, with numpy's
//! median; the median of the non-zero ones when that is 0).
//!
//! CKA is invariant to orthogonal transforms and isotropic scaling of either representation,
//! not to arbitrary invertible linear maps, which is what lets it find corresponding layers of
//! networks trained from different seeds where CCA cannot (the paper's Table 2).
//!
//! ```text
//! fedkit analyze cka --run runs/seed1 --run runs/seed2 --metric cka,rbf_cka --out cka
//! ```

use super::linalg::Mat;
use super::representation::Representation;

/// Linear CKA of two representations of the same samples (1 for identical ones; 0 when
/// either is constant).
pub fn linear_cka(a: &Representation, b: &Representation) -> f64 {
    alignment(&a.gram, &b.gram)
}

/// RBF CKA with bandwidth `sigma` times the median distance (per representation).
pub fn rbf_cka(a: &Representation, b: &Representation, sigma: f64) -> f64 {
    alignment(&centred_rbf(a, sigma), &centred_rbf(b, sigma))
}

/// <K, L> / (||K|| ||L||) for centred K and L; 0 when either is zero.
fn alignment(k: &Mat, l: &Mat) -> f64 {
    let (kl, kk, ll) = (k.dot(l), k.dot(k), l.dot(l));
    if kk <= 0.0 || ll <= 0.0 { 0.0 } else { (kl / (kk * ll).sqrt()).clamp(0.0, 1.0) }
}

/// H K H for the RBF kernel of `r`'s samples.
fn centred_rbf(r: &Representation, sigma: f64) -> Mat {
    let n = r.n();
    let g = &r.gram;
    let mut d2: Vec<f64> =
        (0..n * n).map(|i| (g.at(i / n, i / n) + g.at(i % n, i % n) - 2.0 * g.data[i]).max(0.0)).collect();
    // a median of 0 (most samples at one point, e.g. a mostly dead ReLU layer): the median of
    // the non-zero distances instead, so the kernel still separates the rest
    let mut median = median(d2.clone());
    if median == 0.0 {
        let nonzero: Vec<f64> = d2.iter().copied().filter(|&v| v > 0.0).collect();
        median = if nonzero.is_empty() { 0.0 } else { self::median(nonzero) };
    }
    let scale = 2.0 * sigma * sigma * median;
    for v in &mut d2 {
        *v = if scale > 0.0 { (-*v / scale).exp() } else { 1.0 };
    }
    let mut k = Mat { rows: n, cols: n, data: d2 };
    double_centre(&mut k);
    k
}

/// The median (the mean of the two middle values for an even count, as numpy's).
fn median(mut v: Vec<f64>) -> f64 {
    let odd = v.len() % 2 == 1;
    let mid = v.len() / 2;
    let (lower, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *m;
    if odd { upper } else { (lower.iter().copied().fold(f64::MIN, f64::max) + upper) / 2.0 }
}

/// K <- H K H.
fn double_centre(k: &mut Mat) {
    let n = k.rows;
    let row: Vec<f64> = (0..n).map(|i| k.data[i * n..(i + 1) * n].iter().sum::<f64>() / n as f64).collect();
    let all = row.iter().sum::<f64>() / n as f64;
    for i in 0..n {
        for j in 0..n {
            // K is symmetric: column means equal row means
            k.data[i * n + j] += all - row[i] - row[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::RngStream;

    fn rep(v: &[f64], n: usize, p: usize) -> Representation {
        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Representation::new(&f, n, p).unwrap()
    }

    fn random(n: usize, p: usize, rng: &mut RngStream) -> Vec<f64> {
        (0..n * p).map(|_| rng.normal()).collect()
    }

    /// `x` times a random orthogonal matrix (Gram-Schmidt of a Gaussian one), times `scale`.
    fn rotated(x: &[f64], n: usize, p: usize, scale: f64, rng: &mut RngStream) -> Vec<f64> {
        let mut q: Vec<Vec<f64>> = Vec::new();
        while q.len() < p {
            let mut v: Vec<f64> = (0..p).map(|_| rng.normal()).collect();
            for u in &q {
                let d: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            q.push(v.into_iter().map(|a| a / norm).collect());
        }
        (0..n * p).map(|i| scale * (0..p).map(|k| x[(i / p) * p + k] * q[k][i % p]).sum::<f64>()).collect()
    }

    #[test]
    fn cka_is_one_on_itself_and_invariant_to_rotation_and_scale() {
        let mut rng = RngStream::new(4);
        let (n, p) = (30, 6);
        let x = random(n, p, &mut rng);
        let a = rep(&x, n, p);
        assert!((linear_cka(&a, &a) - 1.0).abs() < 1e-9);
        assert!((rbf_cka(&a, &a, 0.5) - 1.0).abs() < 1e-9);
        let b = rep(&rotated(&x, n, p, 3.7, &mut rng), n, p);
        assert!((linear_cka(&a, &b) - 1.0).abs() < 1e-6, "{}", linear_cka(&a, &b));
        assert!((rbf_cka(&a, &b, 0.5) - 1.0).abs() < 1e-5, "{}", rbf_cka(&a, &b, 0.5));
        // unrelated representations are far from 1, and an anisotropic rescaling changes CKA
        let c = rep(&random(n, p, &mut rng), n, p);
        assert!(linear_cka(&a, &c) < 0.6, "{}", linear_cka(&a, &c));
        let stretched: Vec<f64> = x.iter().enumerate().map(|(i, v)| if i % p == 0 { 10.0 * v } else { *v }).collect();
        assert!(linear_cka(&a, &rep(&stretched, n, p)) < 0.9);
    }

    #[test]
    fn rbf_cka_survives_a_zero_median_distance() {
        // 20 samples, 15 of them at one point: the median squared distance is 0
        let v: Vec<f64> = (0..20).map(|i| if i < 15 { 0.0 } else { i as f64 }).collect();
        let a = rep(&v, 20, 1);
        assert!((rbf_cka(&a, &a, 0.5) - 1.0).abs() < 1e-9, "{}", rbf_cka(&a, &a, 0.5));
    }

    #[test]
    fn linear_cka_matches_the_feature_space_formula() {
        let mut rng = RngStream::new(5);
        let (n, p1, p2) = (20, 3, 5);
        let (a, b) = (rep(&random(n, p1, &mut rng), n, p1), rep(&random(n, p2, &mut rng), n, p2));
        let (xy, xx, yy) = (b.x.t_mul(&a.x), a.x.t_mul(&a.x), b.x.t_mul(&b.x));
        let want = xy.dot(&xy) / (xx.dot(&xx) * yy.dot(&yy)).sqrt();
        assert!((linear_cka(&a, &b) - want).abs() < 1e-12);
    }
}
