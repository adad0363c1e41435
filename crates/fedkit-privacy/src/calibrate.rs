//! Noise calibration: the smallest noise multiplier sigma whose `steps` subsampled Gaussian
//! steps stay within a target epsilon at delta. Epsilon falls as sigma grows, so the answer is
//! bracketed by doubling and then bisected to a relative width of 1e-9 (RDP) or 1e-6 (PLD,
//! whose evaluations cost more); the upper end of the bracket is returned, so its epsilon never
//! exceeds the target.

use crate::rdp::{Mechanism, Orders, Series, epsilon};
use crate::{PrivacyError, Result};

/// Largest noise multiplier searched.
const MAX_SIGMA: f64 = 1e6;

/// The smallest sigma (to a relative 1e-9) with epsilon(sigma) <= `target_epsilon`.
/// `mechanism.sigma` is ignored.
pub fn noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    mechanism: &Mechanism,
    orders: &Orders,
    series: Series,
) -> Result<f64> {
    let eps = |sigma: f64| epsilon(&Mechanism { sigma, ..*mechanism }, delta, orders, series).map(|e| e.0);
    smallest_sigma(target_epsilon, delta, 1.0, 1e-9, &eps)
}

/// The same for the PLD accountant (Poisson sampling), to a relative 1e-6: the bracket starts
/// at the RDP answer, which PLD's tighter bound meets.
pub fn pld_noise_multiplier(target_epsilon: f64, delta: f64, q: f64, steps: u64) -> Result<f64> {
    let m = Mechanism { q, sigma: 1.0, steps, sampling: crate::rdp::Sampling::Poisson };
    let start = noise_multiplier(target_epsilon, delta, &m, &Orders::dp_accounting(), Series::Magnitudes)?;
    let eps = |sigma: f64| crate::pld::epsilon(q, sigma, steps, delta);
    smallest_sigma(target_epsilon, delta, start, 1e-6, &eps)
}

/// Bracket by doubling from `start` (halving first while it meets the target), then bisect to
/// a relative width `tol`; the upper end is returned.
fn smallest_sigma(target: f64, delta: f64, start: f64, tol: f64, eps: &dyn Fn(f64) -> Result<f64>) -> Result<f64> {
    if !(target > 0.0 && target.is_finite()) {
        return Err(PrivacyError::new("epsilon", format!("must be a finite number > 0, got {target}")));
    }
    let (mut lo, mut hi) = (0.0f64, start);
    if eps(hi)? <= target {
        lo = hi / 2.0;
        // A sigma too small for the accountant (PLD's grid) is above the target.
        while lo > 1e-6 && eps(lo).is_ok_and(|e| e <= target) {
            hi = lo;
            lo /= 2.0;
        }
    }
    while eps(hi)? > target {
        lo = hi;
        hi *= 2.0;
        if hi > MAX_SIGMA {
            return Err(PrivacyError::new(
                "epsilon",
                format!("epsilon {target} at delta {delta} needs a noise multiplier above {MAX_SIGMA}"),
            ));
        }
    }
    while hi - lo > tol * hi {
        let mid = 0.5 * (lo + hi);
        if eps(mid).map_or(true, |e| e > target) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdp::Sampling;

    #[test]
    fn the_calibrated_noise_meets_the_target_and_a_little_less_does_not() {
        let o = Orders::dp_accounting();
        for (target, q, steps) in [(1.0, 0.01, 1000u64), (8.0, 0.1, 100), (0.5, 0.001, 100_000)] {
            let m = Mechanism { q, sigma: 0.0, steps, sampling: Sampling::Poisson };
            let s = noise_multiplier(target, 1e-5, &m, &o, Series::Magnitudes).unwrap();
            let at = |sigma| epsilon(&Mechanism { sigma, ..m }, 1e-5, &o, Series::Magnitudes).unwrap().0;
            assert!(at(s) <= target, "sigma {s}: {} > {target}", at(s));
            assert!(at(s * (1.0 - 1e-6)) > target, "sigma {s} is not the smallest");
        }
        let m = Mechanism { q: 0.1, sigma: 0.0, steps: 10, sampling: Sampling::Poisson };
        assert_eq!(noise_multiplier(0.0, 1e-5, &m, &o, Series::Magnitudes).unwrap_err().field, "epsilon");
    }
}
