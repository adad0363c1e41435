//! `dp_sgd`: sample-level DP-SGD in every client's local training, Abadi, Chu, Goodfellow,
//! McMahan, Mironov, Talwar, Zhang, "Deep Learning with Differential Privacy", CCS 2016 (the
//! algorithm of Opacus).
//!
//! Each local step of client i (n_i samples, expected batch size L = `client.batch_size`):
//! 1. Poisson batch: each sample joins independently with probability q_i = L / n_i (so a
//!    batch may be empty); an epoch is ceil(n_i / L) such steps.
//! 2. Per-example gradients g_k, each clipped to L2 norm C: g_k min(1, C / ||g_k||).
//! 3. The sum plus Gaussian noise N(0, sigma^2 C^2) on every trained coordinate, divided by the
//!    expected batch size L (a fixed denominator, as the accountant assumes).
//! 4. The optimiser step (`client.optimizer`) on that direction; the algorithm's hook and the
//!    stages' training hooks run after it, as for every local step rule.
//!
//! Per-example gradients are the model's own gradient on one-sample batches, so every model
//! and loss works; a model with batch norm is refused (its per-example gradients are not
//! defined). Clients send nothing from their data in the clear: update metrics are dropped and
//! extras (control variates) refused.
//!
//! Accounting: each client's steps form a Poisson-subsampled Gaussian mechanism over its own
//! samples (add/remove one example), composed over every step it ever took (RDP, Mironov et al.
//! 2019; `fedkit-privacy`). The run logs `sample_epsilon`, the largest epsilon over the clients
//! at their delta (`delta`, or n_i^-1.1 when 0). This replaces `[local]` for every client:
//! combine it with `use = "plain"` only. It composes with the user-level stages
//! (`dp_fixed_clip`) and with secure aggregation.
//!
//! Noise and batches come from the run seed (streams `dp_sgd_noise` and the client's training
//! stream; simulation only: whoever knows the seed knows both) or, with `noise_source = "os"`,
//! from the operating system's CSPRNG.
//!
//! Limits: a client's sample count n_i is public (it sets q_i and the step count, as in Opacus).
//! Losses built from the client's whole data (`logit_adjusted` with `prior = "client"`) couple
//! the examples, so one example moves every per-example gradient and the sensitivity exceeds C:
//! use a data-independent loss.
//!
//! Parameters (the paper's symbols): `clip` (C > 0, default 1.0), `noise_multiplier` (sigma > 0,
//! default 1.0), `delta` (default 0 = n_i^-1.1), `noise_source` (`seed` or `os`), `accountant`
//! (`rdp`, the default, or `pld`: the tighter privacy-loss-distribution accountant,
//! `fedkit_privacy::pld`; its values are cached by sampling rate and step count).
//!
//! ```toml
//! [client]
//! batch_size = 32
//!
//! [[pipeline]]
//! use = "dp_sgd"
//! clip = 1.0
//! noise_multiplier = 1.0
//! delta = 0.0
//! noise_source = "seed"
//! accountant = "rdp"
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;

use fedkit_core::{
    Aggregate, Batch, ClientCtx, ClientId, Error, Extras, LocalStep, Model, ParamKind, Params, Result, RngStream,
    RoundCtx, RunInfo, Stage, StepCtx, Update,
};
use fedkit_privacy::{Mechanism, Orders, Sampling, Series};
use serde::{Deserialize, Serialize};

use super::accounting::{Noise, NoiseSource};
use super::dp_fixed_clip::{check_delta, check_positive};

const NAME: &str = "dp_sgd";

/// What one client has spent: its sampling rate and every DP-SGD step it took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Spent {
    samples: usize,
    q: f64,
    steps: u64,
    epsilon: f64,
    /// The steps `epsilon` was computed for.
    accounted: u64,
}

/// Which accountant computes `sample_epsilon`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accountant {
    #[default]
    Rdp,
    Pld,
}

/// Sample-level DP-SGD.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpSgd {
    pub clip: f64,
    pub noise_multiplier: f64,
    pub delta: f64,
    pub noise_source: NoiseSource,
    pub accountant: Accountant,
    #[serde(skip)]
    ledger: Mutex<BTreeMap<ClientId, Spent>>,
    /// PLD epsilons by (q bits, steps, delta bits).
    #[serde(skip)]
    pld_cache: BTreeMap<(u64, u64, u64), f64>,
    #[serde(skip)]
    local_rule: String,
}

impl Default for DpSgd {
    /// C = 1, sigma = 1, delta = n_i^-1.1, seeded noise.
    fn default() -> Self {
        DpSgd {
            clip: 1.0,
            noise_multiplier: 1.0,
            delta: 0.0,
            noise_source: NoiseSource::Seed,
            accountant: Accountant::Rdp,
            ledger: Mutex::new(BTreeMap::new()),
            pld_cache: BTreeMap::new(),
            local_rule: String::new(),
        }
    }
}

impl DpSgd {
    /// Check C, sigma and delta.
    pub fn validated(self) -> Result<Self> {
        check_positive("clip", self.clip)?;
        check_positive("noise_multiplier", self.noise_multiplier)?;
        check_delta(self.delta)?;
        Ok(self)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, BTreeMap<ClientId, Spent>> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One client's DP-SGD step rule.
struct DpSgdStep<'a> {
    stage: &'a DpSgd,
    client: ClientId,
    noise: Mutex<Noise>,
    /// Under `noise_source = "os"`, the batches are drawn from the OS too: the server, which
    /// knows the seed, must not know who is in a batch.
    sampler: Option<Mutex<Noise>>,
}

impl LocalStep for DpSgdStep<'_> {
    fn epoch_batches(&self, n: usize, batch_size: usize, rng: &mut RngStream) -> Option<Vec<Vec<usize>>> {
        let q = (batch_size as f64 / n.max(1) as f64).min(1.0);
        let mut ledger = self.stage.ledger();
        let spent = ledger.entry(self.client).or_default();
        spent.samples = n;
        spent.q = q;
        drop(ledger);
        let steps = n.div_ceil(batch_size.max(1)).max(1);
        Some(match &self.sampler {
            Some(s) => {
                let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                (0..steps).map(|_| (0..n).filter(|_| s.uniform() < q).collect()).collect()
            }
            None => (0..steps).map(|_| (0..n).filter(|_| rng.uniform() < q).collect()).collect(),
        })
    }

    fn grad(
        &self,
        sc: &StepCtx,
        model: &mut dyn Model,
        params: &mut Params,
        batch: &mut Batch,
        grad: &mut Params,
        rng: &mut RngStream,
    ) -> Result<f32> {
        let _ = sc;
        let (c, z) = (self.stage.clip, self.stage.noise_multiplier);
        let m = batch.y.len();
        grad.as_mut_slice().fill(0.0);
        let mut one = Batch::default();
        let mut g = params.zeros_like();
        let mut loss = 0.0f64;
        for k in 0..m {
            batch.copy_sample(k, &mut one);
            loss += model.loss_grad(params, &one, &mut g, rng)? as f64;
            let norm = crate::local_steps::trainable_norm(&g);
            let s = if norm > c { (c / norm) as f32 } else { 1.0 };
            grad.as_mut_slice().iter_mut().zip(g.as_slice()).for_each(|(a, b)| *a += s * b);
        }
        let expected = self.stage.ledger().get(&self.client).map_or(1.0, |s| (s.q * s.samples as f64).max(1.0));
        let layout = params.layout().clone();
        let mut noise = self.noise.lock().unwrap_or_else(|e| e.into_inner());
        let v = grad.as_mut_slice();
        for r in layout.trainable_ranges() {
            v[r].iter_mut().for_each(|x| *x = ((*x as f64 + z * c * noise.normal()) / expected) as f32);
        }
        self.stage.ledger().entry(self.client).or_default().steps += 1;
        Ok(if m > 0 { (loss / m as f64) as f32 } else { 0.0 })
    }
}

impl Stage for DpSgd {
    fn prepare(&mut self, run: &RunInfo) -> Result<()> {
        self.local_rule.clone_from(&run.local_step);
        if !run.local_step.is_empty() && run.local_step != "plain" {
            return Err(Error::config(
                "local.use",
                format!("{NAME} replaces the local step rule; `{}` would be ignored: use \"plain\"", run.local_step),
            ));
        }
        Ok(())
    }

    fn local_step<'a>(
        &'a self,
        cx: &ClientCtx<'a>,
        _inner: &'a dyn LocalStep,
    ) -> Result<Option<Box<dyn LocalStep + 'a>>> {
        if cx.global.layout().entries().iter().any(|e| e.kind == ParamKind::Buffer) {
            return Err(Error::config(
                "model.norm",
                format!("{NAME} needs per-example gradients, which batch norm does not have: use norm = \"none\""),
            ));
        }
        let noise = Noise::new(self.noise_source, cx.rng("dp_sgd_noise"))?;
        let sampler = match self.noise_source {
            NoiseSource::Os => Some(Mutex::new(Noise::new(NoiseSource::Os, cx.rng("dp_sgd_batches"))?)),
            NoiseSource::Seed => None,
        };
        Ok(Some(Box::new(DpSgdStep { stage: self, client: cx.client, noise: Mutex::new(noise), sampler })))
    }

    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        if let Some(name) = u.extras.0.keys().next() {
            return Err(Error::config(
                "algorithm.use",
                format!(
                    "clients of this algorithm send `{name}` beside their update, which {NAME} does not cover: use an algorithm without client extras"
                ),
            ));
        }
        let steps = u.metrics.get("steps").copied();
        u.metrics.clear();
        // The step count is public (the plan fixes it), so FedNova-like rules keep it.
        if let Some(s) = steps {
            u.metrics.insert("steps".into(), s);
        }
        Ok(())
    }

    fn on_aggregate(&mut self, _r: &RoundCtx, a: &mut Aggregate) -> Result<()> {
        let (z, delta, accountant) = (self.noise_multiplier, self.delta, self.accountant);
        let orders = Orders::dp_accounting();
        let err = |e: fedkit_privacy::PrivacyError| Error::Method(format!("{NAME}: {e}"));
        let mut worst = 0.0f64;
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        for spent in ledger.values_mut() {
            if spent.steps > spent.accounted {
                let d = if delta > 0.0 { delta } else { (spent.samples.max(2) as f64).powf(-1.1) };
                spent.epsilon = match accountant {
                    Accountant::Rdp => {
                        let m = Mechanism { q: spent.q, sigma: z, steps: spent.steps, sampling: Sampling::Poisson };
                        fedkit_privacy::epsilon(&m, d, &orders, Series::Magnitudes).map_err(err)?.0
                    }
                    Accountant::Pld => {
                        let key = (spent.q.to_bits(), spent.steps, d.to_bits());
                        match self.pld_cache.get(&key) {
                            Some(&e) => e,
                            None => {
                                let e = fedkit_privacy::pld::epsilon(spent.q, z, spent.steps, d).map_err(err)?;
                                self.pld_cache.insert(key, e);
                                e
                            }
                        }
                    }
                };
                spent.accounted = spent.steps;
            }
            worst = worst.max(spent.epsilon);
        }
        a.metrics.insert("sample_epsilon".into(), worst);
        Ok(())
    }

    fn state(&self) -> Result<Vec<u8>> {
        fedkit_core::codec::to_bytes(&*self.ledger(), "{NAME}")
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            *self.ledger() = fedkit_core::codec::from_bytes(bytes, "{NAME}: a checkpoint that is not its ledger")?;
        }
        Ok(())
    }
}
