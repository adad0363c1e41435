//! `blind`: the blind backdoor, Bagdasaryan, Shmatikov, "Blind Backdoors in Deep Learning
//! Models", USENIX Security 2021.
//!
//! The attacker compromises the loss computation, not the data: at every local step the batch
//! is copied, the copy stamped with the trigger and relabelled `target` (the backdoor task), and
//! the two tasks' gradients g_m (main) and g_b (backdoor) are combined by MGDA (multiple-gradient
//! descent, the paper's balancing): the min-norm point of their convex hull,
//! g = a g_m + (1 - a) g_b with a = clamp(<g_b - g_m, g_b> / ||g_m - g_b||^2, 0, 1), so neither
//! task dominates and no loss weight needs tuning. The attacker's data stay clean (a data
//! inspection finds nothing). It wraps the configured local step rule (`[local]`), which
//! computes both gradients. It registers `backdoor_acc` (the triggered non-target test images,
//! labelled `target`), as `backdoor` does. Triggers (`trigger.rs`): `shape`, `size`, `x`, `y`,
//! `value`.
//!
//! Parameters: `target` (default 0); the trigger's `shape` (`plus`), `size` (5), `x` (1), `y`
//! (1), `value` (1.0).
//!
//! ```toml
//! [[pipeline]]
//! use = "blind"
//! on = "malicious"
//! target = 7
//! shape = "plus"
//! ```

use fedkit_core::{Batch, ClientCtx, ClientData, Error, LocalStep, Model, Params, Result, RngStream, Stage, StepCtx};
use serde::{Deserialize, Serialize};

use super::backdoor::backdoor_set;
use super::trigger::{Shape, Trigger};

/// The blind backdoor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Blind {
    pub target: u32,
    pub shape: Shape,
    pub size: usize,
    pub x: usize,
    pub y: usize,
    pub value: f32,
}

impl Default for Blind {
    fn default() -> Self {
        let t = Trigger::default();
        Blind { target: 0, shape: t.shape, size: t.size, x: t.x, y: t.y, value: t.value }
    }
}

impl Blind {
    fn trigger(&self) -> Trigger {
        Trigger { shape: self.shape, size: self.size, x: self.x, y: self.y, value: self.value }
    }
}

/// The MGDA weight a of the main task for two gradients (min-norm point of their hull).
pub fn mgda_weight(gm: &[f32], gb: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (m, b) in gm.iter().zip(gb) {
        let diff = *b as f64 - *m as f64;
        num += diff * *b as f64;
        den += diff * diff;
    }
    if den <= 0.0 { 0.5 } else { (num / den).clamp(0.0, 1.0) }
}

/// The two-task step: the configured rule's gradients on the batch and on its triggered copy,
/// combined by MGDA.
struct BlindStep<'a> {
    inner: &'a dyn LocalStep,
    trigger: Trigger,
    target: u32,
}

impl LocalStep for BlindStep<'_> {
    fn grad(
        &self,
        sc: &StepCtx,
        model: &mut dyn Model,
        params: &mut Params,
        batch: &mut Batch,
        grad: &mut Params,
        rng: &mut RngStream,
    ) -> Result<f32> {
        let lm = self.inner.grad(sc, model, params, batch, grad, rng)?;
        let mut bd = batch.clone();
        let pixels = self.trigger.pixels(&bd.feature_shape, None)?;
        let f: usize = bd.feature_shape.iter().product();
        for sample in bd.x.chunks_exact_mut(f) {
            pixels.iter().for_each(|&(o, v)| sample[o as usize] = v);
        }
        bd.y.iter_mut().for_each(|y| *y = self.target);
        let mut gb = grad.zeros_like();
        let lb = self.inner.grad(sc, model, params, &mut bd, &mut gb, rng)?;
        let a = mgda_weight(grad.as_slice(), gb.as_slice()) as f32;
        grad.as_mut_slice().iter_mut().zip(gb.as_slice()).for_each(|(m, b)| *m = a * *m + (1.0 - a) * b);
        Ok(a * lm + (1.0 - a) * lb)
    }
    fn adjust(&self, sc: &StepCtx, w: &Params, g: &mut Params) {
        self.inner.adjust(sc, w, g)
    }
    fn owns_weight_decay(&self) -> bool {
        self.inner.owns_weight_decay()
    }
}

impl Stage for Blind {
    fn local_step<'a>(
        &'a self,
        cx: &ClientCtx<'a>,
        inner: &'a dyn LocalStep,
    ) -> Result<Option<Box<dyn LocalStep + 'a>>> {
        if !cx.malicious {
            return Ok(None);
        }
        Ok(Some(Box::new(BlindStep { inner, trigger: self.trigger(), target: self.target })))
    }
    fn on_data(&self, _cx: &ClientCtx, d: &mut ClientData, _mem: &mut fedkit_core::Extras) -> Result<()> {
        // Only checks: the data stay clean.
        if self.target as usize >= d.data.classes {
            return Err(Error::config("target", format!("class {} of {}", self.target, d.data.classes)));
        }
        self.trigger().pixels(d.feature_shape(), None).map(|_| ())
    }
    fn evals(&self, test: &ClientData) -> Result<Vec<(String, ClientData)>> {
        if self.target as usize >= test.data.classes {
            return Err(Error::config("target", format!("class {} of {}", self.target, test.data.classes)));
        }
        let pixels = self.trigger().pixels(test.feature_shape(), None)?;
        Ok(vec![("backdoor_acc".into(), backdoor_set(test, pixels, self.target)?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::{cx, images};
    use fedkit_core::Extras;

    #[test]
    fn mgda_takes_the_min_norm_point_of_the_two_gradients() {
        // Orthogonal unit gradients: the min-norm point is their midpoint.
        assert!((mgda_weight(&[1.0, 0.0], &[0.0, 1.0]) - 0.5).abs() < 1e-12);
        // g_b = 3 g_m (same direction): the shorter g_m alone (a = 1).
        assert_eq!(mgda_weight(&[1.0, 0.0], &[3.0, 0.0]), 1.0);
        // The combination is orthogonal to g_m - g_b (the min-norm condition).
        let (gm, gb) = ([1.0f32, 2.0], [-0.5f32, 0.3]);
        let a = mgda_weight(&gm, &gb);
        let g: Vec<f64> = gm.iter().zip(&gb).map(|(m, b)| a * *m as f64 + (1.0 - a) * *b as f64).collect();
        let dot: f64 = g.iter().zip(gm.iter().zip(&gb)).map(|(g, (m, b))| g * (*m - *b) as f64).sum();
        assert!(dot.abs() < 1e-6, "{dot}");
    }

    #[test]
    fn only_attackers_get_the_two_task_step_and_the_data_stay_clean() {
        let b = Blind { target: 2, ..Blind::default() };
        let e = Extras::default();
        let attacker = cx(1, 0, &e);
        assert!(b.local_step(&attacker, &fedkit_core::PlainStep).unwrap().is_some());
        let mut benign = cx(1, 1, &e);
        benign.malicious = false;
        assert!(b.local_step(&benign, &fedkit_core::PlainStep).unwrap().is_none());
        let mut d = images(12);
        let before = d.clone();
        b.on_data(&attacker, &mut d, &mut Extras::default()).unwrap();
        assert_eq!(d.idx, before.idx);
        assert!(d.labels.is_none() && d.stamp.is_none());
        let (name, set) = b.evals(&images(9)).unwrap().remove(0);
        assert_eq!(name, "backdoor_acc");
        assert_eq!(set.len(), 6, "the non-target test images");
    }
}
