//! FedBE: Chen, Chao, "FedBE: Making Bayesian Model Ensemble Applicable to Federated
//! Learning", ICLR 2021 (Algorithm 1).
//!
//! Clients train as in FedAvg. The server fits a distribution over the round's client models
//! w_1..w_N (weighted as the aggregator weighted them, alpha_i):
//! - `gaussian`: mean w_bar = sum_i alpha_i w_i (FedAvg's model), diagonal covariance
//!   sigma^2 = sum_i alpha_i (w_i - w_bar)^2;
//! - `dirichlet`: w = sum_i gamma_i w_i with gamma ~ Dir(`concentration` 1).
//!
//! It samples M models from it (streams (seed, "fedbe_sample", round, m)) and builds the Bayesian
//! model ensemble {w_bar} + {w_i} + {M samples}, whose teacher on a batch is the average of the
//! members' softmax outputs (Bayesian model averaging). The ensemble is distilled into w_bar on
//! the server's unlabeled data (the training samples no client holds, `data.unlabeled_share` of
//! them, as FedDF) with
//! stochastic weight averaging: `steps` Adam steps (lr `lr`) on the KL to the ensemble, and the
//! result is the average of the student's iterates every `swa_every` steps over the second half.
//! The paper uses SGD with a cyclic SWA schedule; Adam with plain iterate averaging here shares
//! FedDF's loop. Round metrics: `feddf_kl_start`, `feddf_kl_end` (the distillation's first and
//! last ten steps).
//!
//! Parameters: `samples` (M, default 10 as the paper), `distribution` (`gaussian` | `dirichlet`,
//! default `gaussian`), `concentration` (the Dirichlet's, default 1), `steps` (default 200),
//! `batch_size` (default 64), `lr` (default 1e-3), `swa_every` (default 10).
//!
//! ```toml
//! [algorithm]
//! use = "fedbe"
//! samples = 10
//! distribution = "gaussian"
//! concentration = 1.0
//! steps = 200
//! batch_size = 64
//! lr = 0.001
//! swa_every = 10
//! ```

use fedkit_core::{
    Aggregate, Algorithm, Batch, Error, Metrics, Mode, Model, Outputs, Params, Result, RngStream, RoundCtx, ServerView,
    Weighting,
};
use serde::{Deserialize, Serialize};

use super::feddf::{FedDf, distil_with, distillation_inputs, softmax_rows};

/// The distribution FedBE fits over the client models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    Gaussian,
    Dirichlet,
}

/// FedBE's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedBe {
    /// M, the global models sampled per round.
    pub samples: usize,
    pub distribution: Distribution,
    /// The Dirichlet's concentration.
    pub concentration: f64,
    /// Distillation steps per round.
    pub steps: usize,
    /// Unlabeled samples per distillation step.
    pub batch_size: usize,
    /// Adam's learning rate for the distillation.
    pub lr: f64,
    /// Average the student's iterates every this many steps over the second half.
    pub swa_every: usize,
}

impl Default for FedBe {
    fn default() -> Self {
        FedBe {
            samples: 10,
            distribution: Distribution::Gaussian,
            concentration: 1.0,
            steps: 200,
            batch_size: 64,
            lr: 1e-3,
            swa_every: 10,
        }
    }
}

impl FedBe {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        FedDf { steps: self.steps, batch_size: self.batch_size, lr: self.lr, temperature: 1.0 }.validated()?;
        if !(self.concentration > 0.0 && self.concentration.is_finite()) {
            return Err(Error::config(
                "concentration",
                format!("must be a finite number > 0, got {}", self.concentration),
            ));
        }
        if self.swa_every == 0 {
            return Err(Error::config("swa_every", "must be at least 1"));
        }
        Ok(self)
    }

    /// The M sampled global models of `round` around the client models `ws` weighted by
    /// `alpha` (summing to 1), with mean `mean`.
    pub fn sample(&self, ws: &[Params], alpha: &[f64], mean: &Params, seed: u64, round: u32) -> Vec<Params> {
        let n = mean.len();
        let var: Vec<f64> = match self.distribution {
            Distribution::Gaussian => {
                let mut v = vec![0.0f64; n];
                for (w, a) in ws.iter().zip(alpha) {
                    v.iter_mut().zip(w.as_slice().iter().zip(mean.as_slice())).for_each(|(v, (x, m))| {
                        *v += a * (*x as f64 - *m as f64).powi(2);
                    });
                }
                v
            }
            Distribution::Dirichlet => Vec::new(),
        };
        (0..self.samples)
            .map(|k| {
                let mut rng = RngStream::derive(seed, "fedbe_sample", round as u64, k as u64);
                let mut p = mean.clone();
                match self.distribution {
                    Distribution::Gaussian => p.as_mut_slice().iter_mut().zip(&var).for_each(|(p, v)| {
                        *p = (*p as f64 + v.sqrt() * rng.normal()) as f32;
                    }),
                    Distribution::Dirichlet => {
                        let gamma = rng.dirichlet(self.concentration, ws.len());
                        let mut acc = vec![0.0f64; n];
                        for (w, g) in ws.iter().zip(&gamma) {
                            acc.iter_mut().zip(w.as_slice()).for_each(|(a, &x)| *a += g * x as f64);
                        }
                        p.as_mut_slice().iter_mut().zip(&acc).for_each(|(p, a)| *p = *a as f32);
                    }
                }
                p
            })
            .collect()
    }
}

/// The Bayesian model average of a batch: the mean of the members' softmax outputs.
fn ensemble(m: &mut dyn Model, members: &[&Params], batch: &Batch) -> Result<(Vec<f64>, usize)> {
    let (mut out, mut sum) = (Outputs::default(), Vec::new());
    for p in members {
        m.forward(p, batch, Mode::Eval, &mut out)?;
        let q = softmax_rows(&out.logits, out.classes, 1.0);
        sum.resize(q.len(), 0.0);
        sum.iter_mut().zip(&q).for_each(|(s, q)| *s += q);
    }
    sum.iter_mut().for_each(|s| *s /= members.len() as f64);
    Ok((sum, out.classes))
}

impl Algorithm for FedBe {
    type Client = ();
    type Server = ();

    fn reads_updates(&self) -> bool {
        true
    }

    fn combines_updates_itself(&self) -> bool {
        true
    }

    fn needs_unlabeled_data(&self) -> bool {
        self.steps > 0
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        _s: &mut (),
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        w.axpy(1.0, &agg.delta);
        let mut metrics = Metrics::new();
        let Some((data, clients)) = distillation_inputs("fedbe", self.steps, r, view)? else { return Ok(metrics) };
        let weights: Vec<f64> = match agg.weighting {
            Weighting::UpdateWeights => view.updates.iter().map(|u| u.weight as f64).collect(),
            _ => vec![1.0; clients.len()],
        };
        let total: f64 = weights.iter().sum();
        let alpha: Vec<f64> = weights.iter().map(|x| if total > 0.0 { x / total } else { 0.0 }).collect();
        let samples = self.sample(&clients, &alpha, w, r.seed, r.round);
        let mean = w.clone();
        let members: Vec<&Params> = std::iter::once(&mean).chain(&clients).chain(&samples).collect();
        let cfg = FedDf { steps: self.steps, batch_size: self.batch_size, lr: self.lr, temperature: 1.0 };
        let mut teach = |m: &mut dyn Model, b: &Batch| ensemble(m, &members, b);
        let (start, end) =
            distil_with(&mut *view.model, w, data, &cfg, Some(self.swa_every), &mut r.rng("fedbe_batch"), &mut teach)?;
        metrics.insert("feddf_kl_start".into(), start);
        metrics.insert("feddf_kl_end".into(), end);
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::SoftmaxReg;

    fn clients() -> (Vec<Params>, Params) {
        let m = SoftmaxReg::new(2, 3);
        let a = m.params(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], &[0.0; 3]);
        let b = m.params(&[3.0, 0.0, 0.0, 0.0, 0.0, 2.0], &[0.0; 3]);
        let mean = m.params(&[2.0, 0.0, 0.0, 0.0, 0.0, 1.0], &[0.0; 3]);
        (vec![a, b], mean)
    }

    // Gaussian samples have the clients' weighted mean and variance, coordinate by coordinate.
    #[test]
    fn gaussian_samples_match_the_clients_moments() {
        let (ws, mean) = clients();
        let algo = FedBe { samples: 4000, ..FedBe::default() };
        let s = algo.sample(&ws, &[0.5, 0.5], &mean, 3, 1);
        for j in [0, 5, 1] {
            let v: Vec<f64> = s.iter().map(|p| p.as_slice()[j] as f64).collect();
            let mu = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / v.len() as f64;
            let want = if j == 1 { 0.0 } else { 1.0 };
            assert!((mu - mean.as_slice()[j] as f64).abs() < 0.05, "coordinate {j}: mean {mu}");
            assert!((var - want).abs() < 0.08, "coordinate {j}: variance {var}, want {want}");
        }
    }

    // Dirichlet samples are convex combinations: every coordinate lies between the clients'.
    #[test]
    fn dirichlet_samples_lie_between_the_clients() {
        let (ws, mean) = clients();
        let algo = FedBe { samples: 50, distribution: Distribution::Dirichlet, ..FedBe::default() };
        for p in algo.sample(&ws, &[0.5, 0.5], &mean, 3, 1) {
            let x = p.as_slice();
            let within = |v: f32, lo: f32, hi: f32| v >= lo - 1e-5 && v <= hi + 1e-5;
            assert!(within(x[0], 1.0, 3.0) && within(x[5], 0.0, 2.0) && x[1] == 0.0, "{x:?}");
        }
    }

    // With a single client the distribution collapses onto it: every sample is that client.
    #[test]
    fn one_client_gives_samples_equal_to_it() {
        let (ws, _) = clients();
        let one = &ws[..1];
        for d in [Distribution::Gaussian, Distribution::Dirichlet] {
            let algo = FedBe { samples: 3, distribution: d, ..FedBe::default() };
            for p in algo.sample(one, &[1.0], &one[0], 3, 1) {
                assert_eq!(p, one[0], "{d:?}");
            }
        }
    }

    #[test]
    fn the_ensemble_averages_probabilities() {
        let mut m = SoftmaxReg::new(2, 3);
        let (a, b) = (m.params(&[0.0; 6], &[4.0, 0.0, 0.0]), m.params(&[0.0; 6], &[0.0, 4.0, 0.0]));
        let batch = Batch { x: vec![0.0, 0.0], y: vec![0], feature_shape: vec![2], classes: 3, targets: Vec::new() };
        let (p, _) = ensemble(&mut m, &[&a, &b], &batch).unwrap();
        let e4 = 4f64.exp();
        let (hi, lo) = (e4 / (e4 + 2.0), 1.0 / (e4 + 2.0));
        let want = [(hi + lo) / 2.0, (hi + lo) / 2.0, lo];
        p.iter().zip(want).for_each(|(x, y)| assert!((x - y).abs() < 1e-9, "{p:?}"));
    }
}
