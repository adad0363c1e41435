//! `fednar`: Federated optimization with Normalized Annealing Regularization, Li, Li, Tian, Ho,
//! Xing, Wang, "FedNAR: Federated Optimization with Normalized Annealing Regularization", NeurIPS
//! 2023: co-clipping of the gradient and the weight decay term.
//!
//! Weight decay lambda (`client.weight_decay`) pulls every local step towards 0, a different
//! objective from the global one, and over many local steps on heterogeneous data it makes the
//! clients drift. FedNAR bounds the norm of each whole step, gradient and weight decay together,
//! and anneals the steps over the rounds. With d = g + lambda w (g the direction after the
//! algorithm's hook: FedProx's proximal term, SCAFFOLD's correction, ...) and eta = `client.lr`:
//! - `anneal = "lr"` (default; the authors' code, FedNAR's Algorithm 1 with a decaying learning
//!   rate eta_t = eta rho^t): d <- min(1, A / ||d||) d, then the step is eta_t d, i.e.
//!   d <- rho^t min(1, A / ||d||) d. Every step shrinks by rho^t in round t, clipped or not.
//! - `anneal = "bound"`: the learning rate stays eta and only the bound anneals, ||eta d|| is
//!   clipped to eta A rho^t; steps under the bound are not shrunk.
//! Rounds count from 1. It is a plug-in: it composes with any algorithm, whose hook runs first,
//! and the optimiser (momentum, ...) then steps along d; with momentum, scaling every gradient of
//! a round by rho^t is scaling that round's learning rate. It applies the weight decay itself, so
//! the optimiser does not add it again. Norms are over trainable entries.
//!
//! Parameters: `max_norm` (A > 0, the bound on ||g + lambda w||, default 10 as in the authors'
//! code); `decay` (rho in (0, 1], the per-round annealing factor, default 0.998 as in the
//! authors' code; 1 turns annealing off); `anneal` (`"lr"` or `"bound"`). Set
//! `client.weight_decay` (lambda) as well: the paper's point is that FedNAR tolerates a large one
//! (e.g. 0.01 where FedAvg wants 1e-4).
//!
//! ```toml
//! [local]
//! use = "fednar"
//! max_norm = 10.0
//! decay = 0.998
//! anneal = "lr"
//! ```

use fedkit_core::{Error, LocalStep, Params, Result, StepCtx};
use serde::{Deserialize, Serialize};

use super::trainable_norm;

/// What the per-round annealing shrinks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    /// Every step, by rho^t (a decaying learning rate; the authors' code).
    #[default]
    Lr,
    /// Only the clipping bound, by rho^t.
    Bound,
}

/// FedNAR's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedNar {
    /// The clipping bound A on ||g + lambda w|| before annealing.
    pub max_norm: f64,
    /// The per-round annealing factor rho.
    pub decay: f64,
    /// What the annealing shrinks.
    pub anneal: Anneal,
}

impl Default for FedNar {
    fn default() -> Self {
        FedNar { max_norm: 10.0, decay: 0.998, anneal: Anneal::Lr }
    }
}

impl FedNar {
    /// Check A and rho.
    pub fn validated(self) -> Result<Self> {
        if !(self.max_norm > 0.0 && self.max_norm.is_finite()) {
            return Err(Error::config("max_norm", format!("must be a finite number > 0, got {}", self.max_norm)));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(Error::config("decay", format!("must be in (0, 1], got {}", self.decay)));
        }
        Ok(self)
    }

    /// The bound A_t = eta A rho^t on the norm of one local step eta d in `round` (both modes).
    pub fn step_bound(&self, round: u32, lr: f32) -> f64 {
        lr as f64 * self.max_norm * self.decay.powf(round as f64)
    }
}

impl LocalStep for FedNar {
    fn adjust(&self, sc: &StepCtx, w: &Params, g: &mut Params) {
        let (lambda, ws) = (sc.weight_decay, w.as_slice());
        let gs = g.as_mut_slice();
        for r in w.layout().trainable_ranges() {
            gs[r.clone()].iter_mut().zip(&ws[r]).for_each(|(g, w)| *g += lambda * w);
        }
        let norm = trainable_norm(g);
        let annealing = self.decay.powf(sc.round as f64);
        match self.anneal {
            Anneal::Lr => {
                let clip = if norm > self.max_norm { self.max_norm / norm } else { 1.0 };
                if clip * annealing != 1.0 {
                    g.scale((clip * annealing) as f32);
                }
            }
            Anneal::Bound => {
                let (step, bound) = (sc.lr as f64 * norm, self.step_bound(sc.round, sc.lr));
                if step > bound {
                    g.scale((bound / step) as f32);
                }
            }
        }
    }
    fn owns_weight_decay(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use fedkit_core::{ClientData, Dataset, LocalTrain, NoHook, PlainStep, RngStream, local_train};

    use super::*;
    use crate::local_steps::test_model::{LeastSquares, batch, params, step_ctx};

    // Over many random gradients, weights, weight decays, learning rates and rounds, the step
    // ||eta d|| never exceeds the round's bound A_t (and equals it when clipped, along g + lambda w);
    // under the bound d is exactly g + lambda w, bit for bit. The bound strictly decreases with the
    // round for rho < 1.
    #[test]
    fn steps_stay_within_the_annealed_bound() {
        let m = LeastSquares::new(4);
        let nar = FedNar { max_norm: 2.0, decay: 0.9, anneal: Anneal::Bound }.validated().unwrap();
        let mut rng = RngStream::new(5);
        let (mut clipped, mut free) = (0, 0);
        for case in 0..2000 {
            let mut draw = |s: f64| (rng.normal() * s) as f32;
            let scale = [0.1, 1.0, 10.0][case % 3];
            let w = params(&m, &[draw(1.0), draw(1.0), draw(1.0), draw(1.0)], draw(1.0));
            let g0 = params(&m, &[draw(scale), draw(scale), draw(scale), draw(scale)], draw(scale));
            let sc = step_ctx(1 + (case % 40) as u32, [0.01, 0.1, 1.0][case % 3], [0.0, 0.01, 0.5][case % 2]);
            let mut want = g0.clone();
            want.axpy(sc.weight_decay, &w);
            want.as_mut_slice()[5] = 0.0; // the buffer gets no weight decay
            let mut g = g0.clone();
            nar.adjust(&sc, &w, &mut g);
            let (bound, step) = (nar.step_bound(sc.round, sc.lr), sc.lr as f64 * g.l2());
            assert!(step <= bound * (1.0 + 1e-6), "case {case}: step {step} > bound {bound}");
            if sc.lr as f64 * want.l2() <= bound {
                assert_eq!(g, want, "case {case}: changed a step under the bound");
                free += 1;
            } else {
                assert!((step - bound).abs() <= 1e-5 * bound, "case {case}: clipped to {step}, bound {bound}");
                let cos = g.dot(&want) / (g.l2() * want.l2());
                assert!(cos > 1.0 - 1e-6, "case {case}: clipping changed the direction");
                clipped += 1;
            }
        }
        assert!(clipped > 200 && free > 200, "{clipped} clipped, {free} free");
        assert!((1..50).all(|t| nar.step_bound(t + 1, 0.1) < nar.step_bound(t, 0.1)));
        assert!((nar.step_bound(3, 0.1) - 0.1f32 as f64 * 2.0 * 0.9f64.powi(3)).abs() < 1e-12);
    }

    fn toy_data() -> ClientData {
        let b = batch(20, 3, 9);
        let d = Dataset {
            name: "toy".into(),
            x: b.x,
            y: b.y,
            feature_shape: vec![3],
            classes: 3,
            users: None,
            targets: Vec::new(),
        };
        ClientData::whole(std::sync::Arc::new(d))
    }

    // With a bound that never binds, local training with FedNAR is plain local training with the
    // optimiser's weight decay, bit for bit (with momentum too): FedNAR applies lambda w itself.
    #[test]
    fn under_the_bound_it_is_plain_weight_decay() {
        let (mut m, data) = (LeastSquares::new(3), toy_data());
        let w0 = params(&m, &[0.5, -1.0, 0.25], 0.1);
        let cfg = LocalTrain { lr: 0.05, batch_size: 4, weight_decay: 0.3, momentum: 0.5, ..LocalTrain::default() };
        let nar = FedNar { max_norm: 1e9, decay: 1.0, anneal: Anneal::Lr };
        let run = |m: &mut LeastSquares, step: &dyn LocalStep| {
            let mut w = w0.clone();
            local_train(m, &mut w, &data, &cfg, 3, &mut NoHook, step, 1, &mut RngStream::new(4)).unwrap();
            w
        };
        let (plain, with_nar) = (run(&mut m, &PlainStep), run(&mut m, &nar));
        assert_eq!(plain, with_nar);
        let no_decay = LocalTrain { weight_decay: 0.0, ..cfg.clone() };
        let mut w = w0.clone();
        local_train(&mut m, &mut w, &data, &no_decay, 3, &mut NoHook, &PlainStep, 1, &mut RngStream::new(4)).unwrap();
        assert_ne!(w, plain, "the weight decay had no effect");
    }

    // The algorithm's hook runs before the co-clipping: one SGD step from w with a hook adding a
    // large vector c is w - clip(eta (g + c + lambda w), A_t), the clipping covering c.
    #[test]
    fn clips_the_direction_after_the_algorithm_hook() {
        let (mut m, data) = (LeastSquares::new(3), toy_data());
        let w0 = params(&m, &[0.5, -1.0, 0.25], 0.1);
        let cfg = LocalTrain { lr: 0.1, batch_size: 20, weight_decay: 0.2, max_steps: 1, ..LocalTrain::default() };
        let nar = FedNar { max_norm: 1.0, decay: 0.5, anneal: Anneal::Bound };
        let c = [30.0f32, -40.0, 0.0, 0.0];
        let mut hook = |_: usize, _: &Params, g: &mut Params| {
            g.as_mut_slice().iter_mut().zip(c).for_each(|(g, c)| *g += c);
        };
        let mut w = w0.clone();
        local_train(&mut m, &mut w, &data, &cfg, 1, &mut hook, &nar, 2, &mut RngStream::new(1)).unwrap();
        let g = m.grad(w0.as_slice(), &data_batch(&data));
        let d: Vec<f64> = (0..4).map(|k| g[k] + c[k] as f64 + 0.2 * w0.as_slice()[k] as f64).collect();
        let norm = d.iter().map(|a| a * a).sum::<f64>().sqrt();
        let bound = 0.1 * 1.0 * 0.25;
        assert!(0.1 * norm > bound, "the test needs a clipped step");
        for k in 0..4 {
            let want = w0.as_slice()[k] as f64 - bound * d[k] / norm;
            assert!((w.as_slice()[k] as f64 - want).abs() < 1e-6, "entry {k}: {} vs {want}", w.as_slice()[k]);
        }
        let moved = w.sub(&w0).as_slice()[..4].iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        assert!((moved - bound).abs() < 1e-6, "the step has the bound's length: {moved} vs {bound}");
    }

    /// All of `data` as one batch.
    fn data_batch(data: &ClientData) -> fedkit_core::Batch {
        let mut b = fedkit_core::Batch::default();
        b.fill(data, &(0..data.len()).collect::<Vec<_>>(), &mut RngStream::new(0));
        b
    }

    // The default (the authors' rule): every step of round t is rho^t times the clipped
    // direction, whether the clipping binds or not: min(1, A / ||d||) rho^t d.
    #[test]
    fn lr_annealing_shrinks_every_step_by_rho_to_the_round() {
        let m = LeastSquares::new(4);
        let nar = FedNar { max_norm: 2.0, decay: 0.9, anneal: Anneal::Lr };
        let mut rng = RngStream::new(6);
        for case in 0..500 {
            let mut draw = |s: f64| (rng.normal() * s) as f32;
            let scale = [0.1, 1.0, 10.0][case % 3];
            let w = params(&m, &[draw(1.0), draw(1.0), draw(1.0), draw(1.0)], draw(1.0));
            let g0 = params(&m, &[draw(scale), draw(scale), draw(scale), draw(scale)], draw(scale));
            let sc = step_ctx(1 + (case % 40) as u32, 0.1, [0.0, 0.01, 0.5][case % 3]);
            let mut d = g0.clone();
            d.axpy(sc.weight_decay, &w);
            d.as_mut_slice()[5] = g0.as_slice()[5]; // the buffer gets no weight decay
            let norm = d.as_slice()[..5].iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let factor = (2.0 / norm).min(1.0) * 0.9f64.powi(sc.round as i32);
            let mut g = g0.clone();
            nar.adjust(&sc, &w, &mut g);
            for k in 0..5 {
                let want = d.as_slice()[k] as f64 * factor;
                assert!((g.as_slice()[k] as f64 - want).abs() <= 1e-5 * want.abs().max(1e-3), "case {case}, {k}");
            }
        }
        // With rho = 1 and a bound that never binds it is plain weight decay (tested above).
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(FedNar { max_norm: 0.0, ..FedNar::default() }.validated().is_err());
        assert!(FedNar { decay: 1.5, ..FedNar::default() }.validated().is_err());
        assert!(FedNar { decay: 0.0, ..FedNar::default() }.validated().is_err());
    }
}
