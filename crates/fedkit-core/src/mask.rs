//! Parameter masks and model-compression methods (issue 14's shared mechanism).
//!
//! A [`Mask`] marks the pruned coordinates of a model's flat parameters. A pruned coordinate
//! is zero in the global model and stays exactly zero: every client trains with a
//! [`MaskHook`] that zeroes its gradient and, after each optimiser step, its weight (so
//! momentum, weight decay or a server optimiser cannot revive it), its delta is therefore zero,
//! and the engine re-applies the mask to the global model after the server rule. Only weight
//! tensors (`ParamKind::Weight`) are prunable; biases, normalisation parameters and running
//! statistics never are.
//!
//! A [`Compress`] method (registry kind `compress`, config section `[compress]`) owns the mask:
//! it sees the initial model, and before each round it may prune, rewind or otherwise change
//! the global model (lottery tickets prune between rounds), so every evaluation measures the
//! model that training produced.

use serde::{Deserialize, Serialize};

use crate::model::GradHook;
use crate::update::Metrics;
use crate::{Error, Layout, Model, ParamKind, Params, Result, RngStream};

/// Which coordinates are kept (true) or pruned (false), one flag per parameter value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mask {
    keep: Vec<bool>,
}

/// Over which set the smallest magnitudes are chosen when pruning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneScope {
    /// One threshold over every prunable tensor.
    #[default]
    Global,
    /// The same fraction of each prunable tensor.
    Layer,
}

impl Mask {
    /// Everything kept, for a model of `n` values.
    pub fn dense(n: usize) -> Mask {
        Mask { keep: vec![true; n] }
    }
    /// Values the mask covers.
    pub fn len(&self) -> usize {
        self.keep.len()
    }
    /// True for a mask of no values.
    pub fn is_empty(&self) -> bool {
        self.keep.is_empty()
    }
    /// Whether coordinate `i` is kept.
    pub fn keeps(&self, i: usize) -> bool {
        self.keep.get(i).copied().unwrap_or(true)
    }
    /// Kept values among the prunable ones of `layout`, over all prunable ones (1 when
    /// nothing is prunable).
    pub fn density(&self, layout: &Layout) -> f64 {
        let (mut kept, mut all) = (0usize, 0usize);
        for r in prunable(layout) {
            all += r.len();
            kept += self.keep.get(r).map_or(0, |k| k.iter().filter(|k| **k).count());
        }
        if all == 0 { 1.0 } else { kept as f64 / all as f64 }
    }
    /// Zero the pruned coordinates of `p`.
    pub fn apply(&self, p: &mut Params) {
        for (v, &k) in p.as_mut_slice().iter_mut().zip(&self.keep) {
            if !k {
                *v = 0.0;
            }
        }
    }
    /// Prune `fraction` of the still-kept prunable coordinates, those of smallest |w| (ties by
    /// index, so the result is deterministic), over all prunable tensors or per tensor; returns
    /// how many were pruned.
    pub fn prune_by_magnitude(&mut self, w: &Params, fraction: f64, scope: PruneScope) -> Result<usize> {
        if w.len() != self.keep.len() {
            return Err(Error::Shape(format!("a mask of {} values for a model of {}", self.keep.len(), w.len())));
        }
        if !(0.0..=1.0).contains(&fraction) {
            return Err(Error::Method(format!("prune fraction {fraction} outside [0, 1]")));
        }
        let groups: Vec<Vec<std::ops::Range<usize>>> = match scope {
            PruneScope::Global => vec![prunable(w.layout())],
            PruneScope::Layer => prunable(w.layout()).into_iter().map(|r| vec![r]).collect(),
        };
        let mut pruned = 0;
        for ranges in groups {
            let mut alive: Vec<usize> = ranges.into_iter().flatten().filter(|&i| self.keep[i]).collect();
            let k = (fraction * alive.len() as f64).round() as usize;
            let v = w.as_slice();
            alive.sort_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()).then(a.cmp(&b)));
            for &i in &alive[..k] {
                self.keep[i] = false;
            }
            pruned += k;
        }
        Ok(pruned)
    }
}

impl Mask {
    /// Keep the `target` share of `layout`'s prunable coordinates with the highest `scores`
    /// (over all of them; ties by index), pruning every other one; coordinates already pruned
    /// stay pruned (their score is ignored).
    pub fn keep_top(&mut self, layout: &Layout, scores: &[f64], target: f64) -> Result<()> {
        if scores.len() != self.keep.len() {
            return Err(Error::Shape(format!("{} scores for a mask of {} values", scores.len(), self.keep.len())));
        }
        let all: Vec<usize> = prunable(layout).into_iter().flatten().filter(|&i| i < self.keep.len()).collect();
        let want = (target.clamp(0.0, 1.0) * all.len() as f64).round() as usize;
        let mut alive: Vec<usize> = all.into_iter().filter(|&i| self.keep[i]).collect();
        alive.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        for &i in alive.iter().skip(want) {
            self.keep[i] = false;
        }
        Ok(())
    }
}

/// The prunable coordinate ranges of `layout`: its weight tensors.
pub fn prunable(layout: &Layout) -> Vec<std::ops::Range<usize>> {
    layout.entries().iter().filter(|e| e.kind == ParamKind::Weight).map(|e| e.range()).collect()
}

/// Keeps the pruned coordinates at zero in local training: zeroes their gradient, and their
/// weight after every optimiser step.
pub struct MaskHook<'a>(pub &'a Mask);

impl GradHook for MaskHook<'_> {
    fn on_grad(&mut self, _step: usize, _w: &Params, g: &mut Params) {
        self.0.apply(g);
    }
    fn after_step(&mut self, _step: usize, w: &mut Params) {
        self.0.apply(w);
    }
}

/// What a [`Compress`] method knows before a round.
pub struct CompressCtx<'a> {
    /// The round about to run (1-based): `round - 1` rounds are done.
    pub round: u32,
    pub rounds: u32,
    pub seed: u64,
    /// The run's model architecture (a fresh initialisation for re-initialisation controls; a
    /// copy of it evaluates scores).
    pub model: &'a dyn Model,
    /// The shape of one sample and the class count (data-free scores feed an input of ones).
    pub feature_shape: &'a [usize],
    pub classes: usize,
}

impl CompressCtx<'_> {
    /// The random stream for `purpose` before this round.
    pub fn rng(&self, purpose: &str) -> RngStream {
        RngStream::derive(self.seed, purpose, self.round as u64, u64::MAX - 2)
    }
}

/// A model-compression method (`[compress]`): it owns the mask the clients train under and may
/// change the global model between rounds.
pub trait Compress: Send + Sync {
    /// Before the first round, with the initial global model.
    fn start(&mut self, _w: &Params) -> Result<()> {
        Ok(())
    }
    /// Before round `cx.round`, on the global model after the rounds before it (the engine then
    /// applies the mask to it, and again after the round's server rule); returns metrics for
    /// the round's record.
    fn before_round(&mut self, cx: &CompressCtx, w: &mut Params) -> Result<Metrics>;
    /// The coordinates clients keep at zero; `None`: no mask.
    fn mask(&self) -> Option<&Mask>;
    /// State kept across rounds (the mask, saved weights), saved in checkpoints.
    fn state(&self) -> Result<Vec<u8>>;
    /// Restore what [`Compress::state`] saved.
    fn load_state(&mut self, bytes: &[u8]) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn params(w: &[f32], b: &[f32]) -> Params {
        let mut l = Layout::new();
        l.push("fc.weight", &[w.len()], ParamKind::Weight);
        l.push("fc.bias", &[b.len()], ParamKind::Bias);
        Params::from_vec(Arc::new(l), [w, b].concat()).unwrap()
    }

    #[test]
    fn magnitude_pruning_takes_the_smallest_weights_and_never_a_bias() {
        let w = params(&[0.5, -0.1, 0.3, -0.9], &[0.0, 0.01]);
        let mut m = Mask::dense(w.len());
        assert_eq!(m.prune_by_magnitude(&w, 0.5, PruneScope::Global).unwrap(), 2);
        assert_eq!((0..6).map(|i| m.keeps(i)).collect::<Vec<_>>(), [true, false, false, true, true, true]);
        assert_eq!(m.density(w.layout()), 0.5);
        // The next step prunes a fraction of what is left.
        m.prune_by_magnitude(&w, 0.5, PruneScope::Global).unwrap();
        assert_eq!((0..4).filter(|&i| m.keeps(i)).collect::<Vec<_>>(), [3]);
        let mut p = w.clone();
        m.apply(&mut p);
        assert_eq!(p.as_slice(), &[0.0, 0.0, 0.0, -0.9, 0.0, 0.01]);
    }

    #[test]
    fn the_hook_keeps_pruned_coordinates_at_zero() {
        let w0 = params(&[0.5, -0.1, 0.3, -0.9], &[0.2, 0.1]);
        let mut m = Mask::dense(w0.len());
        m.prune_by_magnitude(&w0, 0.5, PruneScope::Layer).unwrap();
        let mut g = params(&[1.0; 4], &[1.0; 2]);
        MaskHook(&m).on_grad(0, &w0, &mut g);
        assert_eq!(g.as_slice(), &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let mut w = params(&[1.0; 4], &[1.0; 2]);
        MaskHook(&m).after_step(0, &mut w);
        assert_eq!(w.as_slice(), &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }
}
