//! Shared by the DP stages: what a run's sampling means for the mechanism (the fixed
//! denominator, the accountant's sampling and noise multiplier), the per-round accounting, and
//! the Gaussian noise on an aggregate. Not a registered method.
//!
//! - Poisson cohorts (rate q): add/remove-one users; the clipped sum's sensitivity is C, the
//!   denominator q N, the accountant's noise multiplier z.
//! - Fixed-size cohorts (m of N): replace-one users, accounted as sampling without replacement
//!   at q = m / N. Replacing a user moves the clipped sum by up to 2C, so the accountant sees
//!   z / 2. The denominator is m.
//! - Local noise: each release is its user's own Gaussian mechanism of sensitivity 2C, with no
//!   amplification by sampling (the accountant sees q = 1 and z / 2 for every round so far).

use fedkit_core::{Aggregate, CohortSampling, Error, Result, RngStream, RoundCtx, RunInfo};
use fedkit_privacy::{Mechanism, Orders, RdpAccountant, Sampling, Series};
use serde::{Deserialize, Serialize};

/// Where the DP noise comes from (`noise_source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSource {
    /// The run seed's stream `dp_noise`: reproducible, simulation only (whoever knows the seed
    /// can subtract the noise).
    #[default]
    Seed,
    /// The operating system's CSPRNG: what a deployment must use; runs are not reproducible.
    Os,
}

/// Gaussian draws from the chosen source.
pub enum Noise {
    Seed(RngStream),
    Os(Box<fedkit_privacy::noise::OsGaussian>),
}

impl Noise {
    /// The source for a round (`seeded` gives the stream to use under [`NoiseSource::Seed`]).
    pub fn new(source: NoiseSource, seeded: RngStream) -> Result<Self> {
        Ok(match source {
            NoiseSource::Seed => Noise::Seed(seeded),
            NoiseSource::Os => {
                let g = fedkit_privacy::noise::OsGaussian::new().map_err(|e| Error::config(e.field, e.message))?;
                Noise::Os(Box::new(g))
            }
        })
    }
    /// One N(0, 1) draw.
    pub fn normal(&mut self) -> f64 {
        match self {
            Noise::Seed(r) => r.normal(),
            Noise::Os(g) => g.normal(),
        }
    }
    /// One uniform draw in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        match self {
            Noise::Seed(r) => r.uniform(),
            Noise::Os(g) => g.uniform(),
        }
    }
}

/// A run's DP accounting, set up by [`DpAccounting::prepare`].
#[derive(Clone, Debug, Default)]
pub struct DpAccounting {
    plan: Option<Plan>,
    accountant: Option<RdpAccountant>,
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    denominator: f64,
    q: f64,
    sigma: f64,
    sampling: Sampling,
    delta: f64,
    local: bool,
}

fn dp_error(stage: &str) -> impl Fn(fedkit_privacy::PrivacyError) -> Error + '_ {
    move |e| Error::Method(format!("{stage}: {e}"))
}

impl DpAccounting {
    /// Check the run (the mean aggregator) and derive the plan for noise multiplier `z`,
    /// `delta` (0: N^-1.1), central or `local` noise.
    pub fn prepare(&mut self, stage: &str, run: &RunInfo, z: f64, delta: f64, local: bool) -> Result<()> {
        if run.aggregator != "mean" {
            return Err(Error::config(
                "aggregator.use",
                format!(
                    "{stage} calibrates its noise to the mean's sensitivity; aggregator `{}` has another: use \"mean\"",
                    run.aggregator
                ),
            ));
        }
        let n = run.population as f64;
        let delta = if delta > 0.0 { delta } else { n.powf(-1.1) };
        let (denominator, q, sampling) = match run.sampling {
            CohortSampling::Poisson { rate } => (rate * n, rate, Sampling::Poisson),
            CohortSampling::FixedSize { per_round } => {
                let m = per_round.min(run.population) as f64;
                (m, m / n, Sampling::WithoutReplacement)
            }
        };
        if !(denominator > 0.0) {
            return Err(Error::config("sampling.rate", "the expected cohort is empty: nothing would be averaged"));
        }
        let sigma = if local || sampling == Sampling::WithoutReplacement { z / 2.0 } else { z };
        self.plan = Some(Plan { denominator, q, sigma, sampling, delta, local });
        if self.accountant.is_none() {
            self.accountant = Some(RdpAccountant::new(Orders::dp_accounting(), Series::Magnitudes));
        }
        Ok(())
    }

    fn plan(&self, stage: &str) -> Result<Plan> {
        self.plan.ok_or_else(|| Error::Method(format!("{stage}: used before the engine prepared it")))
    }

    /// The fixed denominator D: the expected cohort.
    pub fn denominator(&self, stage: &str) -> Result<f64> {
        Ok(self.plan(stage)?.denominator)
    }

    /// Turn the mean of the accepted (weight-1) updates into sum / D and add N(0, std^2) to
    /// every coordinate (from `source`; the seed's stream is `dp_noise`).
    pub fn noise_mean(
        &self,
        stage: &str,
        r: &RoundCtx,
        a: &mut Aggregate,
        std: f64,
        source: NoiseSource,
    ) -> Result<()> {
        let d = self.denominator(stage)?;
        a.delta.scale((a.accepted.len() as f64 / d) as f32);
        add_noise(a.delta.as_mut_slice(), std, &mut Noise::new(source, r.rng("dp_noise"))?);
        Ok(())
    }

    /// Account round `r` and return epsilon at the run's delta.
    pub fn account(&mut self, stage: &str, r: &RoundCtx) -> Result<f64> {
        let plan = self.plan(stage)?;
        let acc = self.accountant.as_mut().ok_or_else(|| Error::Method(format!("{stage}: no accountant")))?;
        let err = dp_error(stage);
        if plan.local {
            let m = Mechanism { q: 1.0, sigma: plan.sigma, steps: r.round as u64, sampling: Sampling::Poisson };
            return Ok(fedkit_privacy::epsilon(&m, plan.delta, &acc.orders, Series::Magnitudes).map_err(&err)?.0);
        }
        acc.compose(plan.q, plan.sigma, plan.sampling, 1).map_err(&err)?;
        Ok(acc.epsilon(plan.delta).map_err(&err)?.0)
    }

    /// The accountant's state for checkpoints.
    pub fn state(&self) -> Vec<u8> {
        let rdp = self.accountant.as_ref().map(|a| a.rdp.clone()).unwrap_or_default();
        rdp.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Restore [`DpAccounting::state`].
    pub fn load_state(&mut self, stage: &str, bytes: &[u8]) -> Result<()> {
        let mut acc = RdpAccountant::new(Orders::dp_accounting(), Series::Magnitudes);
        if !bytes.is_empty() {
            if bytes.len() != 8 * acc.rdp.len() {
                return Err(Error::Method(format!(
                    "{stage}: a checkpoint of {} bytes is not its accountant",
                    bytes.len()
                )));
            }
            for (r, b) in acc.rdp.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                *r = f64::from_le_bytes(a);
            }
        }
        self.accountant = Some(acc);
        Ok(())
    }
}

/// A client update clipped to L2 norm `clip`, with weight 1 and no metrics (nothing but the
/// update leaves the client); extras are refused. Returns whether it was inside the ball.
pub fn clip_update(stage: &str, u: &mut fedkit_core::Update, clip: f64) -> Result<bool> {
    if u.extras.0.contains_key(fedkit_core::wire::EXTRA_KEY) {
        return Err(Error::config(
            "pipeline",
            format!(
                "the update was compressed before {stage}: put the compressor after it (compression of a clipped update is post-processing)"
            ),
        ));
    }
    if let Some(name) = u.extras.0.keys().next() {
        return Err(Error::config(
            "algorithm.use",
            format!(
                "clients of this algorithm send `{name}` beside their update; {stage} would release it un-noised: use an algorithm without client extras (fedavg, fedprox, a server optimiser)"
            ),
        ));
    }
    let norm = u.delta.l2();
    if norm > clip {
        u.delta.scale((clip / norm) as f32);
    }
    u.weight = 1.0;
    u.metrics.clear();
    Ok(norm <= clip)
}

/// Server side, before the noise: clip every received update to `clip` again. A compressor
/// after the client's clip (QSGD, random-k) may have grown its norm; the sum's sensitivity must
/// stay C.
pub fn reclip(us: &mut [fedkit_core::Update], clip: f64) {
    for u in us {
        let norm = u.delta.l2();
        if norm > clip {
            u.delta.scale((clip / norm) as f32);
        }
    }
}

/// Add N(0, std^2) to every value.
pub fn add_noise(values: &mut [f32], std: f64, noise: &mut Noise) {
    let s = std as f32;
    values.iter_mut().for_each(|v| *v += s * noise.normal() as f32);
}
