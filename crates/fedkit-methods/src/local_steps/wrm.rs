//! `wrm`: Wasserstein Robust Method, Sinha, Namkoong, Duchi, "Certifying Some Distributional
//! Robustness with Principled Adversarial Training", ICLR 2018: local training on worst-case
//! perturbations of the data within a Wasserstein ball, in its Lagrangian (penalty) form.
//!
//! For each mini-batch and each sample (x, y), WRM approximately maximises the robust surrogate
//! phi(z) = loss(w; z, y) - gamma ||z - x||_2^2 (the transport cost c(z, x) = ||z - x||^2, labels
//! unchanged) by T = `steps` steps of gradient ascent from z = x,
//! z <- z + alpha_t (grad_z loss(w; z, y) - 2 gamma (z - x)), alpha_t = alpha / sqrt(t + 1),
//! t = 0..T-1, and returns the parameter gradient at the adversarial batch (z, y) (and its loss,
//! which is the reported training loss). For gamma above the loss's curvature in z, phi is
//! strongly concave and the ascent converges to its unique maximiser; a larger gamma (a smaller
//! ball) gives smaller perturbations. The ascent runs per sample (gradients of the summed, not
//! mean, loss), as in the authors' code. The batch's features are replaced by z in place: the
//! algorithm's hook and the optimiser see only the gradient, and the next step refills the batch.
//! Needs a model with input gradients (`logreg`, `mlp`, `cnn`, `lenet`).
//!
//! Parameters: `gamma` (the penalty gamma > 0; default 0.385, the paper's MNIST setting, which is
//! the authors' code's `eps = 0.5 / gamma = 1.3`); `steps` (ascent steps T >= 0, default 15 as in
//! the authors' code, which takes one more initial step; 0 is plain training, bit for bit);
//! `step_size` (alpha > 0; default 1 / (2 gamma), the authors' choice, which solves the penalty
//! term's part of the ascent exactly).
//!
//! ```toml
//! [local]
//! use = "wrm"
//! gamma = 0.385
//! steps = 15
//! step_size = 1.3
//! ```

use fedkit_core::{Batch, Error, LocalStep, Model, Params, Result, RngStream, StepCtx};
use serde::{Deserialize, Serialize};

/// WRM's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wrm {
    /// Penalty gamma on the squared transport distance.
    pub gamma: f64,
    /// Gradient ascent steps T.
    pub steps: usize,
    /// Initial ascent step size alpha (`None`: 1 / (2 gamma)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
}

impl Default for Wrm {
    fn default() -> Self {
        Wrm { gamma: 0.385, steps: 15, step_size: None }
    }
}

impl Wrm {
    /// Check gamma and the step size.
    pub fn validated(self) -> Result<Self> {
        if !(self.gamma > 0.0 && self.gamma.is_finite()) {
            return Err(Error::config("gamma", format!("must be a finite number > 0, got {}", self.gamma)));
        }
        if let Some(a) = self.step_size.filter(|a| !(*a > 0.0 && a.is_finite())) {
            return Err(Error::config("step_size", format!("must be a finite number > 0, got {a}")));
        }
        Ok(self)
    }

    /// Replace `batch.x` by the adversarial inputs z of `steps` ascent steps on phi.
    pub fn perturb(&self, model: &mut dyn Model, params: &Params, batch: &mut Batch) -> Result<()> {
        if self.steps == 0 {
            return Ok(());
        }
        let x = batch.x.clone();
        let (n, two_gamma) = (batch.len() as f32, (2.0 * self.gamma) as f32);
        let alpha = self.step_size.unwrap_or(0.5 / self.gamma);
        let mut gx = Vec::with_capacity(x.len());
        for t in 0..self.steps {
            model.input_grad(params, batch, &mut gx)?;
            if gx.len() != x.len() {
                return Err(Error::Shape(format!("input gradient of {} values for {} inputs", gx.len(), x.len())));
            }
            let a = (alpha / ((t + 1) as f64).sqrt()) as f32;
            // n * gx: the gradient of this sample's own loss (input_grad differentiates the mean).
            for ((z, x0), g) in batch.x.iter_mut().zip(&x).zip(&gx) {
                *z += a * (n * g - two_gamma * (*z - x0));
            }
        }
        Ok(())
    }
}

impl LocalStep for Wrm {
    fn grad(
        &self,
        _sc: &StepCtx,
        model: &mut dyn Model,
        params: &mut Params,
        batch: &mut Batch,
        grad: &mut Params,
        rng: &mut RngStream,
    ) -> Result<f32> {
        self.perturb(model, params, batch)?;
        model.loss_grad(params, batch, grad, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_steps::test_model::{LeastSquares, batch, params, step_ctx};

    fn wrm(gamma: f64, steps: usize) -> Wrm {
        Wrm { gamma, steps, step_size: None }.validated().unwrap()
    }

    // steps = 0 is plain training bit for bit: same loss, gradient, parameters and batch.
    #[test]
    fn zero_steps_is_plain() {
        let mut m = LeastSquares::new(3);
        let (b, w) = (batch(6, 3, 1), params(&m, &[0.5, -1.0, 0.25], 0.1));
        let (mut p1, mut g1) = (w.clone(), w.zeros_like());
        let l1 = m.loss_grad(&mut p1, &b, &mut g1, &mut RngStream::new(0)).unwrap();
        let (mut p2, mut g2, mut b2) = (w.clone(), w.zeros_like(), b.clone());
        let l2 = wrm(1.0, 0).grad(&step_ctx(1, 0.1, 0.0), &mut m, &mut p2, &mut b2, &mut g2, &mut RngStream::new(0));
        assert_eq!((l1.to_bits(), &g1, &p1, &b.x), (l2.unwrap().to_bits(), &g2, &p2, &b2.x));
    }

    // On least squares, phi(z) = (w.z + b - t)^2 / 2 - gamma ||z - x||^2 is strongly concave for
    // 2 gamma > ||w||^2, with maximiser z* = x + r* w / (2 gamma), r* = r / (1 - ||w||^2 / (2 gamma))
    // (r the clean residual). The ascent reaches z*; the adversarial batch has a higher loss than
    // the clean one; the returned gradient is the parameter gradient at (z, y); and a larger gamma
    // gives a strictly smaller perturbation, as the closed form says.
    #[test]
    fn ascent_reaches_the_penalised_maximiser() {
        let mut m = LeastSquares::new(3);
        let (b, w) = (batch(6, 3, 2), params(&m, &[0.5, -1.0, 0.25], 0.1));
        let wv: Vec<f64> = w.as_slice()[..3].iter().map(|&v| v as f64).collect();
        let w2: f64 = wv.iter().map(|a| a * a).sum();
        let clean = m.loss(w.as_slice(), &b);
        let mut last = f64::INFINITY;
        for gamma in [1.0, 2.0, 4.0, 8.0] {
            assert!(2.0 * gamma > w2);
            let (mut p, mut g, mut z) = (w.clone(), w.zeros_like(), b.clone());
            let loss =
                wrm(gamma, 300).grad(&step_ctx(1, 0.1, 0.0), &mut m, &mut p, &mut z, &mut g, &mut RngStream::new(0));
            let loss = loss.unwrap() as f64;
            assert!(loss > clean * 1.01, "gamma {gamma}: adversarial loss {loss} vs clean {clean}");
            let r = m.residuals(w.as_slice(), &b);
            let mut moved = 0.0;
            for (i, ri) in r.iter().enumerate() {
                let r_star = ri / (1.0 - w2 / (2.0 * gamma));
                for j in 0..3 {
                    let want = b.x[3 * i + j] as f64 + r_star * wv[j] / (2.0 * gamma);
                    let got = z.x[3 * i + j] as f64;
                    assert!((got - want).abs() < 1e-4, "gamma {gamma} z[{i}][{j}]: {got} vs {want}");
                    moved += (got - b.x[3 * i + j] as f64).powi(2);
                }
            }
            assert!(moved.sqrt() < last, "gamma {gamma}: perturbation {} not below {last}", moved.sqrt());
            last = moved.sqrt();
            let want = m.grad(w.as_slice(), &z);
            for (k, want) in want.iter().enumerate() {
                assert!((g.as_slice()[k] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "gradient at (z, y)");
            }
            assert_eq!(&p.as_slice()[..4], &w.as_slice()[..4], "WRM changes inputs, not weights");
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Wrm { gamma: 0.0, ..Wrm::default() }.validated().is_err());
        assert!(Wrm { step_size: Some(-1.0), ..Wrm::default() }.validated().is_err());
        assert!(Wrm::default().validated().is_ok());
    }
}
