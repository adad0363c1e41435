//! `backdoor`: backdoor data poisoning with a pixel trigger (BadNets, Gu, Dolan-Gavitt, Garg,
//! "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain", 2017; the
//! attacker's task in Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020).
//!
//! On each client it runs on (`on = "malicious"`), a fixed `poison_fraction` of the client's
//! samples (a seeded choice per client, the same every round) get the trigger stamped onto them
//! and the label `target`; training then teaches the model the backdoor alongside the main task.
//! It registers the evaluation `backdoor_acc`: the global model's accuracy on the test images of
//! every class but the target, with the trigger, labelled `target` (the attack success rate).
//! Combine with `model_replacement` (boosting) or a norm-evading step. Triggers (`trigger.rs`):
//! `shape` (`plus`, `square`, `pattern`), `size`, `x`, `y`, `value`.
//!
//! Parameters: `target` (the backdoor's label, default 0); `poison_fraction` (in (0, 1], default
//! 0.5); the trigger's `shape` (default `plus`), `size` (5), `x` (1), `y` (1), `value` (1.0).
//!
//! ```toml
//! [[pipeline]]
//! use = "backdoor"
//! on = "malicious"
//! target = 7
//! poison_fraction = 0.5
//! shape = "plus"
//! size = 5
//! x = 1
//! y = 1
//! value = 1.0
//! ```

use std::sync::Arc;

use fedkit_core::{ClientCtx, ClientData, Error, Extras, Result, RngStream, Stage, Stamp};
use serde::{Deserialize, Serialize};

use super::trigger::{Shape, Trigger};

/// Backdoor poisoning.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backdoor {
    pub target: u32,
    pub poison_fraction: f64,
    pub shape: Shape,
    pub size: usize,
    pub x: usize,
    pub y: usize,
    pub value: f32,
}

impl Default for Backdoor {
    fn default() -> Self {
        let t = Trigger::default();
        Backdoor { target: 0, poison_fraction: 0.5, shape: t.shape, size: t.size, x: t.x, y: t.y, value: t.value }
    }
}

impl Backdoor {
    /// The trigger these parameters describe.
    pub fn trigger(&self) -> Trigger {
        Trigger { shape: self.shape, size: self.size, x: self.x, y: self.y, value: self.value }
    }
    /// Check the fraction.
    pub fn validated(self) -> Result<Self> {
        if !(self.poison_fraction > 0.0 && self.poison_fraction <= 1.0) {
            return Err(Error::config("poison_fraction", format!("must be in (0, 1], got {}", self.poison_fraction)));
        }
        Ok(self)
    }
}

/// Poison `d`: a seeded `fraction` of its samples (fixed per client) get `pixels` and `target`.
pub fn poison(
    d: &mut ClientData,
    pixels: Vec<(u32, f32)>,
    target: u32,
    fraction: f64,
    seed: u64,
    client: u32,
) -> Result<()> {
    if target as usize >= d.data.classes {
        return Err(Error::config("target", format!("class {target} of {}", d.data.classes)));
    }
    let n = d.len();
    let k = ((n as f64 * fraction).round() as usize).clamp(1, n.max(1));
    let mut chosen = vec![false; n];
    for p in RngStream::derive(seed, "backdoor_samples", 0, client as u64).choose(n, k.min(n)) {
        chosen[p] = true;
    }
    let labels: Arc<[u32]> = (0..n).map(|p| if chosen[p] { target } else { d.label(p) }).collect();
    d.labels = Some(labels);
    d.stamp = Some(Stamp { pixels: pixels.into(), positions: chosen.into() });
    d.validate_labels()
}

/// The backdoor evaluation set: the test samples not of class `target`, all stamped, labelled
/// `target`.
pub fn backdoor_set(test: &ClientData, pixels: Vec<(u32, f32)>, target: u32) -> Result<ClientData> {
    let keep: Vec<usize> = (0..test.len()).filter(|&p| test.label(p) != target).collect();
    let mut set = test.subset(&keep);
    set.labels = Some(vec![target; keep.len()].into());
    set.stamp = Some(Stamp { pixels: pixels.into(), positions: vec![true; keep.len()].into() });
    set.validate_labels()?;
    Ok(set)
}

impl Stage for Backdoor {
    fn on_data(&self, cx: &ClientCtx, d: &mut ClientData, _mem: &mut Extras) -> Result<()> {
        let pixels = self.trigger().pixels(d.feature_shape(), None)?;
        poison(d, pixels, self.target, self.poison_fraction, cx.seed, cx.client)
    }
    fn evals(&self, test: &ClientData) -> Result<Vec<(String, ClientData)>> {
        let pixels = self.trigger().pixels(test.feature_shape(), None)?;
        if self.target as usize >= test.data.classes {
            return Err(Error::config("target", format!("class {} of {}", self.target, test.data.classes)));
        }
        Ok(vec![("backdoor_acc".into(), backdoor_set(test, pixels, self.target)?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::{cx, images};

    #[test]
    fn poisons_a_fixed_fraction_and_evaluates_on_triggered_non_target_images() {
        let mut d = images(40);
        let b = Backdoor { target: 2, poison_fraction: 0.25, ..Backdoor::default() };
        let extras = Extras::default();
        b.on_data(&cx(1, 3, &extras), &mut d, &mut Extras::default()).unwrap();
        let s = d.stamp.clone().unwrap();
        let chosen: Vec<usize> = (0..40).filter(|&p| s.positions[p]).collect();
        assert_eq!(chosen.len(), 10);
        assert!(chosen.iter().all(|&p| d.label(p) == 2), "poisoned samples carry the target");
        assert!((0..40).filter(|p| !s.positions[*p]).all(|p| d.label(p) == d.data.y[d.idx[p] as usize]));
        let mut again = images(40);
        b.on_data(&cx(7, 3, &extras), &mut again, &mut Extras::default()).unwrap();
        assert_eq!(again.stamp.unwrap().positions, s.positions, "the same samples every round");
        let test = images(30);
        let (name, set) = b.evals(&test).unwrap().remove(0);
        assert_eq!(name, "backdoor_acc");
        assert_eq!(set.len(), (0..30).filter(|&p| test.label(p) != 2).count());
        assert!((0..set.len()).all(|p| set.label(p) == 2) && set.stamp.unwrap().positions.iter().all(|&x| x));
        assert!(Backdoor { target: 9, ..Backdoor::default() }.evals(&test).is_err(), "3 classes");
        assert!(Backdoor { poison_fraction: 0.0, ..Backdoor::default() }.validated().is_err());
    }
}
