//! `audit` (with its stage `audit_canary`): an empirical lower bound on a run's epsilon from one
//! training run (Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run",
//! NeurIPS 2023; PAPERS.txt 63), with whole canary clients for user-level DP.
//!
//! - **Canaries** (stage `audit_canary`, `on = "malicious"`): the `[threat]` clients are the m
//!   canaries. Each is included with probability 1/2 (a coin from the run seed and its id);
//!   an included canary sends its own fixed random direction u_c of L2 norm `norm` (the clip
//!   bound C, so DP clipping leaves it whole) every round it is sampled, an excluded one sends
//!   zero, which under DP-FedAvg's fixed-denominator estimator is the same as not being there
//!   (the paper's gradient-space "Dirac" canaries, one per user).
//! - **Scores** (`fedkit attack audit --run DIR`): s_c = <w_T - w_0, u_c>, the final model's
//!   movement along each canary's direction. With `--score rounds` (the paper's white-box
//!   auditor, which sees every intermediate model; `[output] keep_models = "every:1"`):
//!   x_tc = <w_t - w_{t-1}, u_c> per round, standardised by the round's median and MAD over
//!   the canaries (x~ = (x - med) / (1.4826 MAD): the DP noise and the benign clients'
//!   movement along a random direction), and s_c = sum_t log(1 - q + q exp(x~_tc / z -
//!   1 / (2 z^2))): the log-likelihood ratio of "included" (sampled with probability q, then
//!   a shift of C along u_c against noise of std z C: signal-to-noise 1 / z) against
//!   "excluded". It is a function of the released models, so the bound stays valid whatever
//!   the model's misspecification (the benign movement, an adaptive clip) costs in power. The auditor guesses "included" for the k+ highest
//!   scores and "excluded" for the k- lowest (k+ = k- = k/2), abstaining on the rest.
//! - **The bound** (the paper's Theorem 5.2 and its Appendix D algorithm): if the run is
//!   (eps, delta)-DP, the number of correct guesses W among r satisfies
//!   P[W >= v] <= beta + 2 m delta alpha, with q = e^eps / (1 + e^eps),
//!   beta = P[Binomial(r, q) >= v] and alpha = max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i.
//!   The reported epsilon is the largest eps at which that p-value stays below 1 - confidence
//!   (bisection): with that confidence the run is not (eps, delta)-DP for any smaller eps. Over
//!   several numbers of guesses k the confidence is split among them (Bonferroni), so the
//!   largest bound keeps its stated confidence.
//!
//! The bound is a lower bound: it stays below the accountant's epsilon (`epsilon` in
//! metrics.jsonl) when the accounting is right, is 0 (in distribution) for a model that never saw
//! its canaries, and rises as the noise shrinks.
//!
//! Parameters: stage `audit_canary`: `norm` (the canaries' L2 norm, 1.0; set it to the DP clip
//! C); `fedkit attack audit`: `--confidence` (0.95), `--guesses` (numbers of guesses k, default
//! m/10, m/4, m/2 and m), `--score` (`final` or `rounds`).
//!
//! Example:
//! ```toml
//! [threat]
//! malicious_fraction = 0.25   # the canaries
//! [[pipeline]]
//! use = "audit_canary"
//! on = "malicious"
//! norm = 0.5
//! [[pipeline]]
//! use = "dp_fixed_clip"
//! clip = 0.5
//! ```
//! then `fedkit attack audit --run DIR`.

use fedkit_core::{ClientCtx, Error, Extras, Params, Result, RngStream, Stage, Update};
use serde::{Deserialize, Serialize};

/// The canary clients' updates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditCanary {
    pub norm: f64,
}

impl Default for AuditCanary {
    fn default() -> Self {
        AuditCanary { norm: 1.0 }
    }
}

impl AuditCanary {
    /// Check the norm.
    pub fn validated(self) -> Result<Self> {
        if !(self.norm >= 0.0 && self.norm.is_finite()) {
            return Err(Error::config("norm", format!("must be a finite number >= 0, got {}", self.norm)));
        }
        Ok(self)
    }
}

/// Whether canary `client` of the run with `seed` is included (probability 1/2).
pub fn included(seed: u64, client: u32) -> bool {
    RngStream::derive(seed, "audit.include", 0, client as u64).uniform() < 0.5
}

/// Canary `client`'s unit direction over the trained entries of `like` (zero on buffers).
pub fn direction(seed: u64, client: u32, like: &Params) -> Params {
    let mut rng = RngStream::derive(seed, "audit.canary", 0, client as u64);
    let mut u = like.zeros_like();
    let layout = like.layout().clone();
    for r in layout.trainable_ranges() {
        u.as_mut_slice()[r].iter_mut().for_each(|v| *v = rng.normal() as f32);
    }
    let n = u.l2();
    if n > 0.0 {
        u.scale((1.0 / n) as f32);
    }
    u
}

impl Stage for AuditCanary {
    fn on_update(&self, cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        if included(cx.seed, cx.client) {
            let mut d = direction(cx.seed, cx.client, &u.delta);
            d.scale(self.norm as f32);
            u.delta = d;
        } else {
            u.delta.as_mut_slice().fill(0.0);
        }
        u.extras = Extras::default();
        Ok(())
    }
}

/// ln k! for k = 0..=n.
fn ln_factorials(n: usize) -> Vec<f64> {
    let mut f = vec![0.0; n + 1];
    for k in 1..=n {
        f[k] = f[k - 1] + (k as f64).ln();
    }
    f
}

/// The p-value of v correct guesses among r (of m canaries) if the run were (eps, delta)-DP.
pub fn p_value(m: usize, r: usize, v: usize, eps: f64, delta: f64) -> f64 {
    let q = 1.0 / (1.0 + (-eps).exp());
    let lf = ln_factorials(r);
    let pmf = |k: usize| -> f64 {
        let lc = lf[r] - lf[k] - lf[r - k];
        let lq = if k > 0 { k as f64 * q.ln() } else { 0.0 };
        let lp = if r > k { (r - k) as f64 * (1.0 - q).ln() } else { 0.0 };
        (lc + lq + lp).exp()
    };
    let beta: f64 = (v..=r).map(pmf).sum();
    let (mut alpha, mut sum) = (0.0f64, 0.0f64);
    for i in 1..=v {
        sum += pmf(v - i);
        alpha = alpha.max(sum / i as f64);
    }
    (beta + alpha * delta * 2.0 * m as f64).min(1.0)
}

/// The largest eps at which v correct guesses among r (of m) reject (eps, delta)-DP with
/// p-value below `p` (1 - confidence); 0 when even eps = 0 is not rejected.
pub fn epsilon_lower_bound(m: usize, r: usize, v: usize, delta: f64, p: f64) -> f64 {
    if p_value(m, r, v, 0.0, delta) >= p {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while p_value(m, r, v, hi, delta) < p && hi < 1e3 {
        (lo, hi) = (hi, 2.0 * hi);
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if p_value(m, r, v, mid, delta) < p { lo = mid } else { hi = mid }
    }
    lo
}

/// The `--score rounds` scores: per canary, the sum over rounds of the log-likelihood ratio of
/// its standardised movement `x[t][c]` for sampling rate `q` and noise multiplier `z` (module
/// docs).
pub fn round_scores(x: &[Vec<f64>], q: f64, z: f64) -> Vec<f64> {
    let m = x.first().map_or(0, Vec::len);
    let s = 1.0 / z.max(1e-6);
    let mut scores = vec![0.0; m];
    for row in x {
        let med = median(row);
        let mad = 1.4826 * median(&row.iter().map(|v| (v - med).abs()).collect::<Vec<_>>());
        if mad <= 0.0 || !mad.is_finite() {
            continue;
        }
        for (sc, &v) in scores.iter_mut().zip(row) {
            let a = s * (v - med) / mad - s * s / 2.0;
            // log(1 - q + q e^a), stable for large a.
            *sc += llr(a, q);
        }
    }
    scores
}

/// log(1 - q + q e^a), stable for large |a| (q = 1: a).
fn llr(a: f64, q: f64) -> f64 {
    if q >= 1.0 {
        a
    } else if a > 0.0 {
        a + ((1.0 - q) * (-a).exp() + q).ln()
    } else {
        (1.0 - q + q * a.exp()).ln()
    }
}

fn median(v: &[f64]) -> f64 {
    let mut w = v.to_vec();
    w.sort_by(f64::total_cmp);
    match w.len() {
        0 => 0.0,
        n if n % 2 == 1 => w[n / 2],
        n => (w[n / 2 - 1] + w[n / 2]) / 2.0,
    }
}

/// Correct guesses when the `k / 2` highest scores are guessed included and the `k / 2` lowest
/// excluded: (guesses r, correct v).
pub fn guesses(scores: &[f64], truth: &[bool], k: usize) -> (usize, usize) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let half = (k / 2).min(scores.len() / 2);
    let top = order[..half].iter().filter(|&&i| truth[i]).count();
    let bottom = order[order.len() - half..].iter().filter(|&&i| !truth[i]).count();
    (2 * half, top + bottom)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Included canaries get a shift of 3 noise std in the rounds they are sampled (q = 0.1):
    // the per-round likelihood ratio finds them, the final model's sum (drowned by the drift)
    // much less; with no shifts at all the scores carry no information about the coins.
    #[test]
    fn the_round_likelihood_ratio_is_stable_and_skips_flat_rounds() {
        for &q in &[0.1, 0.5, 0.9] {
            for a in [-5.0, -1.0, 0.0, 0.3, 2.0, 5.0] {
                let naive = (1.0 - q + q * f64::exp(a)).ln();
                assert!((llr(a, q) - naive).abs() < 1e-12, "a {a}, q {q}");
            }
            assert!(llr(800.0, q).is_finite() && llr(-800.0, q).is_finite());
        }
        assert_eq!(llr(-900.0, 1.0), -900.0);
        // A round where every canary moved alike (MAD 0) carries nothing.
        assert_eq!(round_scores(&[vec![1.0; 5]], 0.1, 1.0), vec![0.0; 5]);
    }

    #[test]
    fn round_scores_find_sampled_shifts_the_sum_hides() {
        let (m, t, q, z) = (400usize, 50usize, 0.1, 1.0 / 3.0);
        let mut rng = fedkit_core::RngStream::new(9);
        let truth: Vec<bool> = (0..m).map(|_| rng.uniform() < 0.5).collect();
        // Each canary's direction also sees a steady drift (the model's own movement projected on
        // it), which piles up in the sum over rounds; the noise has std 2 (the scale the
        // standardisation removes).
        let drift: Vec<f64> = (0..m).map(|_| rng.normal()).collect();
        let mut x = vec![vec![0.0; m]; t];
        for row in x.iter_mut() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = 2.0 * rng.normal() + drift[c] + if truth[c] && rng.uniform() < q { 2.0 / z } else { 0.0 };
            }
        }
        let llr = round_scores(&x, q, z);
        let sum: Vec<f64> = (0..m).map(|c| x.iter().map(|r| r[c]).sum()).collect();
        let (r, right_llr) = guesses(&llr, &truth, 100);
        let (_, right_sum) = guesses(&sum, &truth, 100);
        assert_eq!(r, 100);
        assert!(right_llr >= 95 && right_llr > right_sum, "llr {right_llr}, sum {right_sum} of 100");
        let null: Vec<Vec<f64>> = (0..t).map(|_| (0..m).map(|_| rng.normal()).collect()).collect();
        let (_, right_null) = guesses(&round_scores(&null, q, z), &truth, 100);
        assert!((35..=65).contains(&right_null), "no signal: {right_null} of 100");
    }

    // All r guesses right, delta = 0: P[Bin(r, q) >= r] = q^r < p gives q < p^(1/r), so the
    // bound is ln(q / (1 - q)) at q = p^(1/r): for r = 100, p = 0.05, q = 0.970487 and the bound
    // is 3.4930.
    #[test]
    fn the_bound_has_its_closed_form_when_every_guess_is_right() {
        let q: f64 = 0.05f64.powf(0.01);
        let want = (q / (1.0 - q)).ln();
        let got = epsilon_lower_bound(1000, 100, 100, 0.0, 0.05);
        assert!((got - want).abs() < 1e-6 && (got - 3.4930).abs() < 1e-3, "{got} vs {want}");
        // delta > 0 can only lower it.
        assert!(epsilon_lower_bound(1000, 100, 100, 1e-5, 0.05) < got);
    }

    #[test]
    fn chance_level_guesses_bound_nothing_and_more_correct_guesses_bound_more() {
        assert_eq!(epsilon_lower_bound(1000, 200, 100, 1e-5, 0.05), 0.0);
        assert_eq!(epsilon_lower_bound(1000, 200, 110, 1e-5, 0.05), 0.0, "within chance");
        let (a, b) = (epsilon_lower_bound(1000, 200, 140, 0.0, 0.05), epsilon_lower_bound(1000, 200, 170, 0.0, 0.05));
        assert!(0.0 < a && a < b, "{a} {b}");
        // The p-value rises with eps (a weaker claim is harder to reject).
        assert!(p_value(1000, 200, 140, 0.2, 0.0) < p_value(1000, 200, 140, 0.6, 0.0));
    }

    #[test]
    fn guesses_take_the_top_and_bottom_halves() {
        let scores = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0];
        let truth = [true, false, true, false, true, false];
        // k = 4: top two (true, false) give 1 right, bottom two (true, false) give 1 right.
        assert_eq!(guesses(&scores, &truth, 4), (4, 2));
        assert_eq!(guesses(&scores, &truth, 2), (2, 2));
    }

    #[test]
    fn canaries_are_fixed_unit_directions_and_half_are_included() {
        let mut l = fedkit_core::Layout::new();
        l.push("w", &[50], fedkit_core::ParamKind::Weight);
        l.push("bn.mean", &[3], fedkit_core::ParamKind::Buffer);
        let p = Params::zeros(std::sync::Arc::new(l));
        let u = direction(7, 3, &p);
        assert!((u.l2() - 1.0).abs() < 1e-6 && u.as_slice()[50..].iter().all(|&v| v == 0.0));
        assert_eq!(u, direction(7, 3, &p));
        assert_ne!(u, direction(7, 4, &p));
        let n = (0..2000).filter(|&c| included(1, c)).count();
        assert!((900..1100).contains(&n), "{n}");
    }
}
