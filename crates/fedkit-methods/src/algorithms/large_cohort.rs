//! Large-cohort training: Charles, Garrett, Huo, Shmulyian, Smith, "On Large-Cohort Training for
//! Federated Learning", NeurIPS 2021.
//!
//! FedAvg with a server learning rate that follows a cohort-size scaling rule, the federated
//! analogue of the large-batch rules of centralised training: with M the number of clients whose
//! updates were aggregated this round (the aggregator's `accepted` clients), the server sets
//! x_{t+1} = x_t + eta_s(M) Delta_t with eta_s(M) = eta_s (M / M_ref)^p, p = 0 (`"none"`),
//! 1/2 (`"sqrt"`) or 1 (`"linear"`). The paper finds diminishing returns per round from larger
//! cohorts (client updates become nearly orthogonal, so their mean shrinks) and studies such
//! scaling rules, as in large-batch training, to use them. Each round records the `server_lr`.
//! With `lr_scaling = "none"` and eta_s = 1 it is FedAvg exactly (tested). Running-statistic
//! buffers are averaged, not scaled. `fedadam`, `fedyogi`, `fedadagrad` and `fedavgm` take the
//! same two scaling keys.
//!
//! Parameters:
//! - `server_lr` (eta_s > 0, default 1.0): the server learning rate at the reference cohort size.
//! - `lr_scaling` (`"none"`, `"sqrt"` (default) or `"linear"`): the exponent p.
//! - `reference_cohort` (M_ref >= 1, default 10): the cohort size at which eta_s(M) = eta_s.
//!
//! ```toml
//! [algorithm]
//! use = "large_cohort"
//! server_lr = 1.0
//! lr_scaling = "sqrt"
//! reference_cohort = 10
//! ```

use fedkit_core::{Aggregate, Algorithm, Metrics, Params, Result, RoundCtx};
use serde::{Deserialize, Serialize};

use super::server_opt::{LrScaling, aggregated_clients, scaled_server_lr, server_step, validate_scaled_server_lr};

/// FedAvg with a cohort-size-scaled server learning rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LargeCohort {
    /// Server learning rate eta_s at the reference cohort size.
    pub server_lr: f64,
    /// Cohort-size scaling rule.
    pub lr_scaling: LrScaling,
    /// Reference cohort size M_ref.
    pub reference_cohort: usize,
}

impl Default for LargeCohort {
    fn default() -> Self {
        LargeCohort { server_lr: 1.0, lr_scaling: LrScaling::Sqrt, reference_cohort: 10 }
    }
}

impl LargeCohort {
    /// Check the ranges.
    pub fn validated(self) -> Result<Self> {
        validate_scaled_server_lr(self.server_lr, self.reference_cohort)?;
        Ok(self)
    }
}

impl Algorithm for LargeCohort {
    type Client = ();
    type Server = ();

    fn server_update(&self, r: &RoundCtx, w: &mut Params, _: &mut (), agg: &Aggregate) -> Result<Metrics> {
        let eta = scaled_server_lr(self.server_lr, self.lr_scaling, self.reference_cohort, aggregated_clients(r, agg));
        let lr = eta as f32;
        server_step(w, &agg.delta, |_, d| lr * d)?;
        Ok(Metrics::from([("server_lr".to_string(), eta)]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::server_opt::testing::{aggregate, layout, params, with_round};
    use super::*;

    /// The global model after one server step from 0 with `delta`, M = `cohort` of 40 sampled.
    fn step(a: &LargeCohort, delta: &[f32], cohort: u32) -> Vec<f32> {
        let l = layout(delta.len(), 0);
        let mut w = params(&l, vec![0.0; delta.len()]);
        let agg = aggregate(&l, delta.to_vec(), cohort);
        with_round(3, 40, &w.clone(), |r| a.server_update(r, &mut w, &mut (), &agg)).unwrap();
        w.into_vec()
    }

    #[test]
    fn scaled_step_is_eta_times_the_rule_times_delta() {
        let delta = [0.4f32, -1.0, 0.0];
        for (scaling, m, factor) in [
            (LrScaling::Sqrt, 40, 2.0f64),
            (LrScaling::Sqrt, 90, 3.0),
            (LrScaling::Sqrt, 5, (0.5f64).sqrt()),
            (LrScaling::Linear, 40, 4.0),
            (LrScaling::Linear, 5, 0.5),
            (LrScaling::None, 40, 1.0),
        ] {
            let a = LargeCohort { server_lr: 0.7, lr_scaling: scaling, reference_cohort: 10 };
            let got = step(&a, &delta, m);
            for (g, d) in got.iter().zip(delta) {
                let want = 0.7 * factor * d as f64;
                assert!((*g as f64 - want).abs() < 1e-6, "{scaling:?} M = {m}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn none_with_unit_lr_is_fedavg() {
        let a = LargeCohort { lr_scaling: LrScaling::None, ..LargeCohort::default() };
        let delta = [0.123f32, -4.5e-3, 7.0];
        assert_eq!(step(&a, &delta, 37), delta.to_vec());
        assert!(LargeCohort { reference_cohort: 0, ..a }.validated().is_err());
    }
}
