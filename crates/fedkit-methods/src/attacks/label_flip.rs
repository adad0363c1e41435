//! `label_flip`: the label-flipping data poisoning attack of Tolpegin, Truex, Gursoy, Liu, "Data
//! Poisoning Attacks Against Federated Learning Systems", ESORICS 2020 (the baseline of the
//! robustness literature; targeted flips source -> target as in that paper): every
//! sample of an attacking client is relabelled y -> C - 1 - y (`mapping = "reverse"`), or, with
//! `mapping = "targeted"`, only samples of class `source` become `target`.
//!
//! Parameters: `mapping` (`reverse`, the default, or `targeted`); `source` and `target` (used by
//! `targeted` only, defaults 1 and 7).
//!
//! ```toml
//! [[pipeline]]
//! use = "label_flip"
//! on = "malicious"
//! mapping = "targeted"
//! source = 1
//! target = 7
//! ```

use std::sync::Arc;

use fedkit_core::{ClientCtx, ClientData, Error, Extras, Result, Stage};
use serde::{Deserialize, Serialize};

/// Which labels flip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    #[default]
    Reverse,
    Targeted,
}

/// Label flipping.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelFlip {
    pub mapping: Mapping,
    pub source: u32,
    pub target: u32,
}

impl Default for LabelFlip {
    fn default() -> Self {
        LabelFlip { mapping: Mapping::Reverse, source: 1, target: 7 }
    }
}

impl Stage for LabelFlip {
    fn on_data(&self, _cx: &ClientCtx, d: &mut ClientData, _mem: &mut Extras) -> Result<()> {
        let c = d.data.classes as u32;
        if self.mapping == Mapping::Targeted && (self.source >= c || self.target >= c) {
            return Err(Error::config(
                "target",
                format!("source {} and target {} must be classes of 0..{c}", self.source, self.target),
            ));
        }
        let labels: Arc<[u32]> = (0..d.len())
            .map(|p| {
                let y = d.label(p);
                match self.mapping {
                    Mapping::Reverse => c - 1 - y,
                    Mapping::Targeted if y == self.source => self.target,
                    Mapping::Targeted => y,
                }
            })
            .collect();
        d.labels = Some(labels);
        d.validate_labels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::{cx, images};

    #[test]
    fn labels_flip_and_features_stay() {
        let e = Extras::default();
        let mut d = images(6);
        let x = d.data.x.clone();
        LabelFlip::default().on_data(&cx(1, 1, &e), &mut d, &mut Extras::default()).unwrap();
        assert_eq!((0..6).map(|p| d.label(p)).collect::<Vec<_>>(), vec![2, 1, 0, 2, 1, 0]);
        assert_eq!(d.data.x, x);
        let mut t = images(6);
        LabelFlip { mapping: Mapping::Targeted, source: 1, target: 0 }
            .on_data(&cx(1, 1, &e), &mut t, &mut Extras::default())
            .unwrap();
        assert_eq!((0..6).map(|p| t.label(p)).collect::<Vec<_>>(), vec![0, 0, 2, 0, 0, 2]);
        let bad = LabelFlip { mapping: Mapping::Targeted, source: 1, target: 5 };
        assert!(bad.on_data(&cx(1, 1, &e), &mut images(3), &mut Extras::default()).is_err());
    }
}
