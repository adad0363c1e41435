//! The privacy-loss-distribution (PLD) accountant for the Poisson-subsampled Gaussian
//! mechanism, as Google's dp-accounting builds it (`PLDAccountant`, 0.6.0): tighter than RDP.
//!
//! - Koskela, Jälkö, Honkela, "Computing Tight Differential Privacy Guarantees Using FFT",
//!   AISTATS 2020 (FFT self-composition);
//! - Doroshenko, Ghazi, Kamath, Kumar, Manurangsi, "Connect the Dots: Tighter Discrete
//!   Approximations of Privacy Loss Distributions", PETS 2022 (the discretisation).
//!
//! The construction, for add/remove-one neighbours and sensitivity 1:
//! 1. For each direction (remove, add) the privacy loss of the subsampled Gaussian is evaluated
//!    on the grid k D (D = 1e-4) over the loss range of the noise's central mass (tails of
//!    e^-50 cut off), through the hockey-stick divergences delta(k D).
//! 2. Connect the dots turns those divergences into a pessimistic discrete distribution: the
//!    probabilities are second differences of delta, the mass above the grid goes to +inf.
//! 3. T steps: the T-fold self-convolution by FFT (a circular power on a window chosen by
//!    Chernoff bounds; what falls outside, at most 1e-15, is counted as infinite loss).
//! 4. epsilon(delta) solves inf + sum over losses l > eps of p_l (1 - e^(eps - l)) = delta on
//!    each direction; the answer is the larger.
//!
//! Full participation (q = 1) is the plain Gaussian: T steps are one Gaussian of noise
//! sigma / sqrt(T), as dp-accounting folds them. Agreement with dp-accounting is checked by
//! `tests/pld_reference.rs` against values `scripts/dp_reference.sh` generated.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;

use crate::{PrivacyError, Result};

/// dp-accounting's defaults.
const D: f64 = 1e-4;
/// Mass cut from each composition's tails (and counted as infinite loss).
const TAIL: f64 = 1e-15;
/// ndtri(0.5 e^-50): the noise's tails beyond sigma |Z| carry e^-50 together.
const Z_TAIL: f64 = -9.745474864965935;
/// Grids beyond this many points are refused (memory and time); RDP answers there.
const MAX_POINTS: usize = 50_000_000;

/// A discrete privacy-loss distribution on the grid: probs[i] at loss (lower + i) D, plus the
/// probability of an infinite loss.
#[derive(Clone, Debug)]
struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    inf: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Adjacency {
    Remove,
    Add,
}

/// ln(a e^b + c), as dp-accounting's `log_a_times_exp_b_plus_c`.
fn log_a_exp_b_plus_c(a: f64, b: f64, c: f64) -> f64 {
    let log_sub = |x: f64, y: f64| x + (-(y - x).exp()).ln_1p();
    let log_add = |x: f64, y: f64| {
        let (mn, mx) = if x < y { (x, y) } else { (y, x) };
        mx + (mn - mx).exp().ln_1p()
    };
    if a == 0.0 {
        return c.ln();
    }
    if a < 0.0 {
        return log_sub(c.ln(), (-a).ln() + b);
    }
    if b == 0.0 {
        return (a + c).ln();
    }
    let d = b + a.ln();
    if c == 0.0 {
        d
    } else if c < 0.0 {
        log_sub(d, (-c).ln())
    } else {
        log_add(d, c.ln())
    }
}

/// The standard normal CDF (cephes' `ndtr`).
fn phi(x: f64) -> f64 {
    let t = x * std::f64::consts::FRAC_1_SQRT_2;
    if t.abs() < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(t)
    } else {
        let y = 0.5 * libm::erfc(t.abs());
        if t > 0.0 { 1.0 - y } else { y }
    }
}

/// ln of the standard normal CDF.
fn log_phi(x: f64) -> f64 {
    if x == f64::INFINITY {
        return 0.0;
    }
    if x == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let t = x * std::f64::consts::FRAC_1_SQRT_2;
    if x < -1.0 { crate::special::log_erfc(-t) - std::f64::consts::LN_2 } else { (-0.5 * libm::erfc(t)).ln_1p() }
}

/// The subsampled Gaussian's privacy loss in one direction (noise sigma, rate q, sensitivity 1).
struct Loss {
    sigma: f64,
    q: f64,
    adj: Adjacency,
}

impl Loss {
    fn unsampled(&self, x: f64) -> f64 {
        (-0.5 - x) / (self.sigma * self.sigma)
    }
    fn unsampled_inv(&self, l: f64) -> f64 {
        -0.5 - l * self.sigma * self.sigma
    }
    fn remove(&self, x: f64) -> f64 {
        let l = self.unsampled(x);
        if self.q == 1.0 { l } else { log_a_exp_b_plus_c(self.q, l, 1.0 - self.q) }
    }
    /// The loss at x (decreasing in x).
    fn at(&self, x: f64) -> f64 {
        match self.adj {
            Adjacency::Remove => self.remove(x),
            Adjacency::Add => -self.remove(-x),
        }
    }
    /// The largest x with loss(x) >= l.
    fn inverse(&self, l: f64) -> f64 {
        let q = self.q;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
        match self.adj {
            Adjacency::Remove => {
                if q == 1.0 {
                    self.unsampled_inv(l)
                } else if close(l, (1.0 - q).ln()) {
                    self.unsampled_inv(f64::NEG_INFINITY)
                } else {
                    self.unsampled_inv(log_a_exp_b_plus_c(1.0 / q, l, 1.0 - 1.0 / q))
                }
            }
            Adjacency::Add => {
                if q == 1.0 {
                    1.0 + self.unsampled_inv(l)
                } else if close(l, -(1.0 - q).ln()) {
                    1.0 + self.unsampled_inv(f64::INFINITY)
                } else {
                    1.0 + self.unsampled_inv(-log_a_exp_b_plus_c(1.0 / q, -l, 1.0 - 1.0 / q))
                }
            }
        }
    }
    fn upper_cdf(&self, x: f64) -> f64 {
        let s = self.sigma;
        match self.adj {
            Adjacency::Remove if self.q == 1.0 => phi((x + 1.0) / s),
            Adjacency::Remove => (1.0 - self.q) * phi(x / s) + self.q * phi((x + 1.0) / s),
            Adjacency::Add => phi(x / s),
        }
    }
    fn lower_log_cdf(&self, x: f64) -> f64 {
        let s = self.sigma;
        match self.adj {
            Adjacency::Remove => log_phi(x / s),
            Adjacency::Add if self.q == 1.0 => log_phi((x - 1.0) / s),
            Adjacency::Add => {
                let (a, b) = ((-self.q).ln_1p() + log_phi(x / s), self.q.ln() + log_phi((x - 1.0) / s));
                let (mn, mx) = if a < b { (a, b) } else { (b, a) };
                if mx == f64::NEG_INFINITY { mx } else { mx + (mn - mx).exp().ln_1p() }
            }
        }
    }
    /// The hockey-stick divergence delta(eps) of the upper from the lower distribution.
    fn delta(&self, eps: f64) -> f64 {
        let q = self.q;
        let invertible = q == 1.0
            || match self.adj {
                Adjacency::Add => eps < -(-q).ln_1p(),
                Adjacency::Remove => eps > (-q).ln_1p(),
            };
        if !invertible {
            return if self.adj == Adjacency::Add { 0.0 } else { -eps.exp_m1() };
        }
        let x = self.inverse(eps);
        (self.upper_cdf(x) - (eps + self.lower_log_cdf(x)).exp()).clamp(0.0, 1.0)
    }
    /// The connect-the-dots PLD (pessimistic) on the grid k D.
    fn pmf(&self) -> Result<Pmf> {
        let s = self.sigma;
        let (lo_x, hi_x) = match self.adj {
            Adjacency::Remove => (s * Z_TAIL - 1.0, -s * Z_TAIL),
            Adjacency::Add => (s * Z_TAIL, -s * Z_TAIL + 1.0),
        };
        let (upper, lower) = (self.at(lo_x), self.at(hi_x));
        let width = (upper / D).ceil() - (lower / D).floor() + 1.0;
        if !(width.is_finite() && width <= MAX_POINTS as f64) {
            return Err(too_large(width));
        }
        let (k_lo, k_hi) = ((lower / D).floor() as i64, (upper / D).ceil() as i64);
        let n = (k_hi - k_lo + 1) as usize;
        let mut deltas: Vec<f64> = (k_lo..=k_hi).map(|k| self.delta(k as f64 * D)).collect();
        if n == 1 {
            return Ok(Pmf { lower: k_lo, probs: vec![1.0 - deltas[0]], inf: deltas[0] });
        }
        if deltas.windows(2).any(|w| w[1] - w[0] > 1e-12) {
            return Err(PrivacyError::new("pld", "the hockey-stick divergences are not monotone: a numerical failure"));
        }
        for i in 1..n {
            deltas[i] = deltas[i].min(deltas[i - 1]);
        }
        let diffs: Vec<f64> = deltas.windows(2).map(|w| w[1] - w[0]).collect();
        let (em1, e) = (D.exp_m1(), D.exp());
        let mut probs = vec![0.0; n];
        probs[0] = 1.0 - deltas[0] + diffs[0] / em1;
        for i in 1..n - 1 {
            probs[i] = (diffs[i] - diffs[i - 1] * e) / em1;
        }
        probs[n - 1] = diffs[n - 2] / (-D).exp_m1();
        probs.iter_mut().for_each(|p| *p = p.max(0.0));
        Ok(Pmf { lower: k_lo, probs, inf: deltas[n - 1] })
    }
}

/// The error for a grid or composition window of `points` points.
fn too_large(points: f64) -> PrivacyError {
    PrivacyError::new(
        "noise_multiplier",
        format!("the PLD would need {points:.3e} grid points (at most {MAX_POINTS}): use the RDP accountant"),
    )
}

/// ln sum_i p_i e^(a i), over the p_i > 0.
fn log_mgf(p: &[f64], a: f64) -> f64 {
    let live = || p.iter().enumerate().filter(|(_, v)| **v > 0.0);
    let m = live().map(|(i, _)| a * i as f64).fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = live().map(|(i, v)| v * (a * i as f64 - m).exp()).sum();
    m + s.ln()
}

/// The smallest length >= n whose prime factors are 2, 3, 5 and 7 (fast FFTs).
fn smooth_len(n: usize) -> usize {
    (n..)
        .find(|&m| {
            let mut r = m;
            for p in [2, 3, 5, 7] {
                while r % p == 0 {
                    r /= p;
                }
            }
            r == 1
        })
        .unwrap_or(n)
}

impl Pmf {
    /// Cut each tail's first TAIL / 2 of mass: the left tail moves onto the lowest kept loss,
    /// the right tail to infinity (pessimistic).
    fn truncate_tails(mut self) -> Pmf {
        let prefix = |it: &mut dyn Iterator<Item = f64>| {
            let mut s = 0.0;
            let mut k = 0;
            for v in it {
                s += v;
                if s > TAIL / 2.0 {
                    return k;
                }
                k += 1;
            }
            k
        };
        let n = self.probs.len();
        let left = prefix(&mut self.probs.iter().copied());
        let right = (n - prefix(&mut self.probs.iter().rev().copied())).max(left + 1).min(n);
        let left = left.min(n - 1);
        let left_mass: f64 = self.probs[..left].iter().sum();
        let right_mass: f64 = self.probs[right..].iter().sum();
        let mut kept = self.probs[left..right].to_vec();
        kept[0] += left_mass;
        self.lower += left as i64;
        self.inf += right_mass;
        self.probs = kept;
        self
    }

    /// The T-fold self-composition, by a circular FFT power on the Chernoff window.
    fn self_compose(self, t: u64) -> Result<Pmf> {
        let n = self.probs.len();
        if n <= 1000 && t == 1 {
            return Ok(self);
        }
        let tf = t as f64;
        let span = ((n - 1) as u64)
            .checked_mul(t)
            .filter(|&v| v < i64::MAX as u64 / 2)
            .ok_or_else(|| too_large((n - 1) as f64 * tf))?;
        let (mut lo, mut hi) = (0i64, span as i64);
        for o in (-20..=20).filter(|&o| o != 0) {
            let order = o as f64 / n as f64;
            let bound = (tf * log_mgf(&self.probs, order) + (2.0 / TAIL).ln()) / order;
            if !bound.is_finite() {
                continue;
            }
            if order > 0.0 {
                hi = hi.min(bound.ceil() as i64);
            } else {
                lo = lo.max(bound.floor() as i64);
            }
        }
        let out_len = (hi - lo + 1).max(1) as usize;
        if out_len > MAX_POINTS {
            return Err(too_large(out_len as f64));
        }
        let len = smooth_len(out_len.max(n));
        let mut buf: Vec<Complex64> = self.probs.iter().map(|&p| Complex64::new(p, 0.0)).collect();
        buf.resize(len, Complex64::new(0.0, 0.0));
        let mut planner = FftPlanner::new();
        planner.plan_fft_forward(len).process(&mut buf);
        for z in buf.iter_mut() {
            let (r, theta) = z.to_polar();
            *z = Complex64::from_polar(r.powf(tf), theta * tf);
        }
        planner.plan_fft_inverse(len).process(&mut buf);
        let scale = 1.0 / len as f64;
        let probs: Vec<f64> =
            (0..out_len).map(|j| buf[((j as i64 + lo).rem_euclid(len as i64)) as usize].re * scale).collect();
        let lower = self.lower.checked_mul(t as i64).and_then(|l| l.checked_add(lo)).ok_or_else(|| too_large(tf))?;
        Ok(Pmf { lower, probs, inf: TAIL - (tf * (-self.inf).ln_1p()).exp_m1() })
    }

    /// The smallest epsilon with delta(epsilon) <= `delta`.
    fn epsilon(&self, delta: f64) -> f64 {
        if self.inf > delta {
            return f64::INFINITY;
        }
        let (mut upper, mut lower) = (self.inf, 0.0f64);
        let mut loss = (self.lower + self.probs.len() as i64 - 1) as f64 * D;
        for &p in self.probs.iter().rev() {
            if upper > delta && lower > 0.0 && ((upper - delta) / lower).ln() >= loss {
                break;
            }
            upper += p;
            lower += (-loss).exp() * p;
            if upper >= delta && lower == 0.0 {
                return loss.max(0.0);
            }
            loss -= D;
        }
        if upper <= lower + delta { 0.0 } else { ((upper - delta) / lower).ln() }
    }

    /// delta(epsilon) = inf + sum over losses l > eps of p_l (1 - e^(eps - l)).
    fn delta(&self, eps: f64) -> f64 {
        self.inf
            + self
                .probs
                .iter()
                .enumerate()
                .map(|(i, &p)| ((self.lower + i as i64) as f64 * D, p))
                .filter(|&(l, _)| l > eps)
                .map(|(l, p)| -(eps - l).exp_m1() * p)
                .sum::<f64>()
    }
}

/// The PLDs (remove, add) of `steps` Poisson-subsampled Gaussian steps.
fn plds(q: f64, sigma: f64, steps: u64) -> Result<Vec<Pmf>> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(PrivacyError::new("sampling_rate", format!("must be in (0, 1], got {q}")));
    }
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(PrivacyError::new("noise_multiplier", format!("must be a finite number > 0, got {sigma}")));
    }
    if steps == 0 {
        return Err(PrivacyError::new("steps", "must be at least 1"));
    }
    if q == 1.0 {
        let l = Loss { sigma: sigma / (steps as f64).sqrt(), q, adj: Adjacency::Remove };
        return Ok(vec![l.pmf()?.truncate_tails()]);
    }
    [Adjacency::Remove, Adjacency::Add]
        .into_iter()
        .map(|adj| Ok(Loss { sigma, q, adj }.pmf()?.self_compose(steps)?.truncate_tails()))
        .collect()
}

/// Epsilon at `delta` after `steps` steps of the Poisson-subsampled Gaussian (rate `q`, noise
/// multiplier `sigma`), add/remove-one neighbours.
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<f64> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::new("delta", format!("must be in (0, 1), got {delta}")));
    }
    Ok(plds(q, sigma, steps)?.iter().map(|p| p.epsilon(delta)).fold(0.0, f64::max))
}

/// Delta at `eps` after `steps` steps (see [`epsilon`]).
pub fn delta(q: f64, sigma: f64, steps: u64, eps: f64) -> Result<f64> {
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(PrivacyError::new("epsilon", format!("must be a finite number >= 0, got {eps}")));
    }
    Ok(plds(q, sigma, steps)?.iter().map(|p| p.delta(eps)).fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dp-accounting 0.6.0's values (its PLDAccountant with the defaults).
    #[test]
    fn matches_dp_accounting_on_its_own_test_vectors() {
        let cases: [(f64, f64, u64, f64, f64); 6] = [
            (1.0, 1.0, 1, 1e-5, 4.37717810002493),
            (1.0, 1.0, 10, 1e-5, 17.85658683146691),
            (0.01, 1.0, 1, 1e-5, 0.19945047347144237),
            (0.01, 1.0, 100, 1e-5, 0.7180367094172235),
            (0.01, 1.0, 1000, 1e-6, 2.1245225256749363),
            (0.1, 2.0, 50, 1e-5, 1.6525022602139507),
        ];
        for (q, s, t, d, want) in cases {
            let got = epsilon(q, s, t, d).unwrap();
            assert!(((got - want) / want).abs() < 1e-6, "q {q} sigma {s} T {t}: {got} vs {want}");
        }
        let got = delta(0.01, 1.0, 1000, 1.0).unwrap();
        assert!((got / 0.002612496806301317 - 1.0).abs() < 1e-6, "{got}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(epsilon(0.0, 1.0, 1, 1e-5).unwrap_err().field, "sampling_rate");
        assert_eq!(epsilon(0.1, -1.0, 1, 1e-5).unwrap_err().field, "noise_multiplier");
        assert_eq!(epsilon(0.1, 1.0, 0, 1e-5).unwrap_err().field, "steps");
        assert_eq!(epsilon(0.1, 1.0, 1, 1.5).unwrap_err().field, "delta");
        assert_eq!(epsilon(1.0, 1e-4, 1, 1e-5).unwrap_err().field, "noise_multiplier");
        assert_eq!(epsilon(1.0, 1e-12, 1, 1e-5).unwrap_err().field, "noise_multiplier");
        // A composition window beyond the cap is an error, not an abort.
        let e = epsilon(0.1, 0.5, 10_000_000, 1e-5).unwrap_err();
        assert!(e.message.contains("RDP"), "{e}");
    }
}
