//! `dp_fixed_clip`: user-level DP-FedAvg with a fixed clipping bound, McMahan, Ramage, Talwar,
//! Zhang, "Learning Differentially Private Recurrent Language Models", ICLR 2018.
//!
//! One object owns both halves of the mechanism.
//! - **Client** (`on_update`): the update is clipped to L2 norm C, and given weight 1. Its
//!   metrics are not sent; extras (control variates) are refused, since they would leave
//!   un-noised.
//! - **Server, central mode** (`on_aggregate`, the default): the fixed-denominator estimator
//!   sum_k clip(delta_k) / D, plus Gaussian noise N(0, (z C / D)^2) on every coordinate.
//!   - D is the expected cohort: q N under Poisson sampling (`[sampling] scheme = "poisson"`),
//!     m under the fixed-size uniform draw (`per_round = m`).
//!   - A round whose Poisson cohort is empty is noised too.
//! - **Local mode** (`mode = "local"`): each client adds N(0, (z C)^2) to its clipped update
//!   itself, and the server averages as usual.
//! - **With a compressor** (issue 11), put it after this stage: compressing the clipped (and,
//!   in local mode, noised) update is post-processing. In central mode the server clips every
//!   decoded update to C again before the noise, since a compressor may grow the norm.
//!
//! Accounting (`fedkit-privacy`, RDP) runs every round and the run logs `epsilon` at `delta`:
//! - Poisson sampling: add/remove-one users; the sum's sensitivity is C (noise multiplier z).
//! - Fixed-size cohorts: accounted as sampling without replacement with replace-one users, as
//!   dp-accounting's `SampledWithoutReplacementDpEvent`. Replacing a user moves the clipped sum
//!   by up to 2C, so the accountant sees noise multiplier z / 2.
//! - Local mode: each participation is a Gaussian mechanism of sensitivity 2C (a user's data
//!   replaced) on that user's own release, with no amplification by sampling, composed over the
//!   rounds run so far (an upper bound on that user's participations).
//!
//! The guarantee covers the sequence of global models. The stage refuses what breaks its
//! sensitivity:
//! - any aggregator but `mean` (`aggregator.use`);
//! - an algorithm whose clients send extras.
//!
//! Departures and limits:
//! - By default the noise comes from the run seed (stream `dp_noise`), so simulations are
//!   reproducible. That is simulation only: whoever knows the seed can subtract the noise.
//!   `noise_source = "os"` draws it from the operating system's CSPRNG, as a deployment must.
//! - `epsilon` counts the rounds the engine ran, not rounds skipped by failures.
//!
//! Parameters (the paper's symbols): `clip` (S, the clipping bound C > 0, default 1.0),
//! `noise_multiplier` (z > 0, the noise std is z C; default 1.0), `delta` (the delta at which
//! `epsilon` is reported; default 0 = N^-1.1 for N clients), `mode` (`central` or `local`),
//! `noise_source` (`seed`, the default, or `os`).
//!
//! ```toml
//! [sampling]
//! scheme = "poisson"
//! rate = 0.1
//!
//! [[pipeline]]
//! use = "dp_fixed_clip"
//! clip = 1.0
//! noise_multiplier = 1.0
//! delta = 0.0
//! mode = "central"
//! noise_source = "seed"
//! ```

use fedkit_core::{Aggregate, ClientCtx, Error, Extras, Result, RoundCtx, RunInfo, Stage, Update};
use serde::{Deserialize, Serialize};

use super::accounting::{DpAccounting, Noise, NoiseSource, add_noise, clip_update};

/// Where the noise is added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// On the aggregate, by the server.
    #[default]
    Central,
    /// On each update, by its client.
    Local,
}

const NAME: &str = "dp_fixed_clip";

/// DP-FedAvg with a fixed clipping bound.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpFixedClip {
    pub clip: f64,
    pub noise_multiplier: f64,
    pub delta: f64,
    pub mode: Mode,
    pub noise_source: NoiseSource,
    #[serde(skip)]
    dp: DpAccounting,
}

impl Default for DpFixedClip {
    /// C = 1, z = 1, delta = N^-1.1, central.
    fn default() -> Self {
        DpFixedClip {
            clip: 1.0,
            noise_multiplier: 1.0,
            delta: 0.0,
            mode: Mode::Central,
            noise_source: NoiseSource::Seed,
            dp: DpAccounting::default(),
        }
    }
}

impl DpFixedClip {
    /// Check C, z and delta.
    pub fn validated(self) -> Result<Self> {
        check_positive("clip", self.clip)?;
        check_positive("noise_multiplier", self.noise_multiplier)?;
        check_delta(self.delta)?;
        Ok(self)
    }
}

/// `key` must be a finite number > 0.
pub fn check_positive(key: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(Error::config(key, format!("must be a finite number > 0, got {v}")));
    }
    Ok(())
}

/// `delta` must be in (0, 1), or 0 for N^-1.1.
pub fn check_delta(delta: f64) -> Result<()> {
    if !(delta == 0.0 || (delta > 0.0 && delta < 1.0)) {
        return Err(Error::config("delta", format!("must be in (0, 1), or 0 for N^-1.1; got {delta}")));
    }
    Ok(())
}

impl Stage for DpFixedClip {
    fn prepare(&mut self, run: &RunInfo) -> Result<()> {
        self.dp.prepare(NAME, run, self.noise_multiplier, self.delta, self.mode == Mode::Local)
    }

    fn on_update(&self, cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        clip_update(NAME, u, self.clip)?;
        if self.mode == Mode::Local {
            let mut noise = Noise::new(self.noise_source, cx.rng("dp_noise"))?;
            add_noise(u.delta.as_mut_slice(), self.noise_multiplier * self.clip, &mut noise);
        }
        Ok(())
    }

    fn on_cohort(&mut self, _r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        if self.mode == Mode::Central {
            super::accounting::reclip(us, self.clip);
        }
        Ok(())
    }

    fn on_aggregate(&mut self, r: &RoundCtx, a: &mut Aggregate) -> Result<()> {
        if self.mode == Mode::Central {
            let std = self.noise_multiplier * self.clip / self.dp.denominator(NAME)?;
            self.dp.noise_mean(NAME, r, a, std, self.noise_source)?;
        }
        let eps = self.dp.account(NAME, r)?;
        a.metrics.insert("epsilon".into(), eps);
        Ok(())
    }

    fn noises_every_round(&self) -> bool {
        self.mode == Mode::Central
    }

    fn state(&self) -> Result<Vec<u8>> {
        Ok(self.dp.state())
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.dp.load_state(NAME, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::cx;
    use crate::defenses::testing::{ctx_with, update};
    use fedkit_core::{CohortSampling, Extra, Metrics, Weighting};
    use fedkit_privacy::{Mechanism, Orders, Sampling, Series};

    fn run(sampling: CohortSampling, aggregator: &str) -> RunInfo {
        RunInfo {
            population: 1000,
            sampling,
            rounds: 10,
            algorithm: "fedavg".into(),
            aggregator: aggregator.into(),
            local_step: "plain".into(),
        }
    }

    fn prepared(z: f64, mode: Mode, sampling: CohortSampling) -> DpFixedClip {
        let mut s = DpFixedClip { clip: 1.0, noise_multiplier: z, delta: 1e-5, mode, ..DpFixedClip::default() };
        s.prepare(&run(sampling, "mean")).unwrap();
        s
    }

    fn mean_of(us: &[Update]) -> Aggregate {
        let d = us.len() as f32;
        let v: Vec<f32> =
            (0..us[0].delta.len()).map(|j| us.iter().map(|u| u.delta.as_slice()[j]).sum::<f32>() / d).collect();
        Aggregate {
            delta: update(0, &v, 1.0).delta,
            weight: d,
            extras: Extras::default(),
            accepted: us.iter().map(|u| u.client).collect(),
            metrics: Metrics::new(),
            weighting: Weighting::UpdateWeights,
        }
    }

    #[test]
    fn clients_clip_send_weight_one_and_no_metrics_and_extras_are_refused() {
        let s = prepared(1.0, Mode::Central, CohortSampling::Poisson { rate: 0.01 });
        let e = Extras::default();
        let mut u = update(3, &[3.0, 4.0], 250.0);
        u.metrics.insert("loss".into(), 0.7);
        s.on_update(&cx(1, 3, &e), &mut u, &mut Extras::default()).unwrap();
        assert_eq!(u.delta.as_slice(), &[0.6, 0.8], "clipped to norm C = 1");
        assert_eq!((u.weight, u.metrics.len()), (1.0, 0));
        let mut small = update(4, &[0.3, 0.4], 1.0);
        s.on_update(&cx(1, 4, &e), &mut small, &mut Extras::default()).unwrap();
        assert_eq!(small.delta.as_slice(), &[0.3, 0.4], "inside the ball: untouched");
        let mut cv = update(5, &[0.1], 1.0);
        cv.extras.insert("control", Extra::Scalar(1.0));
        let err = s.on_update(&cx(1, 5, &e), &mut cv, &mut Extras::default()).unwrap_err().to_string();
        assert!(err.contains("algorithm.use") && err.contains("control"), "{err}");
    }

    #[test]
    fn the_server_averages_over_the_fixed_denominator_and_adds_noise_of_z_c_over_d() {
        // Poisson, q = 0.01 of 1000: D = 10. Three updates arrive.
        let mut s = prepared(1e-12, Mode::Central, CohortSampling::Poisson { rate: 0.01 });
        let us = [update(0, &[1.0, 0.0], 1.0), update(1, &[0.0, 1.0], 1.0), update(2, &[1.0, 1.0], 1.0)];
        let mut a = mean_of(&us);
        s.on_aggregate(&ctx_with(1, &[]), &mut a).unwrap();
        let got = a.delta.as_slice();
        assert!((got[0] - 0.2).abs() < 1e-6 && (got[1] - 0.2).abs() < 1e-6, "sum / D: {got:?}");
        // The noise: z = 2, C = 1, D = 10 gives std 0.2 per coordinate.
        let mut s = prepared(2.0, Mode::Central, CohortSampling::Poisson { rate: 0.01 });
        let d = 20_000;
        let zeros = vec![0.0f32; d];
        let mut a = mean_of(&[update(0, &zeros, 1.0)]);
        s.on_aggregate(&ctx_with(1, &[]), &mut a).unwrap();
        let v = a.delta.as_slice();
        let sd = (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / d as f64).sqrt();
        assert!((sd - 0.2).abs() < 0.005, "noise std {sd}");
        // An empty cohort is noised too.
        assert!(s.noises_every_round());
    }

    #[test]
    fn the_logged_epsilon_is_the_accountants_for_the_sampling() {
        for (sampling, q, sigma, how) in [
            (CohortSampling::Poisson { rate: 0.01 }, 0.01, 1.2, Sampling::Poisson),
            // Fixed-size 10 of 1000: without replacement, sensitivity 2C, so z / 2.
            (CohortSampling::FixedSize { per_round: 10 }, 0.01, 0.6, Sampling::WithoutReplacement),
        ] {
            let mut s = prepared(1.2, Mode::Central, sampling);
            let mut eps = 0.0;
            for round in 1..=5 {
                let mut a = mean_of(&[update(0, &[0.5], 1.0)]);
                s.on_aggregate(&ctx_with(round, &[]), &mut a).unwrap();
                eps = a.metrics["epsilon"];
            }
            let m = Mechanism { q, sigma, steps: 5, sampling: how };
            let want = fedkit_privacy::epsilon(&m, 1e-5, &Orders::dp_accounting(), Series::Magnitudes).unwrap().0;
            assert_eq!(eps, want, "{sampling:?}");
            // The accountant survives a checkpoint.
            let mut restored = DpFixedClip { dp: DpAccounting::default(), ..s.clone() };
            restored.load_state(&s.state().unwrap()).unwrap();
            restored.prepare(&run(sampling, "mean")).unwrap();
            let mut a = mean_of(&[update(0, &[0.5], 1.0)]);
            restored.on_aggregate(&ctx_with(6, &[]), &mut a).unwrap();
            let m6 = Mechanism { steps: 6, ..m };
            let want6 = fedkit_privacy::epsilon(&m6, 1e-5, &Orders::dp_accounting(), Series::Magnitudes).unwrap().0;
            assert!((a.metrics["epsilon"] - want6).abs() < 1e-12 * want6);
        }
    }

    #[test]
    fn local_mode_noises_each_update_and_accounts_without_amplification() {
        let mut s = prepared(1.0, Mode::Local, CohortSampling::Poisson { rate: 0.01 });
        let e = Extras::default();
        let mut u = update(1, &[0.0; 5000], 1.0);
        s.on_update(&cx(1, 1, &e), &mut u, &mut Extras::default()).unwrap();
        let sd = (u.delta.as_slice().iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / 5000.0).sqrt();
        assert!((sd - 1.0).abs() < 0.03, "z C = 1: {sd}");
        let mut a = mean_of(&[u]);
        let before = a.delta.as_slice().to_vec();
        s.on_aggregate(&ctx_with(3, &[]), &mut a).unwrap();
        assert_eq!(a.delta.as_slice(), before.as_slice(), "the server adds nothing");
        let m = Mechanism { q: 1.0, sigma: 0.5, steps: 3, sampling: Sampling::Poisson };
        let want = fedkit_privacy::epsilon(&m, 1e-5, &Orders::dp_accounting(), Series::Magnitudes).unwrap().0;
        assert_eq!(a.metrics["epsilon"], want);
        assert!(!s.noises_every_round());
    }

    #[test]
    fn bad_settings_name_their_key() {
        let key = |e: Error| match e {
            Error::Config { key, .. } => key,
            other => panic!("{other}"),
        };
        let base = DpFixedClip::default();
        assert_eq!(key(DpFixedClip { clip: 0.0, ..base.clone() }.validated().unwrap_err()), "clip");
        assert_eq!(
            key(DpFixedClip { noise_multiplier: -1.0, ..base.clone() }.validated().unwrap_err()),
            "noise_multiplier"
        );
        assert_eq!(key(DpFixedClip { delta: 1.0, ..base.clone() }.validated().unwrap_err()), "delta");
        let mut s = base;
        let err = s.prepare(&run(CohortSampling::Poisson { rate: 0.1 }, "krum")).unwrap_err();
        assert_eq!(key(err), "aggregator.use");
    }
}
