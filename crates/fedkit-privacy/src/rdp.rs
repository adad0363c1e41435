//! Rényi differential privacy of the subsampled Gaussian mechanism, its composition and its
//! conversion to (epsilon, delta).
//!
//! - **Poisson subsampling** (each record, or each client, is in a step independently with
//!   probability q; add/remove neighbours): the RDP at order alpha is ln(A_alpha) / (alpha - 1),
//!   with A_alpha computed exactly in log space. Integer orders use the binomial expansion; a
//!   fractional order uses the two erfc series split at z0 = sigma^2 ln(1/q - 1) + 1/2. This is
//!   Mironov, Talwar, Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism",
//!   arXiv 1908.10530, Section 3.3, as dp-accounting computes it (`_compute_log_a_int` and
//!   `_compute_log_a_frac`). A fractional order whose series has not converged after 1000
//!   terms is excluded (infinite RDP), as there.
//!   That series adds the terms' magnitudes ([`Series::Magnitudes`], dp-accounting since 0.4),
//!   an upper bound. The expansion itself has signed binomial coefficients, binomial(alpha, i) < 0
//!   for some i > alpha ([`Series::Signed`]): the exact value, as TF-Privacy and Opacus compute
//!   it, and what their published epsilons come from.
//! - **Sampling without replacement** (a fixed-size subset of m = q n each step; replace-one
//!   neighbours, n public): the bound of Wang, Balle, Kasiviswanathan, "Subsampled Rényi
//!   Differential Privacy and Analytical Moments Accountant", AISTATS 2019, Theorem 27. Its
//!   forward differences are taken in log space for orders up to 256, beyond that the simpler
//!   bound; fractional orders interpolate the CGF (their Corollary 10). Also as dp-accounting
//!   does.
//! - **Composition** adds RDP order by order; T identical steps multiply it by T.
//! - **Conversion** (Canonne, Kamath, Steinke, arXiv 2004.00010, Proposition 12): epsilon =
//!   min over orders of rdp + ln(1 - 1/alpha) - ln(delta alpha) / (alpha - 1), for alpha > 1.01.
//!   An order whose RDP is so small that delta^2 >= 1 - e^-rdp gives epsilon 0.

use crate::special::{LN_HALF, log_add, log_comb, log_erfc, log_sub_sign};
use crate::{PrivacyError, Result};

/// How the participants of a step are drawn, which fixes the neighbouring relation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Each independently with probability q: add/remove-one neighbours.
    Poisson,
    /// A uniform subset of fixed size q n: replace-one neighbours (n public).
    WithoutReplacement,
}

impl Sampling {
    /// The neighbouring relation the guarantee is stated for.
    pub fn neighbours(self) -> &'static str {
        match self {
            Sampling::Poisson => "add/remove one",
            Sampling::WithoutReplacement => "replace one",
        }
    }
}

/// How the fractional-order series of the Poisson case sums its terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// The terms' magnitudes (an upper bound): dp-accounting.
    Magnitudes,
    /// Signed binomial coefficients (exact): TF-Privacy, Opacus.
    Signed,
}

/// A grid of RDP orders. Each library has its own, and a published epsilon is reproduced on its
/// library's grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Orders(pub Vec<f64>);

impl Orders {
    /// dp-accounting's `DEFAULT_RDP_ORDERS`: 1.1, 1.2, ..., 10.9, 11, ..., 63, 128, 256, 512, 1024.
    pub fn dp_accounting() -> Self {
        let mut o: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
        o.extend((11..64).map(f64::from));
        o.extend([128.0, 256.0, 512.0, 1024.0]);
        Orders(o)
    }
    /// TF-Privacy's `compute_dp_sgd_privacy` and Opacus's `DEFAULT_ALPHAS`: 1.1, ..., 10.9, 12, ..., 63.
    pub fn tf_privacy() -> Self {
        let mut o: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
        o.extend((12..64).map(f64::from));
        Orders(o)
    }
    /// A grid by name (`dp_accounting`, `tf_privacy`, `opacus`) or a comma-separated list of
    /// orders, each > 1.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "dp_accounting" => return Ok(Self::dp_accounting()),
            "tf_privacy" | "opacus" => return Ok(Self::tf_privacy()),
            _ => {}
        }
        let orders = s
            .split(',')
            .map(|t| t.trim().parse::<f64>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| {
                PrivacyError::new(
                    "orders",
                    format!("`{s}`: expected dp_accounting, tf_privacy, opacus or a comma-separated list of numbers"),
                )
            })?;
        if orders.is_empty() || orders.iter().any(|a| !(*a > 1.0) || a.is_nan()) {
            return Err(PrivacyError::new("orders", format!("every order must be a number > 1, got `{s}`")));
        }
        Ok(Orders(orders))
    }
}

/// Check the mechanism's parameters.
pub fn check(q: f64, sigma: f64) -> Result<()> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(PrivacyError::new("sampling_rate", format!("must be in (0, 1], got {q}")));
    }
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(PrivacyError::new("noise_multiplier", format!("must be a finite number > 0, got {sigma}")));
    }
    Ok(())
}

fn is_integer(a: f64) -> bool {
    a.fract() == 0.0 && a < 1e15
}

/// ln(A_alpha) for integer alpha >= 1 and 0 < q < 1 (Poisson). The log binomial coefficients
/// are summed one factor at a time, exact to rounding where ln Gamma would carry an error of
/// its magnitude's ulp into the tiny RDP of a large sigma.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let mut log_a = f64::NEG_INFINITY;
    let a = alpha as f64;
    let mut log_binomial = 0.0;
    for i in 0..=alpha {
        let i = i as f64;
        if i > 0.0 {
            log_binomial += ((a - i + 1.0) / i).ln();
        }
        let coef = log_binomial + i * log_q + (a - i) * log_1mq;
        log_a = log_add(log_a, coef + (i * i - i) / (2.0 * sigma * sigma));
    }
    log_a
}

/// Terms after which a fractional order's series counts as not converging.
const MAX_TERMS_FRAC: usize = 1000;

/// ln(A_alpha) for fractional alpha > 1 and 0 < q < 1 (Poisson); infinite when the series does
/// not converge (or, signed, when a partial sum would turn negative).
fn log_a_frac(q: f64, sigma: f64, alpha: f64, series: Series) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let s2 = std::f64::consts::SQRT_2 * sigma;
    for i in 0..MAX_TERMS_FRAC {
        let i = i as f64;
        let coef = log_comb(alpha, i);
        let j = alpha - i;
        let log_t0 = coef + i * log_q + j * log_1mq;
        let log_t1 = coef + j * log_q + i * log_1mq;
        let log_e0 = LN_HALF + log_erfc((i - z0) / s2);
        let log_e1 = LN_HALF + log_erfc((z0 - j) / s2);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        match series {
            Series::Signed if binomial_is_negative(alpha, i) => {
                let (p0, m0) = log_sub_sign(log_a0, log_s0);
                let (p1, m1) = log_sub_sign(log_a1, log_s1);
                if !(p0 && p1) {
                    return f64::INFINITY;
                }
                (log_a0, log_a1) = (m0, m1);
            }
            _ => {
                log_a0 = log_add(log_a0, log_s0);
                log_a1 = log_add(log_a1, log_s1);
            }
        }
        let total = log_add(log_a0, log_a1);
        let done = match series {
            Series::Magnitudes => log_s0 < last0 && log_s1 < last1 && log_s0.max(log_s1) < total - 30.0,
            Series::Signed => log_s0.max(log_s1) < -30.0,
        };
        if done {
            return total;
        }
        (last0, last1) = (log_s0, log_s1);
    }
    f64::INFINITY
}

/// Whether binomial(alpha, i) < 0 for fractional alpha and integer i >= 0: the product
/// (alpha)(alpha - 1)...(alpha - i + 1) has one negative factor for each k < i with k > alpha.
fn binomial_is_negative(alpha: f64, i: f64) -> bool {
    let negative_factors = if i > alpha { i - alpha.floor() - 1.0 } else { 0.0 };
    negative_factors % 2.0 == 1.0
}

/// RDP of one Poisson-subsampled Gaussian step at `alpha`.
fn rdp_poisson_one(q: f64, sigma: f64, alpha: f64, series: Series) -> f64 {
    if alpha.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if is_integer(alpha) { log_a_int(q, sigma, alpha as u64) } else { log_a_frac(q, sigma, alpha, series) };
    log_a / (alpha - 1.0)
}

/// RDP of one step of the Gaussian mechanism with noise multiplier `sigma`, subsampled at rate
/// `q`, at every order.
pub fn rdp_step(q: f64, sigma: f64, sampling: Sampling, orders: &Orders, series: Series) -> Result<Vec<f64>> {
    check(q, sigma)?;
    Ok(orders
        .0
        .iter()
        .map(|&a| match sampling {
            Sampling::Poisson => rdp_poisson_one(q, sigma, a, series),
            Sampling::WithoutReplacement => rdp_wor_one(q, sigma, a),
        })
        .collect())
}

/// ln|forward differences| (and their signs) of exp(f) at 0, 1, ..., orders 0..n + 2, each
/// difference taken in log space.
fn forward_diffs(f: impl Fn(f64) -> f64, n: usize) -> Vec<f64> {
    let mut v = vec![0.0f64; n + 3];
    let mut sign = vec![true; n + 3];
    for (i, x) in v.iter_mut().enumerate().skip(1) {
        *x = f((i - 1) as f64);
    }
    let mut out = vec![0.0f64; n + 2];
    for (i, o) in out.iter_mut().enumerate() {
        for j in 0..(n + 2 - i) {
            if sign[j] == sign[j + 1] {
                let (s, m) = log_sub_sign(v[j + 1], v[j]);
                sign[j] = if sign[j + 1] { s } else { !s };
                v[j] = m;
            } else {
                v[j] = log_add(v[j], v[j + 1]);
                sign[j] = sign[j + 1];
            }
        }
        *o = v[0];
    }
    out
}

/// Orders up to which the without-replacement bound uses the exact forward differences.
const WOR_EXACT_MAX: u64 = 256;

/// ln(A_alpha) of the without-replacement bound at integer alpha >= 1.
fn log_a_wor_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    if alpha == 1 {
        return 0.0;
    }
    let cgf = |x: f64| x * (x + 1.0) / (2.0 * sigma * sigma);
    let gauss = |x: f64| x / (2.0 * sigma * sigma);
    let (ln2, ln4, log_q, a) = (2f64.ln(), 4f64.ln(), q.ln(), alpha as f64);
    let log_f2m1 = gauss(2.0) + (-(-gauss(2.0)).exp()).ln_1p();
    let second = 2.0 * log_q + log_comb(a, 2.0) + (ln4 + log_f2m1).min(gauss(2.0) + ln2);
    let mut log_a = log_add(0.0, second);
    let deltas = (alpha <= WOR_EXACT_MAX).then(|| forward_diffs(cgf, alpha as usize));
    for i in 3..=alpha {
        let fi = i as f64;
        let bound = ln2 + cgf(fi - 1.0);
        let s = match &deltas {
            Some(d) => {
                let lo = d[(2 * (i / 2)) as usize - 1];
                let hi = d[(2 * i.div_ceil(2)) as usize - 1];
                (ln4 + 0.5 * (lo + hi)).min(bound)
            }
            None => bound,
        };
        log_a = log_add(log_a, s + fi * log_q + log_comb(a, fi));
    }
    log_a
}

/// RDP of one without-replacement subsampled Gaussian step at `alpha`.
fn rdp_wor_one(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    if alpha.is_infinite() {
        return f64::INFINITY;
    }
    if is_integer(alpha) {
        return log_a_wor_int(q, sigma, alpha as u64) / (alpha - 1.0);
    }
    let (lo, hi) = (alpha.floor(), alpha.ceil());
    let (x, y) = (log_a_wor_int(q, sigma, lo as u64), log_a_wor_int(q, sigma, hi as u64));
    let t = alpha - lo;
    ((1.0 - t) * x + t * y) / (alpha - 1.0)
}

/// (epsilon, the order that gives it) for composed RDP values at `delta` in (0, 1).
pub fn epsilon_from_rdp(orders: &Orders, rdp: &[f64], delta: f64) -> Result<(f64, f64)> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::new("delta", format!("must be in (0, 1), got {delta}")));
    }
    if orders.0.len() != rdp.len() {
        return Err(PrivacyError::new("orders", format!("{} orders for {} RDP values", orders.0.len(), rdp.len())));
    }
    let mut best = (f64::INFINITY, orders.0.first().copied().unwrap_or(f64::NAN));
    for (&a, &r) in orders.0.iter().zip(rdp) {
        let eps = if r.is_nan() {
            f64::INFINITY
        } else if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// Accumulated RDP over a grid of orders: compose steps, then read epsilon.
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    pub orders: Orders,
    pub series: Series,
    pub rdp: Vec<f64>,
}

impl RdpAccountant {
    /// Nothing spent yet.
    pub fn new(orders: Orders, series: Series) -> Self {
        let rdp = vec![0.0; orders.0.len()];
        RdpAccountant { orders, series, rdp }
    }
    /// Compose `steps` subsampled Gaussian steps.
    pub fn compose(&mut self, q: f64, sigma: f64, sampling: Sampling, steps: u64) -> Result<&mut Self> {
        let step = rdp_step(q, sigma, sampling, &self.orders, self.series)?;
        self.rdp.iter_mut().zip(step).for_each(|(r, s)| *r += s * steps as f64);
        Ok(self)
    }
    /// (epsilon, optimal order) at `delta`.
    pub fn epsilon(&self, delta: f64) -> Result<(f64, f64)> {
        epsilon_from_rdp(&self.orders, &self.rdp, delta)
    }
}

/// A mechanism accounted `steps` times: the subsampled Gaussian with noise multiplier `sigma`,
/// sampling rate `q`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mechanism {
    pub q: f64,
    pub sigma: f64,
    pub steps: u64,
    pub sampling: Sampling,
}

/// Epsilon of the mechanism at `delta` (and the optimal order).
pub fn epsilon(m: &Mechanism, delta: f64, orders: &Orders, series: Series) -> Result<(f64, f64)> {
    if m.steps == 0 {
        return Err(PrivacyError::new("steps", "must be at least 1"));
    }
    RdpAccountant::new(orders.clone(), series).compose(m.q, m.sigma, m.sampling, m.steps)?.epsilon(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_participation_is_the_plain_gaussian() {
        let o = Orders(vec![2.0, 3.5, 32.0]);
        for s in [Sampling::Poisson, Sampling::WithoutReplacement] {
            let r = rdp_step(1.0, 2.0, s, &o, Series::Magnitudes).unwrap();
            assert_eq!(r, vec![2.0 / 8.0, 3.5 / 8.0, 32.0 / 8.0]);
        }
    }

    #[test]
    fn integer_and_fractional_orders_agree_where_they_meet() {
        // The fractional series at alpha = 3 + tiny is continuous with the integer expansion.
        let (q, s) = (0.01, 1.1);
        let int = rdp_poisson_one(q, s, 3.0, Series::Magnitudes);
        for series in [Series::Magnitudes, Series::Signed] {
            let frac = rdp_poisson_one(q, s, 3.0 + 1e-9, series);
            assert!((int - frac).abs() / int < 1e-6, "{series:?}: {int} vs {frac}");
        }
        // The magnitudes bound the signed (exact) sum from above.
        let (m, e) =
            (rdp_poisson_one(0.04, 1.5, 3.9, Series::Magnitudes), rdp_poisson_one(0.04, 1.5, 3.9, Series::Signed));
        assert!(m > e && (m - e) / e < 1e-3, "{m} vs {e}");
        assert!(!binomial_is_negative(2.5, 3.0) && binomial_is_negative(2.5, 4.0) && !binomial_is_negative(2.5, 5.0));
    }

    #[test]
    fn subsampling_amplifies_and_more_noise_helps() {
        let o = Orders::dp_accounting();
        let e = |q, sigma| {
            let m = Mechanism { q, sigma, steps: 1000, sampling: Sampling::Poisson };
            epsilon(&m, 1e-5, &o, Series::Magnitudes).unwrap().0
        };
        assert!(e(0.01, 1.0) < e(0.1, 1.0));
        assert!(e(0.01, 2.0) < e(0.01, 1.0));
    }

    #[test]
    fn bad_parameters_are_named() {
        let o = Orders::dp_accounting();
        let err = |q, sigma, steps, delta| {
            let m = Mechanism { q, sigma, steps, sampling: Sampling::Poisson };
            epsilon(&m, delta, &o, Series::Magnitudes).unwrap_err().field
        };
        assert_eq!(err(0.0, 1.0, 1, 1e-5), "sampling_rate");
        assert_eq!(err(1.5, 1.0, 1, 1e-5), "sampling_rate");
        assert_eq!(err(0.1, 0.0, 1, 1e-5), "noise_multiplier");
        assert_eq!(err(0.1, f64::NAN, 1, 1e-5), "noise_multiplier");
        assert_eq!(err(0.1, 1.0, 0, 1e-5), "steps");
        assert_eq!(err(0.1, 1.0, 1, 1.0), "delta");
        assert_eq!(err(0.1, 1.0, 1, 0.0), "delta");
        assert!(Orders::parse("2, 0.5").is_err() && Orders::parse("x").is_err());
        assert_eq!(Orders::parse("2,4.5").unwrap(), Orders(vec![2.0, 4.5]));
    }
}
