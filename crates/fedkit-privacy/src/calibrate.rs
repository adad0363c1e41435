//! Noise calibration: the smallest noise multiplier sigma whose `steps` subsampled Gaussian
//! steps stay within a target epsilon at delta. Epsilon falls as sigma grows, so the answer is
//! bracketed by doubling and then bisected to a relative width of 1e-9; the upper end of the
//! bracket is returned, so its epsilon never exceeds the target.

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
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return Err(PrivacyError::new("epsilon", format!("must be a finite number > 0, got {target_epsilon}")));
    }
    let eps = |sigma: f64| epsilon(&Mechanism { sigma, ..*mechanism }, delta, orders, series).map(|e| e.0);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while eps(hi)? > target_epsilon {
        lo = hi;
        hi *= 2.0;
        if hi > MAX_SIGMA {
            return Err(PrivacyError::new(
                "epsilon",
                format!("epsilon {target_epsilon} at delta {delta} needs a noise multiplier above {MAX_SIGMA}"),
            ));
        }
    }
    while hi - lo > 1e-9 * hi {
        let mid = 0.5 * (lo + hi);
        if eps(mid)? > target_epsilon {
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
