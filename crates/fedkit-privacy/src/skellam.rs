//! Distributed DP with Skellam noise: Agarwal, Kairouz, Liu, "The Skellam Mechanism for
//! Differentially Private Federated Learning", NeurIPS 2021.
//!
//! Each client clips its update to L2 norm C, scales it by gamma, rounds it to integers
//! (stochastically, unbiased) and adds Skellam noise Sk(lambda) = Poisson(lambda) -
//! Poisson(lambda) to every coordinate, in the integer ring of secure aggregation. A sum of
//! Skellam variables is Skellam, so m surviving clients leave Sk(m lambda) on the sum: with
//! lambda = mu / m_min the sum carries at least Sk(mu) whenever m_min clients survive, and the
//! server, which sees only the sum, never sees less noise. Integers in, integers out: no
//! floating-point noise leaks through its low bits.
//!
//! Accounting (add/remove one client, Poisson-sampled):
//! - Sensitivity of the integer sum: Delta_2 = gamma C + sqrt(d) (rounding moves each of the d
//!   coordinates by less than 1) and Delta_1 = min(Delta_2^2, sqrt(d) Delta_2).
//! - RDP of Sk(mu) noise (Agarwal et al., Theorem 3.5): eps(alpha) = alpha Delta_2^2 / (4 mu) +
//!   min(((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (16 mu^2), 3 Delta_1 / (4 mu)).
//! - Poisson subsampling at rate q: the general upper bound of Zhu and Wang, "Poisson
//!   Subsampled Rényi Differential Privacy", ICML 2019 (Theorem 6), at integer orders 2..=128
//!   and 256.
//! - Composition over rounds, then the conversion to (epsilon, delta) of the RDP accountant.
//!
//! The Poisson variates come from rand_distr's sampler (PTRS rejection, floating point inside);
//! the outputs are integers.

use rand_distr::{Distribution, Poisson};
use rand_secagg::RngExt;

use crate::special::log_comb;
use crate::{PrivacyError, Result};

/// The integer orders the subsampling bound is evaluated at.
pub fn orders() -> Vec<f64> {
    (2..=128).chain([256]).map(f64::from).collect()
}

/// The sum's sensitivities (L2, L1) for updates clipped to `clip`, scaled by `gamma`, `d`
/// coordinates.
pub fn sensitivity(clip: f64, gamma: f64, d: usize) -> (f64, f64) {
    let sd = (d as f64).sqrt();
    let l2 = gamma * clip + sd;
    (l2, (l2 * l2).min(sd * l2))
}

/// RDP at integer order `alpha` of Sk(`mu`) noise on a sum of sensitivities (`l2`, `l1`).
pub fn rdp(alpha: f64, mu: f64, l2: f64, l1: f64) -> f64 {
    alpha * l2 * l2 / (4.0 * mu)
        + (((2.0 * alpha - 1.0) * l2 * l2 + 6.0 * l1) / (16.0 * mu * mu)).min(3.0 * l1 / (4.0 * mu))
}

/// The Poisson-subsampled RDP at integer `alpha` >= 2 of a mechanism with RDP `eps` (Zhu and
/// Wang 2019, Theorem 6), at rate `q` in (0, 1].
pub fn subsampled(alpha: u32, q: f64, eps: &dyn Fn(f64) -> f64) -> f64 {
    let a = alpha as f64;
    if q >= 1.0 {
        return eps(a);
    }
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let mut terms = vec![(a - 1.0) * l1q + (a * q - q + 1.0).ln()];
    if alpha >= 2 {
        terms.push(log_comb(a, 2.0) + 2.0 * lq + (a - 2.0) * l1q + eps(2.0));
    }
    for j in 3..=alpha {
        let jf = j as f64;
        terms.push(3f64.ln() + log_comb(a, jf) + jf * lq + (a - jf) * l1q + (jf - 1.0) * eps(jf));
    }
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()) / (a - 1.0)
}

/// (epsilon, order) at `delta` after `steps` Poisson-sampled (rate `q`) releases of a sum of
/// sensitivities (`l2`, `l1`) with Sk(`mu`) noise.
pub fn epsilon(q: f64, mu: f64, l2: f64, l1: f64, steps: u64, delta: f64) -> Result<(f64, f64)> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(PrivacyError::new("sampling_rate", format!("must be in (0, 1], got {q}")));
    }
    if !(mu > 0.0 && mu.is_finite()) {
        return Err(PrivacyError::new("mu", format!("must be a finite number > 0, got {mu}")));
    }
    let orders = orders();
    let eps = |a: f64| rdp(a, mu, l2, l1);
    let per_step: Vec<f64> = orders.iter().map(|&a| steps as f64 * subsampled(a as u32, q, &eps)).collect();
    crate::epsilon_from_rdp(&crate::Orders(orders), &per_step, delta)
}

/// Skellam noise and stochastic rounding from one random stream.
pub struct SkellamNoise<R> {
    rng: R,
    poisson: Option<Poisson<f64>>,
}

impl<R: rand_secagg::Rng> SkellamNoise<R> {
    /// Sk(`lambda`) draws (none at lambda = 0).
    pub fn new(lambda: f64, rng: R) -> Result<Self> {
        let poisson = if lambda > 0.0 {
            Some(Poisson::new(lambda).map_err(|e| PrivacyError::new("lambda", format!("{e}")))?)
        } else {
            None
        };
        Ok(SkellamNoise { rng, poisson })
    }
    /// One Skellam variate.
    pub fn draw(&mut self) -> i64 {
        match &self.poisson {
            Some(p) => p.sample(&mut self.rng) as i64 - p.sample(&mut self.rng) as i64,
            None => 0,
        }
    }
    /// x rounded down or up with the probabilities that make it unbiased.
    pub fn round(&mut self, x: f64) -> i64 {
        let f = x.floor();
        f as i64 + i64::from(self.rng.random::<f64>() < x - f)
    }
}

/// Client side: clip `x` to `clip`, scale by `gamma`, round stochastically, add Sk(`lambda`).
pub fn encode<R: rand_secagg::Rng>(x: &[f32], clip: f64, gamma: f64, noise: &mut SkellamNoise<R>) -> Vec<i64> {
    let norm = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let s = if norm > clip { clip / norm } else { 1.0 } * gamma;
    x.iter().map(|&v| noise.round(v as f64 * s) + noise.draw()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_secagg::SeedableRng;
    use rand_secagg::rngs::StdRng;

    #[test]
    fn skellam_noise_has_variance_two_lambda_and_rounding_is_unbiased() {
        let mut n = SkellamNoise::new(50.0, StdRng::seed_from_u64(1)).unwrap();
        let k = 200_000;
        let xs: Vec<f64> = (0..k).map(|_| n.draw() as f64).collect();
        let mean = xs.iter().sum::<f64>() / k as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / k as f64;
        assert!(mean.abs() < 0.1 && (var / 100.0 - 1.0).abs() < 0.02, "mean {mean} var {var}");
        let r: f64 = (0..k).map(|_| n.round(0.3) as f64).sum::<f64>() / k as f64;
        assert!((r - 0.3).abs() < 0.005, "{r}");
    }

    #[test]
    fn the_leading_term_is_the_gaussian_of_the_same_variance() {
        // Sk(mu) has variance 2 mu: with a large mu the RDP approaches the Gaussian's
        // alpha Delta^2 / (2 sigma^2) at sigma^2 = 2 mu.
        let (mu, l2) = (1e8, 1e4);
        for a in [2.0, 8.0, 32.0] {
            let gauss = a * l2 * l2 / (2.0 * 2.0 * mu);
            let sk = rdp(a, mu, l2, l2 * l2);
            assert!(sk >= gauss && sk / gauss - 1.0 < 1e-3, "{a}: {sk} vs {gauss}");
        }
    }

    #[test]
    fn subsampling_amplifies_and_q_one_is_the_mechanism() {
        let eps = |a: f64| rdp(a, 1e8, 1e4, 1e8);
        for a in [2u32, 5, 20] {
            assert_eq!(subsampled(a, 1.0, &eps), eps(a as f64));
            assert!(subsampled(a, 0.01, &eps) < eps(a as f64) / 10.0);
        }
        // Approaches the Gaussian's subsampled RDP for large mu: same scale as the RDP
        // accountant's (sigma^2 = 2 mu / Delta^2 = 2), within the upper bound's slack.
        let (e, _) = epsilon(0.01, 1e8, 1e4, 1e8, 1000, 1e-5).unwrap();
        let m = crate::Mechanism { q: 0.01, sigma: 2f64.sqrt(), steps: 1000, sampling: crate::Sampling::Poisson };
        let g = crate::epsilon(&m, 1e-5, &crate::Orders::dp_accounting(), crate::Series::Magnitudes).unwrap().0;
        assert!(e >= g && e < 2.0 * g, "skellam {e} vs gaussian {g}");
    }
}
