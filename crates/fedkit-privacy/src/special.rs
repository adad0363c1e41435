//! Log-space arithmetic and special functions for the accountants.

use std::f64::consts::{LN_2, PI};

/// ln(e^x + e^y).
pub fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// (sign, ln|e^x - e^y|) with sign true when e^x >= e^y.
pub fn log_sub_sign(x: f64, y: f64) -> (bool, f64) {
    if x > y {
        (true, x + (-(y - x).exp()).ln_1p())
    } else if x < y {
        (false, y + (-(x - y).exp()).ln_1p())
    } else {
        (true, f64::NEG_INFINITY)
    }
}

/// ln|binomial(n, k)| for real n and k, through ln|Gamma|.
pub fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// ln(erfc(x)), accurate where erfc(x) underflows (an asymptotic series for large x).
pub fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        return libm::erfc(x).ln();
    }
    // erfc(x) = exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6) + 105/(16x^8) ...)
    let z = 1.0 / (x * x);
    let series = 1.0 - z / 2.0 + 0.75 * z * z - 1.875 * z * z * z + 6.5625 * z * z * z * z;
    -x * x - x.ln() - 0.5 * PI.ln() + series.ln()
}

/// ln(1/2).
pub const LN_HALF: f64 = -LN_2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_space_arithmetic() {
        assert!((log_add(2f64.ln(), 3f64.ln()) - 5f64.ln()).abs() < 1e-15);
        assert_eq!(log_add(f64::NEG_INFINITY, 1.5), 1.5);
        let (s, m) = log_sub_sign(2f64.ln(), 5f64.ln());
        assert!(!s && (m - 3f64.ln()).abs() < 1e-15);
        assert!((log_comb(10.0, 3.0) - 120f64.ln()).abs() < 1e-13);
    }

    #[test]
    fn log_erfc_is_continuous_where_the_series_takes_over() {
        // Both sides of x = 25 agree (erfc(25) is about 8e-274, still a normal double).
        let (direct, series) = (libm::erfc(25.0).ln(), log_erfc(25.0));
        assert!((direct - series).abs() / direct.abs() < 1e-14, "{direct} vs {series}");
        assert!(log_erfc(100.0).is_finite() && log_erfc(100.0) < -10000.0);
        assert!((log_erfc(0.0)).abs() < 1e-16);
    }
}
