//! `lottery_ticket`: iterative magnitude pruning with rewinding, Frankle and Carbin, "The
//! Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks", ICLR 2019 (its
//! Algorithm: train, prune p% of the weights of smallest magnitude, reset the rest to their
//! values at the start, repeat), with rewinding to iteration k of Frankle, Dziugaite, Roy,
//! Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020.
//!
//! Rounds are the training iterations: in centralised training (`fedkit train`) a round is
//! `client.epochs` epochs over all the data, in a federated run it is a round of the
//! algorithm, and the global model is pruned between rounds. After every `every` rounds (so
//! before rounds every + 1, 2 every + 1, ...) the method prunes `fraction` (p) of the weights still alive, those of
//! smallest |w|, per weight tensor (`scope = "layer"`, the paper's per-layer rate) or over all
//! of them (`"global"`), then rewinds every parameter to its value after round `rewind_round`
//! (k; 0: the initial model, the original hypothesis) and applies the mask. After n pruning
//! steps the density is (1 - p)^n. Biases and normalisation parameters are never pruned
//! (rewound, though). The clients keep pruned weights at exactly zero. With `reinit = true`
//! the surviving weights are drawn afresh instead of rewound (stream `lottery_reinit`): the
//! paper's random re-initialisation control, which should train worse at low density. One
//! departure: the paper's control keeps the winning ticket's mask; here the control's masks
//! come from pruning its own re-initialised networks (same schedule, same densities). Density
//! is (1 - p)^n up to rounding per tensor.
//! Round metric: `density` (kept share of the weights the round trains).
//!
//! What a rewind does not reset: the state of a stateful server rule or client rule (FedAvgM's
//! momentum, FedAdam's moments, SCAFFOLD's control variates) carries over into the next
//! cycle; with `fedavg` (and centrally) there is none. Personal models (pFedMe's, Per-FedAvg's
//! adaptation, `[eval] finetune_steps`) are not masked.
//!
//! Parameters: `fraction` (p, default 0.2), `every` (rounds per pruning iteration, default
//! 10), `steps` (pruning steps, default 0: as many as the rounds allow), `rewind_round` (k,
//! default 0; below `every`), `scope` (`layer` or `global`, default `layer`), `reinit`
//! (default false).
//!
//! ```toml
//! [compress]
//! use = "lottery_ticket"
//! fraction = 0.2
//! every = 10
//! rewind_round = 0
//! ```

use fedkit_core::{Compress, CompressCtx, Error, Mask, Metrics, Params, PruneScope, Result};
use serde::{Deserialize, Serialize};

/// The lottery ticket's parameters and state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LotteryTicket {
    /// p: the share of the surviving weights pruned at each step.
    pub fraction: f64,
    /// Rounds between pruning steps.
    pub every: u32,
    /// Pruning steps (0: every `every` rounds until the last).
    pub steps: u32,
    /// k: the round whose parameters the survivors rewind to (0: the initial model).
    pub rewind_round: u32,
    pub scope: PruneScope,
    /// Draw the survivors afresh instead of rewinding (the random re-initialisation control).
    pub reinit: bool,
    #[serde(skip)]
    state: TicketState,
}

/// The mask, the parameters to rewind to and the steps taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct TicketState {
    mask: Option<Mask>,
    rewind: Option<Params>,
    pruned_steps: u32,
}

impl Default for LotteryTicket {
    fn default() -> Self {
        LotteryTicket {
            fraction: 0.2,
            every: 10,
            steps: 0,
            rewind_round: 0,
            scope: PruneScope::Layer,
            reinit: false,
            state: TicketState::default(),
        }
    }
}

impl LotteryTicket {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.fraction > 0.0 && self.fraction < 1.0) {
            return Err(Error::config("fraction", format!("must be in (0, 1), got {}", self.fraction)));
        }
        if self.every == 0 {
            return Err(Error::config("every", "must be at least 1 round"));
        }
        if self.rewind_round >= self.every {
            return Err(Error::config(
                "rewind_round",
                format!(
                    "must be below `every` ({}): the weights to rewind to are saved before the first pruning step",
                    self.every
                ),
            ));
        }
        Ok(self)
    }
}

impl Compress for LotteryTicket {
    fn start(&mut self, w: &Params) -> Result<()> {
        if self.rewind_round == 0 {
            self.state.rewind = Some(w.clone());
        }
        Ok(())
    }

    fn before_round(&mut self, cx: &CompressCtx, w: &mut Params) -> Result<Metrics> {
        let done = cx.round.saturating_sub(1);
        if done == self.rewind_round && self.rewind_round > 0 {
            self.state.rewind = Some(w.clone());
        }
        let due = done > 0 && done % self.every == 0;
        if due && (self.steps == 0 || self.state.pruned_steps < self.steps) {
            let mask = self.state.mask.get_or_insert_with(|| Mask::dense(w.len()));
            mask.prune_by_magnitude(w, self.fraction, self.scope)?;
            *w = if self.reinit {
                cx.model.init(&mut cx.rng("lottery_reinit"))
            } else {
                self.state
                    .rewind
                    .clone()
                    .ok_or_else(|| Error::Method("lottery_ticket: no weights saved to rewind to".into()))?
            };
            mask.apply(w);
            self.state.pruned_steps += 1;
        }
        let mut m = Metrics::new();
        m.insert("density".into(), self.state.mask.as_ref().map_or(1.0, |k| k.density(w.layout())));
        Ok(m)
    }

    fn mask(&self) -> Option<&Mask> {
        self.state.mask.as_ref()
    }

    fn state(&self) -> Result<Vec<u8>> {
        fedkit_core::codec::to_bytes(&self.state, "lottery_ticket state")
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.state = fedkit_core::codec::from_bytes(bytes, "lottery_ticket state")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::SoftmaxReg;
    use fedkit_core::{Model, RngStream};

    /// The context before the round after `done` rounds.
    fn ctx<'a>(done: u32, rounds: u32, m: &'a dyn Model) -> CompressCtx<'a> {
        CompressCtx { round: done + 1, rounds, seed: 3, model: m, feature_shape: &[4], classes: 3 }
    }

    // After a pruning step the survivors hold exactly the rewind round's values and the pruned
    // weights are zero; the density follows (1 - p)^n; the state survives a round trip.
    #[test]
    fn pruning_rewinds_the_survivors_exactly() {
        let m = SoftmaxReg::new(4, 3);
        let w0 = m.init(&mut RngStream::new(1));
        let mut lt =
            LotteryTicket { fraction: 0.5, every: 2, rewind_round: 1, ..LotteryTicket::default() }.validated().unwrap();
        lt.start(&w0).unwrap();
        let mut w = w0.clone();
        w.as_mut_slice().iter_mut().enumerate().for_each(|(i, v)| *v += i as f32 * 0.01);
        lt.before_round(&ctx(1, 9, &m), &mut w).unwrap();
        let w1 = w.clone();
        w.as_mut_slice().iter_mut().enumerate().for_each(|(i, v)| *v *= 1.0 + (i % 5) as f32);
        let trained = w.clone();
        let metrics = lt.before_round(&ctx(2, 9, &m), &mut w).unwrap();
        assert_eq!(metrics["density"], 0.5);
        let mask = lt.mask().unwrap().clone();
        for i in 0..w.len() {
            let want = if mask.keeps(i) { w1.as_slice()[i] } else { 0.0 };
            assert_eq!(w.as_slice()[i].to_bits(), want.to_bits(), "coordinate {i}");
        }
        // The pruned ones were the trained model's smallest weights (biases never).
        let layout = w.layout().clone();
        let weights = layout.get("w").unwrap().range();
        let smallest_kept =
            weights.clone().filter(|&i| mask.keeps(i)).map(|i| trained.as_slice()[i].abs()).fold(f32::MAX, f32::min);
        let largest_pruned =
            weights.clone().filter(|&i| !mask.keeps(i)).map(|i| trained.as_slice()[i].abs()).fold(0.0, f32::max);
        assert!(largest_pruned <= smallest_kept, "{largest_pruned} > {smallest_kept}");
        lt.before_round(&ctx(3, 9, &m), &mut w).unwrap();
        let d = lt.before_round(&ctx(4, 9, &m), &mut w).unwrap()["density"];
        assert_eq!(d, 0.25);
        let mut back = LotteryTicket::default();
        back.load_state(&lt.state().unwrap()).unwrap();
        assert_eq!(back.state, lt.state);
    }

    #[test]
    fn bad_parameters_name_the_key() {
        let e = LotteryTicket { rewind_round: 10, ..LotteryTicket::default() }.validated().unwrap_err().to_string();
        assert!(e.contains("rewind_round"), "{e}");
        let e = LotteryTicket { fraction: 1.0, ..LotteryTicket::default() }.validated().unwrap_err().to_string();
        assert!(e.contains("fraction"), "{e}");
    }
}
