//! `neurotoxin`: Zhang, Panda, Song, Yang, Mahoney, Gonzalez, Ramchandran, "Neurotoxin: Durable
//! Backdoors in Federated Learning", ICML 2022.
//!
//! The attacker keeps its backdoor where benign clients rarely write: at every local step its
//! gradient is projected onto the coordinates outside the top-k% (by magnitude) of the previous
//! round's global update (the coordinates benign training moves most are set to zero), so the
//! benign updates of later rounds overwrite it slowly and the backdoor lasts after the attack
//! stops. The previous global update is the aggregate the server applied last round (the stage
//! records it on the server side, `on_aggregate`: the attacker is assumed to observe consecutive
//! global models, as in the paper; simulation-side bookkeeping, saved in checkpoints). In the
//! first round there is none and nothing is masked. Pair it with `backdoor`. Under
//! `[[model.per_client]]` the mask is in `[model]`'s layout: clients of another architecture
//! train unprojected.
//!
//! Parameters: `fraction` (the top-k share of coordinates masked, in (0, 1), default 0.01, the
//! paper's 1%).
//!
//! ```toml
//! [[pipeline]]
//! use = "neurotoxin"
//! on = "malicious"
//! fraction = 0.01
//! ```

use std::sync::{Arc, Mutex};

use fedkit_core::{Aggregate, ClientCtx, Error, Extras, GradHook, Layout, Params, Result, RoundCtx, Stage};
use serde::{Deserialize, Serialize};

use crate::sparse::top_k;

/// Neurotoxin.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Neurotoxin {
    pub fraction: f64,
    /// The coordinates masked this round (the top-k of the last global update), sorted.
    #[serde(skip)]
    mask: Mutex<Vec<u32>>,
    /// The layout the mask indexes (`None` after a resume, until the next aggregate).
    #[serde(skip)]
    layout: Mutex<Option<Arc<Layout>>>,
}

impl Default for Neurotoxin {
    fn default() -> Self {
        Neurotoxin { fraction: 0.01, mask: Mutex::new(Vec::new()), layout: Mutex::new(None) }
    }
}

impl Neurotoxin {
    /// Check the fraction.
    pub fn validated(self) -> Result<Self> {
        if !(self.fraction > 0.0 && self.fraction < 1.0) {
            return Err(Error::config("fraction", format!("must be in (0, 1), got {}", self.fraction)));
        }
        Ok(self)
    }
}

/// Zeroes the masked coordinates of every gradient.
struct Projection {
    mask: Vec<u32>,
}

impl GradHook for Projection {
    fn on_grad(&mut self, _: usize, _: &Params, g: &mut Params) {
        let gs = g.as_mut_slice();
        self.mask.iter().for_each(|&j| {
            if let Some(v) = gs.get_mut(j as usize) {
                *v = 0.0;
            }
        });
    }
}

impl Stage for Neurotoxin {
    fn train_hook<'a>(&'a self, cx: &ClientCtx<'a>, _mem: &'a Extras) -> Result<Option<Box<dyn GradHook + 'a>>> {
        let layout = self.layout.lock().map_err(|_| Error::Method("neurotoxin: layout lock poisoned".into()))?;
        if layout.as_ref().is_some_and(|l| **l != **cx.global.layout()) {
            // A client of another architecture: the mask does not index its model.
            return Ok(None);
        }
        let mask = self.mask.lock().map_err(|_| Error::Method("neurotoxin: mask lock poisoned".into()))?.clone();
        Ok(Some(Box::new(Projection { mask })))
    }
    fn on_aggregate(&mut self, _r: &RoundCtx, a: &mut Aggregate) -> Result<()> {
        let k = (self.fraction * a.delta.len() as f64).ceil() as usize;
        *self.mask.get_mut().map_err(|_| Error::Method("neurotoxin: mask lock poisoned".into()))? =
            top_k(a.delta.as_slice(), k);
        *self.layout.get_mut().map_err(|_| Error::Method("neurotoxin: layout lock poisoned".into()))? =
            Some(a.delta.layout().clone());
        Ok(())
    }
    fn state(&self) -> Result<Vec<u8>> {
        let mask = self.mask.lock().map_err(|_| Error::Method("neurotoxin: mask lock poisoned".into()))?;
        fedkit_core::codec::to_bytes(&*mask, "neurotoxin state")
    }
    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            let mask: Vec<u32> = fedkit_core::codec::from_bytes(bytes, "neurotoxin state")?;
            *self.mask.get_mut().map_err(|_| Error::Method("neurotoxin: mask lock poisoned".into()))? = mask;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::cx;
    use crate::defenses::testing::{ctx, update};

    #[test]
    fn gradients_lose_the_top_k_coordinates_of_the_last_global_update() {
        let mut n = Neurotoxin { fraction: 0.4, ..Neurotoxin::default() }.validated().unwrap();
        let e = Extras::default();
        let five = update(0, &[0.0; 5], 1.0).delta;
        let c = ClientCtx { global: &five, ..cx(1, 0, &e) };
        // Nothing masked before a global update exists.
        let mut g = update(0, &[1.0; 5], 1.0).delta;
        n.train_hook(&c, &e).unwrap().unwrap().on_grad(0, &g.clone(), &mut g);
        assert_eq!(g.as_slice(), &[1.0; 5]);
        let mut agg =
            crate::aggregators::mean::weighted_mean(&[update(0, &[0.1, -5.0, 2.0, 0.0, 3.0], 1.0)], true).unwrap();
        n.on_aggregate(&ctx(), &mut agg).unwrap();
        let mut g = update(0, &[1.0; 5], 1.0).delta;
        n.train_hook(&c, &e).unwrap().unwrap().on_grad(0, &g.clone(), &mut g);
        assert_eq!(g.as_slice(), &[1.0, 0.0, 1.0, 1.0, 0.0], "the top 40% (2 of 5) are masked");
        // A client of another architecture (`[[model.per_client]]`) is not projected.
        assert!(n.train_hook(&cx(1, 0, &e), &e).unwrap().is_none());
        let mut back = Neurotoxin::default();
        back.load_state(&n.state().unwrap()).unwrap();
        assert_eq!(*back.mask.lock().unwrap(), vec![1, 4]);
    }
}
