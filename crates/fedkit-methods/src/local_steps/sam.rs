//! `sam`: Sharpness-Aware Minimization, Foret et al., "Sharpness-Aware Minimization for
//! Efficiently Improving Generalization", ICLR 2021, as the local optimiser of FedSAM (Qu et al.,
//! "Generalized Federated Learning via Sharpness Aware Minimization", ICML 2022; Caldarola et al.,
//! "Improving Generalization in Federated Learning by Seeking Flat Minima", ECCV 2022): with FedAvg
//! (`[algorithm] use = "fedavg"`) it is FedSAM.
//!
//! SAM minimises max_{||e|| <= rho} L(w + e). Each local step computes the mini-batch gradient
//! g = grad L(w), the ascent point e = rho g / ||g||_2 (the first-order solution of the inner
//! maximisation), and the gradient at w + e on the same batch; w is restored and the step (the
//! algorithm's hook, then the `[client]` optimiser) uses grad L(w + e). The reported loss is L(w).
//! Two forward/backward passes per step. Only trainable entries are perturbed (never
//! `ParamKind::Buffer`), and running statistics are those of the first forward pass: the second
//! pass's updates are undone. Weight decay stays in the optimiser, as with the authors' SAM
//! wrapper around SGD.
//!
//! Parameters: `rho` (the neighbourhood radius rho >= 0, default 0.05 as in the SAM paper and
//! FedSAM's CIFAR experiments; rho = 0 is plain local training, bit for bit).
//!
//! ```toml
//! [local]
//! use = "sam"
//! rho = 0.05
//! ```

use fedkit_core::{Batch, Error, LocalStep, Model, Params, Result, RngStream, StepCtx};
use serde::{Deserialize, Serialize};

use super::trainable_norm;

/// SAM's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sam {
    /// Neighbourhood radius rho.
    pub rho: f64,
}

impl Default for Sam {
    fn default() -> Self {
        Sam { rho: 0.05 }
    }
}

impl Sam {
    /// Check rho.
    pub fn validated(self) -> Result<Self> {
        if !(self.rho >= 0.0 && self.rho.is_finite()) {
            return Err(Error::config("rho", format!("must be a finite number >= 0, got {}", self.rho)));
        }
        Ok(self)
    }
}

impl LocalStep for Sam {
    fn grad(
        &self,
        _sc: &StepCtx,
        model: &mut dyn Model,
        params: &mut Params,
        batch: &mut Batch,
        grad: &mut Params,
        rng: &mut RngStream,
    ) -> Result<f32> {
        let loss = model.loss_grad(params, batch, grad, rng)?;
        let norm = trainable_norm(grad);
        if self.rho == 0.0 || !(norm > 0.0 && norm.is_finite()) {
            return Ok(loss);
        }
        // The parameters after the first pass (running statistics updated once), restored after
        // the second: the weights come back bit for bit.
        let saved = params.clone();
        let scale = (self.rho / (norm + 1e-12)) as f32;
        let (w, g) = (params.as_mut_slice(), grad.as_slice());
        for r in saved.layout().trainable_ranges() {
            w[r.clone()].iter_mut().zip(&g[r]).for_each(|(w, g)| *w += scale * g);
        }
        let second = model.loss_grad(params, batch, grad, rng);
        *params = saved;
        second?;
        Ok(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_steps::test_model::{LeastSquares, batch, params, step_ctx};

    // rho = 0 is plain local training bit for bit: same loss, gradient and parameters after the
    // step (running statistics counted once), one forward pass.
    #[test]
    fn rho_zero_is_the_plain_gradient() {
        let mut m = LeastSquares::new(3);
        let (mut b, w) = (batch(8, 3, 1), params(&m, &[0.5, -1.0, 0.25], 0.1));
        let (mut p1, mut g1) = (w.clone(), w.zeros_like());
        let l1 = m.loss_grad(&mut p1, &b, &mut g1, &mut RngStream::new(0)).unwrap();
        let sam = Sam { rho: 0.0 }.validated().unwrap();
        let (mut p2, mut g2) = (w.clone(), w.zeros_like());
        m.seen.clear();
        let l2 = sam.grad(&step_ctx(1, 0.1, 0.0), &mut m, &mut p2, &mut b, &mut g2, &mut RngStream::new(0)).unwrap();
        assert_eq!((l1.to_bits(), &g1, &p1), (l2.to_bits(), &g2, &p2));
        assert_eq!(m.seen.len(), 1);
    }

    // The returned gradient is the gradient at w + e, e = rho g / ||g|| on the trainable entries:
    // it matches the model's gradient at that point computed by hand and the closed form
    // g + H e. The loss is L(w); the weights come back bit for bit, the buffer counts one forward
    // pass, and the second pass saw the buffer unperturbed.
    #[test]
    fn gradient_is_taken_at_the_ascent_point() {
        let mut m = LeastSquares::new(3);
        let (mut b, w) = (batch(8, 3, 2), params(&m, &[0.5, -1.0, 0.25], 0.1));
        let rho = 0.3;
        let (mut plain_p, mut g) = (w.clone(), w.zeros_like());
        let plain_loss = m.loss_grad(&mut plain_p, &b, &mut g, &mut RngStream::new(0)).unwrap();
        let g0 = m.grad(w.as_slice(), &b);
        let norm = g0.iter().map(|a| a * a).sum::<f64>().sqrt();
        let e: Vec<f64> = g0.iter().map(|a| rho * a / norm).collect();
        let mut at = w.clone();
        at.as_mut_slice().iter_mut().zip(&e).for_each(|(w, e)| *w += *e as f32);
        let want = m.grad(at.as_slice(), &b);
        let closed: Vec<f64> = g0.iter().zip(m.hessian_times(&b, &e)).map(|(g, he)| g + he).collect();

        let (mut p, mut got) = (w.clone(), w.zeros_like());
        m.seen.clear();
        let loss = Sam { rho }.grad(&step_ctx(1, 0.1, 0.0), &mut m, &mut p, &mut b, &mut got, &mut RngStream::new(0));
        assert_eq!(loss.unwrap().to_bits(), plain_loss.to_bits());
        for k in 0..4 {
            let gk = got.as_slice()[k] as f64;
            assert!((gk - want[k]).abs() <= 1e-5 * (1.0 + want[k].abs()), "entry {k}: {gk} vs {}", want[k]);
            assert!((gk - closed[k]).abs() <= 1e-5 * (1.0 + closed[k].abs()), "entry {k}: {gk} vs {}", closed[k]);
        }
        assert!((got.as_slice()[0] as f64 - g0[0]).abs() > 1e-2, "the perturbation changed nothing");
        assert_eq!(got.as_slice()[4], 0.0, "buffer gradient");
        assert_eq!(p, plain_p, "weights restored and running statistics counted once");
        assert_eq!(m.seen.len(), 2);
        let second = &m.seen[1];
        assert_eq!(second[4], 1.0, "the second pass sees the buffer as the first pass left it");
        for k in 0..4 {
            assert!((second[k] as f64 - at.as_slice()[k] as f64).abs() < 1e-6, "perturbed entry {k}");
        }
    }

    #[test]
    fn rejects_a_negative_radius() {
        assert!(Sam { rho: -0.1 }.validated().is_err());
        assert!(Sam { rho: f64::NAN }.validated().is_err());
    }
}
