//! `dp_adaptive_clip`: DP-FedAvg whose clipping bound follows a private quantile of the update
//! norms. Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning with Adaptive
//! Clipping", NeurIPS 2021 (Algorithm 1, geometric update).
//!
//! Round t, with clipping bound C_t:
//! - **Each client** clips its update to C_t, as `dp_fixed_clip` does. It also reports
//!   b_i - 1/2, where b_i = 1 when its norm was at most C_t. The report travels as the extra
//!   `dp_below`, which the server stage removes before aggregation.
//! - **The server** releases two noised sums:
//!   - sum clip(delta_i) / D + N(0, (z_delta C_t / D)^2);
//!   - the fraction below the bound, b = (sum (b_i - 1/2) + N(0, sigma_b^2)) / D + 1/2.
//!   - It then moves the bound towards the target quantile gamma:
//!     C_{t+1} = C_t exp(-eta_C (b - gamma)).
//! - **The noise split** (the paper's Theorem 1): both releases together are one Gaussian
//!   mechanism with noise multiplier z when z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2). The
//!   accountant runs with z, as `dp_fixed_clip`'s does (sampling and neighbouring relation
//!   alike), and the run logs `epsilon` and `dp_clip` (C_t) every round.
//!
//! Central noise only. In simulation the client half reads C_t from the stage object; a
//! deployment broadcasts it (the deployment issue). The noise comes from the run seed (streams
//! `dp_noise`, `dp_count_noise`) or, with `noise_source = "os"`, from the OS's CSPRNG, as in
//! `dp_fixed_clip`.
//!
//! Parameters (the paper's symbols): `initial_clip` (C_0, default 0.1), `target_quantile`
//! (gamma, default 0.5), `clip_lr` (eta_C, default 0.2), `noise_multiplier` (z, default 1.0),
//! `count_noise` (sigma_b; default 0 = the expected cohort / 20, the paper's choice, but at
//! least z so that the split exists), `delta`
//! (default 0 = N^-1.1), `noise_source` (`seed` or `os`).
//!
//! ```toml
//! [[pipeline]]
//! use = "dp_adaptive_clip"
//! initial_clip = 0.1
//! target_quantile = 0.5
//! clip_lr = 0.2
//! noise_multiplier = 1.0
//! count_noise = 0.0
//! delta = 0.0
//! noise_source = "seed"
//! ```

use fedkit_core::{Aggregate, ClientCtx, Error, Extra, Extras, Result, RoundCtx, RunInfo, Stage, Update};
use serde::{Deserialize, Serialize};

use super::accounting::{DpAccounting, Noise, NoiseSource, clip_update};
use super::dp_fixed_clip::{check_delta, check_positive};

const NAME: &str = "dp_adaptive_clip";
/// The extra carrying a client's b_i - 1/2.
const BELOW: &str = "dp_below";

/// DP-FedAvg with adaptive clipping.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpAdaptiveClip {
    pub initial_clip: f64,
    pub target_quantile: f64,
    pub clip_lr: f64,
    pub noise_multiplier: f64,
    pub count_noise: f64,
    pub delta: f64,
    pub noise_source: NoiseSource,
    /// C_t (set from `initial_clip` by `prepare`, then by every round; saved in checkpoints).
    #[serde(skip)]
    clip: f64,
    /// sigma_b in use (`count_noise`, or its default).
    #[serde(skip)]
    sigma_b: f64,
    /// This round's sum of b_i - 1/2 (from `on_cohort`).
    #[serde(skip)]
    below: f64,
    #[serde(skip)]
    dp: DpAccounting,
}

impl Default for DpAdaptiveClip {
    fn default() -> Self {
        DpAdaptiveClip {
            initial_clip: 0.1,
            target_quantile: 0.5,
            clip_lr: 0.2,
            noise_multiplier: 1.0,
            count_noise: 0.0,
            delta: 0.0,
            noise_source: NoiseSource::Seed,
            clip: 0.0,
            sigma_b: 0.0,
            below: 0.0,
            dp: DpAccounting::default(),
        }
    }
}

impl DpAdaptiveClip {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        check_positive("initial_clip", self.initial_clip)?;
        check_positive("noise_multiplier", self.noise_multiplier)?;
        check_positive("clip_lr", self.clip_lr)?;
        if !(self.target_quantile > 0.0 && self.target_quantile < 1.0) {
            return Err(Error::config("target_quantile", format!("must be in (0, 1), got {}", self.target_quantile)));
        }
        if !(self.count_noise >= 0.0 && self.count_noise.is_finite()) {
            return Err(Error::config(
                "count_noise",
                format!("must be a finite number >= 0, got {}", self.count_noise),
            ));
        }
        check_delta(self.delta)?;
        Ok(self)
    }

    /// z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2).
    fn update_noise_multiplier(&self) -> f64 {
        let z = self.noise_multiplier;
        (z.powi(-2) - (2.0 * self.sigma_b).powi(-2)).powf(-0.5)
    }

    /// The current clipping bound C_t.
    pub fn current_clip(&self) -> f64 {
        self.clip
    }
}

impl Stage for DpAdaptiveClip {
    fn prepare(&mut self, run: &RunInfo) -> Result<()> {
        self.dp.prepare(NAME, run, self.noise_multiplier, self.delta, false)?;
        let d = self.dp.denominator(NAME)?;
        self.sigma_b = if self.count_noise > 0.0 { self.count_noise } else { (d / 20.0).max(self.noise_multiplier) };
        if 2.0 * self.sigma_b <= self.noise_multiplier {
            return Err(Error::config(
                "count_noise",
                format!(
                    "sigma_b = {} leaves no noise for the update: it needs 2 sigma_b > noise_multiplier = {} (Andrew et al., Theorem 1)",
                    self.sigma_b, self.noise_multiplier
                ),
            ));
        }
        if self.clip == 0.0 {
            self.clip = self.initial_clip;
        }
        Ok(())
    }

    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        let inside = clip_update(NAME, u, self.clip)?;
        u.extras.insert(BELOW, Extra::Scalar(if inside { 0.5 } else { -0.5 }));
        Ok(())
    }

    fn on_cohort(&mut self, _r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        self.below = 0.0;
        for u in us.iter_mut() {
            let b = u.extras.scalar(BELOW).ok_or_else(|| {
                Error::Method(format!("{NAME}: client {} sent no clipping report (`{BELOW}`)", u.client))
            })?;
            u.extras.0.remove(BELOW);
            self.below += b;
        }
        // A compressor after the client's clip may have grown the norm: clip again.
        super::accounting::reclip(us, self.clip);
        Ok(())
    }

    fn on_aggregate(&mut self, r: &RoundCtx, a: &mut Aggregate) -> Result<()> {
        let d = self.dp.denominator(NAME)?;
        let std = self.update_noise_multiplier() * self.clip / d;
        self.dp.noise_mean(NAME, r, a, std, self.noise_source)?;
        let noised = self.below + self.sigma_b * Noise::new(self.noise_source, r.rng("dp_count_noise"))?.normal();
        let fraction = noised / d + 0.5;
        a.metrics.insert("dp_clip".into(), self.clip);
        self.clip *= (-self.clip_lr * (fraction - self.target_quantile)).exp();
        a.metrics.insert("epsilon".into(), self.dp.account(NAME, r)?);
        Ok(())
    }

    fn noises_every_round(&self) -> bool {
        true
    }

    fn state(&self) -> Result<Vec<u8>> {
        let mut out = self.clip.to_le_bytes().to_vec();
        out.extend(self.dp.state());
        Ok(out)
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return self.dp.load_state(NAME, bytes);
        }
        if bytes.len() < 8 {
            return Err(Error::Method(format!("{NAME}: a checkpoint of {} bytes is too short", bytes.len())));
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&bytes[..8]);
        self.clip = f64::from_le_bytes(c);
        self.dp.load_state(NAME, &bytes[8..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::cx;
    use crate::defenses::testing::{ctx_with, update};
    use fedkit_core::{CohortSampling, Metrics, Weighting};
    use fedkit_privacy::{Mechanism, Orders, Sampling, Series};

    /// A FedAvg run of `population` clients with the mean.
    fn run(population: usize, sampling: CohortSampling) -> RunInfo {
        RunInfo {
            population,
            sampling,
            rounds: 10,
            algorithm: "fedavg".into(),
            aggregator: "mean".into(),
            local_step: "plain".into(),
        }
    }

    fn prepared(z: f64, sigma_b: f64) -> DpAdaptiveClip {
        let mut s =
            DpAdaptiveClip { noise_multiplier: z, count_noise: sigma_b, delta: 1e-5, ..DpAdaptiveClip::default() };
        s.prepare(&run(1000, CohortSampling::Poisson { rate: 0.1 })).unwrap();
        s
    }

    /// One round: `norms` are the clients' update norms (1-D updates).
    fn round(s: &mut DpAdaptiveClip, t: u32, norms: &[f32]) -> Aggregate {
        let e = Extras::default();
        let mut us: Vec<Update> = norms.iter().enumerate().map(|(i, n)| update(i as u32, &[*n], 1.0)).collect();
        for u in us.iter_mut() {
            s.on_update(&cx(t, u.client, &e), u, &mut Extras::default()).unwrap();
        }
        s.on_cohort(&ctx_with(t, &[]), &mut us).unwrap();
        assert!(us.iter().all(|u| u.extras.0.is_empty()), "the reports never reach the aggregator");
        let k = us.len() as f32;
        let mut a = Aggregate {
            delta: update(0, &[us.iter().map(|u| u.delta.as_slice()[0]).sum::<f32>() / k], 1.0).delta,
            weight: k,
            extras: Extras::default(),
            accepted: us.iter().map(|u| u.client).collect(),
            metrics: Metrics::new(),
            weighting: Weighting::UpdateWeights,
        };
        s.on_aggregate(&ctx_with(t, &[]), &mut a).unwrap();
        a
    }

    #[test]
    fn the_bound_moves_to_the_target_quantile_of_the_norms() {
        // 100 clients a round with norms 0.01, 0.02, ..., 1.00: the median norm is about 0.5.
        let norms: Vec<f32> = (1..=100).map(|i| i as f32 / 100.0).collect();
        let mut s = DpAdaptiveClip { clip_lr: 0.5, ..prepared(1.0, 5.0) };
        for t in 1..=60 {
            round(&mut s, t, &norms);
        }
        let c = s.current_clip();
        assert!((c - 0.5).abs() < 0.06, "C = {c} after 60 rounds from 0.1");
    }

    #[test]
    fn the_noise_split_and_the_logged_epsilon_follow_theorem_1() {
        let s = prepared(1.0, 5.0);
        // z_delta = (1 - 1/100)^(-1/2).
        assert!((s.update_noise_multiplier() - (1.0f64 - 0.01).powf(-0.5)).abs() < 1e-12);
        let mut s = prepared(1.0, 5.0);
        let mut eps = 0.0;
        for t in 1..=3 {
            eps = round(&mut s, t, &[0.05, 0.2]).metrics["epsilon"];
        }
        let m = Mechanism { q: 0.1, sigma: 1.0, steps: 3, sampling: Sampling::Poisson };
        let want = fedkit_privacy::epsilon(&m, 1e-5, &Orders::dp_accounting(), Series::Magnitudes).unwrap().0;
        assert_eq!(eps, want);
        // The bound survives a checkpoint with the accountant.
        let mut restored =
            DpAdaptiveClip { noise_multiplier: 1.0, count_noise: 5.0, delta: 1e-5, ..DpAdaptiveClip::default() };
        restored.load_state(&s.state().unwrap()).unwrap();
        assert_eq!(restored.current_clip(), s.current_clip());
    }

    #[test]
    fn too_little_count_noise_is_refused() {
        let mut s = DpAdaptiveClip { noise_multiplier: 2.0, count_noise: 0.9, ..DpAdaptiveClip::default() };
        let err = s.prepare(&run(100, CohortSampling::FixedSize { per_round: 10 })).unwrap_err().to_string();
        assert!(err.contains("count_noise"), "{err}");
        assert!(DpAdaptiveClip { target_quantile: 1.0, ..DpAdaptiveClip::default() }.validated().is_err());
    }
}
