//! `mk_mmd`: cross-entropy plus a multi-kernel maximum mean discrepancy between a client's
//! features and the global model's, after Long, Cao, Wang, Jordan, "Learning Transferable
//! Features with Deep Adaptation Networks" (DAN), ICML 2015, for feature-shift federations.
//!
//! Loss = CE + lambda MK-MMD^2(F_batch, F_ref): F_batch are the features (the output layer's
//! input, `Model::forward`) of the client's mini-batch; F_ref are the features of the *global*
//! model (the model the client received this round, fixed during the local run) on the server's
//! reference split: `reference` samples drawn once, with the run seed, from the pooled training
//! data (a simulation-only server set, like FedLAW's proxy; the clients' own feature transforms
//! are not applied to it, so it is the clean domain). MK-MMD^2 is the biased estimator
//! mean k(x, x') + mean k(y, y') - 2 mean k(x, y) with the kernel
//! k = (1/U) sum_u exp(-||a - b||^2 / (gamma_u sigma^2)), gamma_u in {1/4, 1/2, 1, 2, 4} and
//! sigma^2 the mean pairwise squared distance of the reference features, fixed for the local run
//! (DAN's code takes the mean over the pooled source and target batch at every step, without a
//! gradient through it; a fixed bandwidth makes the loss a smooth function of the batch whose
//! gradient is exact). DAN learns the kernel weights beta_u adversarially; here they are equal
//! (1/U). The gradient flows into the batch features only (F_ref are constants).
//!
//! Parameters: `lambda` (the MMD weight lambda >= 0, default 0.1); `reference` (samples of the
//! reference split, default 128).
//!
//! ```toml
//! [loss]
//! use = "mk_mmd"
//! lambda = 0.1
//! reference = 128
//! ```

use fedkit_core::{Batch, CrossEntropy, Error, Head, Loss, LossData, LossRun, Mode, OutputGrads, Outputs, Result};
use serde::{Deserialize, Serialize};

/// The bandwidth multipliers gamma_u of the kernel family.
const BANDWIDTHS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// MK-MMD regularised cross-entropy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MkMmd {
    pub lambda: f64,
    pub reference: usize,
    /// The reference split's samples (set by `prepare`).
    #[serde(skip)]
    samples: Option<fedkit_core::ClientData>,
}

impl Default for MkMmd {
    fn default() -> Self {
        MkMmd { lambda: 0.1, reference: 128, samples: None }
    }
}

impl MkMmd {
    /// Check lambda and the reference size.
    pub fn validated(self) -> Result<Self> {
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return Err(Error::config("lambda", format!("must be a finite number >= 0, got {}", self.lambda)));
        }
        if self.reference < 2 {
            return Err(Error::config("reference", format!("needs at least 2 samples, got {}", self.reference)));
        }
        Ok(self)
    }
}

/// Squared Euclidean distance.
fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum()
}

/// The mean pairwise squared distance of the rows of `y` (`[m, d]`): the kernel bandwidth.
pub fn bandwidth(y: &[f32], d: usize) -> f64 {
    let m = y.len() / d.max(1);
    let (mut sum, mut pairs) = (0.0, 0usize);
    for i in 0..m {
        for j in i + 1..m {
            sum += sq_dist(&y[i * d..(i + 1) * d], &y[j * d..(j + 1) * d]);
            pairs += 1;
        }
    }
    (sum / pairs.max(1) as f64).max(1e-12)
}

/// MK-MMD^2 between the rows of `x` (`[n, d]`) and `y` (`[m, d]`) with bandwidth `sigma2`, and its
/// gradient with respect to `x` into `gx` (`[n, d]`, overwritten), scaled by `weight`.
pub fn mk_mmd(x: &[f32], y: &[f32], d: usize, sigma2: f64, weight: f64, gx: &mut [f32]) -> f64 {
    let (n, m) = (x.len() / d.max(1), y.len() / d.max(1));
    gx.fill(0.0);
    if n == 0 || m == 0 {
        return 0.0;
    }
    let row = |_: &[f32], i: usize| -> std::ops::Range<usize> { i * d..(i + 1) * d };
    // k(a, b) and dk/d||a - b||^2 summed over the kernel family.
    let kernel = |d2: f64| -> (f64, f64) {
        BANDWIDTHS.iter().fold((0.0, 0.0), |(k, dk), g| {
            let s = g * sigma2;
            let e = (-d2 / s).exp() / BANDWIDTHS.len() as f64;
            (k + e, dk - e / s)
        })
    };
    let (nf, mf) = (n as f64, m as f64);
    let mut value = 0.0;
    for i in 0..n {
        let xi = &x[row(x, i)];
        for j in 0..n {
            let xj = &x[row(x, j)];
            let (k, dk) = kernel(sq_dist(xi, xj));
            value += k / (nf * nf);
            // d/dx_i of k(x_i, x_j) + k(x_j, x_i) = 2 dk * 2 (x_i - x_j)
            let c = weight * 4.0 * dk / (nf * nf);
            gx[row(x, i)].iter_mut().zip(xi.iter().zip(xj)).for_each(|(g, (a, b))| *g += (c * (*a - *b) as f64) as f32);
        }
        for j in 0..m {
            let yj = &y[row(y, j)];
            let (k, dk) = kernel(sq_dist(xi, yj));
            value -= 2.0 * k / (nf * mf);
            let c = -weight * 2.0 * dk * 2.0 / (nf * mf);
            gx[row(x, i)].iter_mut().zip(xi.iter().zip(yj)).for_each(|(g, (a, b))| *g += (c * (*a - *b) as f64) as f32);
        }
    }
    for i in 0..m {
        for j in 0..m {
            value += kernel(sq_dist(&y[row(y, i)], &y[row(y, j)])).0 / (mf * mf);
        }
    }
    value
}

/// The head of one local run: cross-entropy plus lambda MK-MMD^2 to the fixed reference features.
pub struct MmdHead {
    pub lambda: f64,
    pub reference: Vec<f32>,
    /// The kernel bandwidth sigma^2 of the run (from the reference features).
    pub sigma2: f64,
}

impl Head for MmdHead {
    fn value_grad(&mut self, out: &Outputs, batch: &Batch, g: &mut OutputGrads) -> Result<f32> {
        let ce = CrossEntropy.value_grad(out, batch, g)?;
        if self.lambda == 0.0 {
            return Ok(ce);
        }
        g.features.resize(out.features.len(), 0.0);
        let mmd = mk_mmd(&out.features, &self.reference, out.feature_dim, self.sigma2, self.lambda, &mut g.features);
        Ok(ce + (self.lambda * mmd) as f32)
    }
}

impl Loss for MkMmd {
    fn prepare(&mut self, data: &LossData) -> Result<()> {
        let reference = data.reference.as_ref().ok_or_else(|| Error::Method("mk_mmd: no reference split".into()))?;
        let take = self.reference.min(reference.len());
        self.samples = Some(reference.subset(&(0..take).collect::<Vec<_>>()));
        Ok(())
    }
    fn head(&self, run: &mut LossRun) -> Result<Box<dyn Head + Send + '_>> {
        let data = self.samples.as_ref().ok_or_else(|| Error::Method("mk_mmd: not prepared".into()))?;
        let mut batch = Batch::default();
        batch.fill(data, &(0..data.len()).collect::<Vec<_>>(), &mut fedkit_core::RngStream::new(0));
        let mut out = Outputs::default();
        run.model.forward(run.global, &batch, Mode::Eval, &mut out)?;
        let sigma2 = bandwidth(&out.features, out.feature_dim);
        Ok(Box::new(MmdHead { lambda: self.lambda, reference: out.features, sigma2 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::testing::{check_head_gradient, outputs};
    use fedkit_core::RngStream;

    #[test]
    fn mmd_is_zero_for_the_same_sample_and_grows_with_a_shift() {
        let mut rng = RngStream::new(3);
        let x: Vec<f32> = (0..40).map(|_| rng.normal() as f32).collect();
        let mut g = vec![0.0; 40];
        let s2 = bandwidth(&x, 4);
        assert!(mk_mmd(&x, &x, 4, s2, 1.0, &mut g).abs() < 1e-12);
        let shifted: Vec<f32> = x.iter().map(|v| v + 1.0).collect();
        let far: Vec<f32> = x.iter().map(|v| v + 3.0).collect();
        let (near, farther) = (mk_mmd(&shifted, &x, 4, s2, 1.0, &mut g), mk_mmd(&far, &x, 4, s2, 1.0, &mut g));
        assert!(near > 0.01 && farther > near, "{near} {farther}");
    }

    #[test]
    fn the_gradient_with_respect_to_the_features_is_exact() {
        let (out, batch) = outputs(6, 3, 8);
        let mut rng = RngStream::new(9);
        let reference: Vec<f32> = (0..8 * out.feature_dim).map(|_| (rng.normal() + 0.5) as f32).collect();
        let sigma2 = bandwidth(&reference, out.feature_dim);
        check_head_gradient(&mut MmdHead { lambda: 0.7, reference, sigma2 }, &out, &batch);
    }
}
