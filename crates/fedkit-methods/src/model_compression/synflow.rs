//! `synflow`: Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data by
//! iteratively conserving synaptic flow", NeurIPS 2020 (Algorithm 1, Iterative Synaptic Flow
//! Pruning).
//!
//! Before the first round, without looking at any data, the method prunes the initial model to
//! `density` (ρ) in `iterations` (n) steps. Each step replaces every parameter by its absolute
//! value, masks the pruned ones, feeds one input of all ones, and takes R = 1ᵀ f(1; |θ|) (the
//! sum of the logits: for a ReLU network with non-negative weights and input, the "synaptic
//! flow" through every path); the score of a weight is S = ∂R/∂θ ⊙ θ (with the absolute
//! values), and step k keeps the ρ^(k/n) share of the prunable weights with the highest scores,
//! over all weight tensors at once (the exponential schedule). The initial model then trains
//! with the mask (pruned weights stay zero everywhere, as for every `[compress]` method); the
//! kept weights keep their initial values. Iterating is what avoids layer collapse: a layer
//! whose weights are all pruned cuts the flow, so its last weights score highest.
//!
//! With `score = "magnitude"` the same schedule ranks by |θ| instead: the paper's
//! magnitude-at-initialisation baseline, which at extreme sparsity prunes whole layers (the
//! widest layer's weights are the smallest) and collapses. With one iteration it is one-shot.
//! Round metric: `density`.
//!
//! Parameters: `density` (ρ, the kept share of the weights, default 0.01), `iterations` (n,
//! default 100), `score` (`synflow` or `magnitude`, default `synflow`).
//!
//! ```toml
//! [compress]
//! use = "synflow"
//! density = 0.01
//! iterations = 100
//! ```

use fedkit_core::{
    Batch, Compress, CompressCtx, Error, Mask, Metrics, Mode, Model, OutputGrads, Outputs, Params, Result, RngStream,
};
use serde::{Deserialize, Serialize};

/// How weights are ranked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Score {
    /// Synaptic flow, ∂R/∂θ ⊙ θ.
    #[default]
    Synflow,
    /// |θ| (the baseline).
    Magnitude,
}

/// SynFlow's parameters and mask.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynFlow {
    /// ρ: the kept share of the weights.
    pub density: f64,
    /// n: pruning iterations.
    pub iterations: u32,
    pub score: Score,
    #[serde(skip)]
    mask: Option<Mask>,
}

impl Default for SynFlow {
    fn default() -> Self {
        SynFlow { density: 0.01, iterations: 100, score: Score::Synflow, mask: None }
    }
}

impl SynFlow {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.density > 0.0 && self.density <= 1.0) {
            return Err(Error::config("density", format!("must be in (0, 1], got {}", self.density)));
        }
        if self.iterations == 0 {
            return Err(Error::config("iterations", "must be at least 1"));
        }
        Ok(self)
    }

    /// Prune `w`'s mask to the target density in `iterations` steps.
    fn prune(&self, m: &mut dyn Model, w: &Params, shape: &[usize], classes: usize) -> Result<Mask> {
        let mut mask = Mask::dense(w.len());
        for k in 1..=self.iterations {
            let scores = match self.score {
                Score::Magnitude => w.as_slice().iter().map(|v| v.abs() as f64).collect(),
                Score::Synflow => synaptic_flow(m, w, &mask, shape, classes)?,
            };
            let target = self.density.powf(k as f64 / self.iterations as f64);
            mask.keep_top(w.layout(), &scores, target)?;
        }
        Ok(mask)
    }
}

/// The synaptic-flow scores ∂R/∂θ ⊙ θ at the absolute values of the kept parameters (R: the
/// sum of the logits on one input of ones).
pub fn synaptic_flow(m: &mut dyn Model, w: &Params, mask: &Mask, shape: &[usize], classes: usize) -> Result<Vec<f64>> {
    let mut abs = w.clone();
    abs.as_mut_slice().iter_mut().for_each(|v| *v = v.abs());
    mask.apply(&mut abs);
    let n: usize = shape.iter().product();
    let batch = Batch { x: vec![1.0; n], y: vec![0], feature_shape: shape.to_vec(), classes, targets: Vec::new() };
    let mut head = |out: &Outputs, _b: &Batch, g: &mut OutputGrads| -> Result<f32> {
        g.logits = vec![1.0; out.logits.len()];
        g.features.clear();
        Ok(out.logits.iter().sum())
    };
    let mut grad = abs.zeros_like();
    let mut p = abs.clone();
    // Evaluation mode: normalisation layers use their running statistics (one sample has no
    // batch statistics), as the reference code scores with model.eval().
    let r = m.vjp(&mut p, &batch, Mode::Eval, &mut head, Some(&mut grad), None, &mut RngStream::new(0))?;
    let scores: Vec<f64> = abs.as_slice().iter().zip(grad.as_slice()).map(|(&t, &g)| t as f64 * g as f64).collect();
    if !r.is_finite() || scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::Method(format!(
            "synflow: the synaptic flow R = {r} overflows f32 for this model; use a shallower model or score = \"magnitude\""
        )));
    }
    if scores.iter().all(|&s| s == 0.0) && mask.density(w.layout()) > 0.0 {
        return Err(Error::Method(
            "synflow: every score is zero (the flow is cut): lower the iterations or raise the density".into(),
        ));
    }
    Ok(scores)
}

impl Compress for SynFlow {
    fn before_round(&mut self, cx: &CompressCtx, w: &mut Params) -> Result<Metrics> {
        if cx.round == 1 && self.mask.is_none() {
            let mut model = cx.model.clone_box();
            self.mask = Some(self.prune(model.as_mut(), w, cx.feature_shape, cx.classes)?);
        }
        let mut m = Metrics::new();
        m.insert("density".into(), self.mask.as_ref().map_or(1.0, |k| k.density(w.layout())));
        Ok(m)
    }

    fn mask(&self) -> Option<&Mask> {
        self.mask.as_ref()
    }

    fn state(&self) -> Result<Vec<u8>> {
        fedkit_core::codec::to_bytes(&self.mask, "synflow state")
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.mask = fedkit_core::codec::from_bytes(bytes, "synflow state")?;
        Ok(())
    }
}
