//! `dba`: the distributed backdoor attack, Xie, Huang, Chen, Li, "DBA: Distributed Backdoor
//! Attacks against Federated Learning", ICLR 2020.
//!
//! The global trigger (the four-bar `pattern` of `trigger.rs`) is split into its 4 local pieces;
//! each attacking client poisons `poison_fraction` of its samples with its own piece only (piece
//! = client id mod 4) and the label `target`. No attacker ever sees the whole trigger, yet the
//! assembled one works on the global model. It registers `backdoor_acc` (the assembled global
//! trigger on the non-target test images, labelled `target`) and `backdoor_acc_piece<k>` (each
//! local piece alone). Combine with `model_replacement` for boosting. A piece is chosen by client
//! id, so a random malicious pool may leave one without an attacker: `[threat] ids` with every
//! residue mod 4 covers all four (`configs/papers/durability_fmnist.toml`).
//!
//! Parameters (the paper's trigger factors in brackets): `target` (default 0); `poison_fraction`
//! (the poison ratio r, in (0, 1], default 0.5); the pattern's `size` (trigger size TS, the bar
//! length, default 4), `x` and `y` (trigger location TL, default 1, 1; the gap TG is fixed at one
//! pixel between columns and two between rows), `value` (1.0). The scale factor gamma is
//! `model_replacement`'s `boost`; the poison interval I is `[threat] every`.
//!
//! ```toml
//! [[pipeline]]
//! use = "dba"
//! on = "malicious"
//! target = 7
//! poison_fraction = 0.5
//! size = 4
//! x = 1
//! y = 1
//! value = 1.0
//! ```

use fedkit_core::{ClientCtx, ClientData, Error, Extras, Result, Stage};
use serde::{Deserialize, Serialize};

use super::backdoor::{backdoor_set, poison};
use super::trigger::{PIECES, Shape, Trigger};

/// The distributed backdoor attack.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dba {
    pub target: u32,
    pub poison_fraction: f64,
    pub size: usize,
    pub x: usize,
    pub y: usize,
    pub value: f32,
}

impl Default for Dba {
    fn default() -> Self {
        Dba { target: 0, poison_fraction: 0.5, size: 4, x: 1, y: 1, value: 1.0 }
    }
}

impl Dba {
    /// Check the fraction.
    pub fn validated(self) -> Result<Self> {
        if !(self.poison_fraction > 0.0 && self.poison_fraction <= 1.0) {
            return Err(Error::config("poison_fraction", format!("must be in (0, 1], got {}", self.poison_fraction)));
        }
        Ok(self)
    }
    fn trigger(&self) -> Trigger {
        Trigger { shape: Shape::Pattern, size: self.size, x: self.x, y: self.y, value: self.value }
    }
}

impl Stage for Dba {
    fn on_data(&self, cx: &ClientCtx, d: &mut ClientData, _mem: &mut Extras) -> Result<()> {
        let piece = cx.client as usize % PIECES;
        let pixels = self.trigger().pixels(d.feature_shape(), Some(piece))?;
        poison(d, pixels, self.target, self.poison_fraction, cx.seed, cx.client)
    }
    fn evals(&self, test: &ClientData) -> Result<Vec<(String, ClientData)>> {
        if self.target as usize >= test.data.classes {
            return Err(Error::config("target", format!("class {} of {}", self.target, test.data.classes)));
        }
        let t = self.trigger();
        let mut sets =
            vec![("backdoor_acc".to_string(), backdoor_set(test, t.pixels(test.feature_shape(), None)?, self.target)?)];
        for k in 0..PIECES {
            let pixels = t.pixels(test.feature_shape(), Some(k))?;
            sets.push((format!("backdoor_acc_piece{k}"), backdoor_set(test, pixels, self.target)?));
        }
        Ok(sets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::{cx, images};

    #[test]
    fn each_attacker_stamps_its_own_piece_and_the_pieces_assemble_into_the_global_trigger() {
        let e = Extras::default();
        let dba = Dba { target: 1, size: 2, ..Dba::default() };
        let mut pieces = Vec::new();
        for client in 0..4u32 {
            let mut d = images(12);
            dba.on_data(&cx(1, client, &e), &mut d, &mut Extras::default()).unwrap();
            pieces.push(d.stamp.unwrap().pixels.to_vec());
        }
        let union: std::collections::BTreeSet<u32> = pieces.iter().flatten().map(|p| p.0).collect();
        let sets = dba.evals(&images(12)).unwrap();
        let global: std::collections::BTreeSet<u32> =
            sets[0].1.stamp.as_ref().unwrap().pixels.iter().map(|p| p.0).collect();
        assert_eq!(union, global, "the local pieces assemble into the global trigger");
        assert!(pieces.windows(2).all(|w| w[0] != w[1]), "every attacker has its own piece");
        let names: Vec<&str> = sets.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "backdoor_acc",
                "backdoor_acc_piece0",
                "backdoor_acc_piece1",
                "backdoor_acc_piece2",
                "backdoor_acc_piece3"
            ]
        );
    }
}
