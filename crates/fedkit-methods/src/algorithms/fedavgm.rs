//! FedAvgM: Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution for
//! Federated Visual Classification", arXiv:1909.06335, 2019.
//!
//! FedAvg with server momentum: clients run FedAvg's local SGD; the server accumulates the
//! aggregated delta Delta_t (the anti-pseudo-gradient) in a velocity and steps along it:
//! v_t = beta v_{t-1} + Delta_t, x_{t+1} = x_t + eta v_t, with v_{-1} = 0. With beta = 0 and
//! eta = 1 it is FedAvg exactly (tested bit for bit). The paper studies the effective learning
//! rate eta_client / (1 - beta) and finds momentum helps most under skewed label distributions.
//! Running-statistic buffers are averaged, not accelerated: x += Delta for them.
//!
//! Parameters:
//! - `server_lr` (eta > 0, default 1.0: the paper's server applies v as it is).
//! - `momentum` (beta in [0, 1), default 0.9; the paper sweeps 0.7 to 0.997).
//! - `lr_scaling` (`"none"` (default), `"sqrt"` or `"linear"`) and `reference_cohort` (M_ref >= 1,
//!   default 10): scale eta by (M / M_ref)^p with p = 0, 1/2, 1, where M is the number of clients
//!   the aggregator accepted this round (Charles et al., NeurIPS 2021; see `large_cohort`).
//!
//! ```toml
//! [algorithm]
//! use = "fedavgm"
//! server_lr = 1.0
//! momentum = 0.9
//! lr_scaling = "none"
//! reference_cohort = 10
//! ```

use fedkit_core::{Aggregate, Algorithm, Metrics, Params, Result, RoundCtx};
use serde::{Deserialize, Serialize};

use super::server_opt::{
    LrScaling, aggregated_clients, scaled_server_lr, server_step, state_buffer, validate_decay,
    validate_scaled_server_lr,
};

/// FedAvgM.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedAvgM {
    /// Server learning rate eta.
    pub server_lr: f64,
    /// Server momentum beta.
    pub momentum: f64,
    /// Cohort-size scaling rule of eta.
    pub lr_scaling: LrScaling,
    /// Reference cohort size M_ref of the scaling rule.
    pub reference_cohort: usize,
}

impl Default for FedAvgM {
    fn default() -> Self {
        FedAvgM { server_lr: 1.0, momentum: 0.9, lr_scaling: LrScaling::None, reference_cohort: 10 }
    }
}

impl FedAvgM {
    /// Check the ranges.
    pub fn validated(self) -> Result<Self> {
        validate_scaled_server_lr(self.server_lr, self.reference_cohort)?;
        validate_decay("momentum", self.momentum)?;
        Ok(self)
    }
}

/// The server velocity v (`None` until the first round).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FedAvgMState {
    /// Velocity v.
    pub velocity: Option<Params>,
}

impl Algorithm for FedAvgM {
    type Client = ();
    type Server = FedAvgMState;

    fn server_update(&self, r: &RoundCtx, w: &mut Params, s: &mut FedAvgMState, agg: &Aggregate) -> Result<Metrics> {
        let eta = scaled_server_lr(self.server_lr, self.lr_scaling, self.reference_cohort, aggregated_clients(r, agg));
        let (lr, beta) = (eta as f32, self.momentum as f32);
        let v = state_buffer(&mut s.velocity, w, 0.0)?.as_mut_slice();
        server_step(w, &agg.delta, |i, d| {
            v[i] = beta * v[i] + d;
            lr * v[i]
        })?;
        Ok(Metrics::from([("server_lr".to_string(), eta)]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::server_opt::testing::{aggregate, layout, params, with_round};
    use super::*;

    #[test]
    fn no_momentum_and_unit_lr_is_fedavg_bit_for_bit() {
        let l = layout(5, 2);
        let a = FedAvgM { momentum: 0.0, ..FedAvgM::default() }.validated().unwrap();
        let mut rng = fedkit_core::RngStream::new(11);
        let mut w = params(&l, (0..7).map(|_| rng.gaussian(0.0, 1.0) as f32).collect());
        let (mut fedavg, mut s) = (w.clone(), FedAvgMState::default());
        for round in 1..=6 {
            let agg = aggregate(&l, (0..7).map(|_| rng.gaussian(0.0, 0.1) as f32).collect(), 3);
            with_round(round, 3, &w.clone(), |r| a.server_update(r, &mut w, &mut s, &agg)).unwrap();
            fedavg.axpy(1.0, &agg.delta);
            assert_eq!(w.as_slice(), fedavg.as_slice(), "round {round}");
        }
    }

    #[test]
    fn momentum_accumulates_the_deltas() {
        let l = layout(1, 1);
        let a = FedAvgM { server_lr: 0.5, ..FedAvgM::default() };
        let (mut w, mut s) = (params(&l, vec![0.0, 0.0]), FedAvgMState::default());
        for (round, d) in [(1, 1.0), (2, 2.0)] {
            let agg = aggregate(&l, vec![d, d], 2);
            with_round(round, 2, &w.clone(), |r| a.server_update(r, &mut w, &mut s, &agg)).unwrap();
        }
        // v1 = 1, x1 = 0.5; v2 = 0.9 + 2 = 2.9, x2 = 0.5 + 1.45 = 1.95; the buffer moves by 1 + 2.
        assert!((w.as_slice()[0] - 1.95).abs() < 1e-6, "{:?}", w.as_slice());
        assert_eq!(w.as_slice()[1], 3.0);
        assert!(FedAvgM { momentum: 1.0, ..FedAvgM::default() }.validated().is_err());
    }
}
