//! FedAdam, FedYogi and FedAdagrad: Reddi et al., "Adaptive Federated Optimization", ICLR 2021
//! (Algorithm 2, FedOpt with an adaptive server optimiser).
//!
//! Clients run FedAvg's local SGD from x_t. The server treats the aggregated delta Delta_t (the
//! mean of x_k - x_t, an anti-gradient) as a pseudo-gradient and takes one adaptive step on it,
//! coordinate by coordinate:
//!
//! - m_t = beta1 m_{t-1} + (1 - beta1) Delta_t
//! - `fedadagrad`: v_t = v_{t-1} + Delta_t^2
//! - `fedadam`: v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2
//! - `fedyogi`: v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2)
//! - x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)
//!
//! with m_{-1} = 0 and v_{-1} = tau^2 (Algorithm 2 asks for v_{-1} >= tau^2) and, as in
//! Algorithm 2, no bias correction. Running-statistic buffers (batch-norm means and variances) are
//! averaged, not optimised: x += Delta for them. Implementations built on Keras optimisers
//! differ slightly: Keras Adam corrects the bias, Keras Adagrad has no momentum (`beta1 = 0`
//! gives that FedAdagrad).
//!
//! Parameters (one set for all three names):
//! - `server_lr` (eta > 0): 0.01 for `fedadam` and `fedyogi`, 0.1 for `fedadagrad`. The paper
//!   tunes eta per task on a log grid; these are typical of its best values (Adagrad's larger).
//! - `beta1` (beta1 in [0, 1), default 0.9), `beta2` (beta2 in [0, 1), default 0.99; unused by
//!   `fedadagrad`), `tau` (tau > 0, the adaptivity, default 1e-3 as the paper recommends).
//! - `lr_scaling` (`"none"` (default), `"sqrt"` or `"linear"`) and `reference_cohort` (M_ref >= 1,
//!   default 10): scale eta by (M / M_ref)^p with p = 0, 1/2, 1, where M is the number of clients
//!   the aggregator accepted this round (Charles et al., NeurIPS 2021; see `large_cohort`).
//!
//! ```toml
//! [algorithm]
//! use = "fedadam"
//! server_lr = 0.01
//! beta1 = 0.9
//! beta2 = 0.99
//! tau = 0.001
//! ```
//!
//! ```toml
//! [algorithm]
//! use = "fedyogi"
//! server_lr = 0.01
//! lr_scaling = "sqrt"
//! reference_cohort = 10
//! ```
//!
//! ```toml
//! [algorithm]
//! use = "fedadagrad"
//! server_lr = 0.1
//! beta1 = 0.0
//! ```

use fedkit_core::registry::params_resolved;
use fedkit_core::{Aggregate, Algorithm, Error, Metrics, Params, Result, RoundCtx};
use serde::{Deserialize, Serialize};

use super::server_opt::{
    LrScaling, aggregated_clients, scaled_server_lr, server_step, state_buffer, validate_decay,
    validate_scaled_server_lr,
};

/// Which adaptive server optimiser (the registered name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Variant {
    /// `fedadam`.
    #[default]
    Adam,
    /// `fedyogi`.
    Yogi,
    /// `fedadagrad`.
    Adagrad,
}

impl Variant {
    /// The default server learning rate of this variant.
    pub fn default_server_lr(self) -> f64 {
        match self {
            Variant::Adam | Variant::Yogi => 0.01,
            Variant::Adagrad => 0.1,
        }
    }
}

/// FedAdam / FedYogi / FedAdagrad.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedOpt {
    /// Which optimiser (set from the registered name, not a config key).
    #[serde(skip)]
    pub variant: Variant,
    /// Server learning rate eta.
    pub server_lr: f64,
    /// First-moment decay beta1.
    pub beta1: f64,
    /// Second-moment decay beta2 (Adam, Yogi).
    pub beta2: f64,
    /// Adaptivity tau.
    pub tau: f64,
    /// Cohort-size scaling rule of eta.
    pub lr_scaling: LrScaling,
    /// Reference cohort size M_ref of the scaling rule.
    pub reference_cohort: usize,
}

impl Default for FedOpt {
    fn default() -> Self {
        FedOpt {
            variant: Variant::Adam,
            server_lr: Variant::Adam.default_server_lr(),
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            lr_scaling: LrScaling::None,
            reference_cohort: 10,
        }
    }
}

/// The server optimiser's moments (`None` until the first round).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FedOptState {
    /// First moment m.
    pub m: Option<Params>,
    /// Second moment v.
    pub v: Option<Params>,
}

/// sign(x) with sign(0) = 0 (`f32::signum(0.0)` is 1).
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

impl FedOpt {
    /// Build `variant` from its config table (the variant's default `server_lr` filled in),
    /// writing the resolved parameters into `resolved`.
    pub fn build(variant: Variant, table: &toml::Table, resolved: &mut toml::Table) -> Result<Self> {
        let mut table = table.clone();
        table.entry("server_lr").or_insert_with(|| toml::Value::Float(variant.default_server_lr()));
        FedOpt { variant, ..params_resolved::<FedOpt>(&table, "", resolved)? }.validated()
    }

    /// Check the ranges.
    pub fn validated(self) -> Result<Self> {
        validate_scaled_server_lr(self.server_lr, self.reference_cohort)?;
        validate_decay("beta1", self.beta1)?;
        validate_decay("beta2", self.beta2)?;
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return Err(Error::config("tau", format!("must be a finite number > 0, got {}", self.tau)));
        }
        Ok(self)
    }
}

impl Algorithm for FedOpt {
    type Client = ();
    type Server = FedOptState;

    fn server_update(&self, r: &RoundCtx, w: &mut Params, s: &mut FedOptState, agg: &Aggregate) -> Result<Metrics> {
        let eta = scaled_server_lr(self.server_lr, self.lr_scaling, self.reference_cohort, aggregated_clients(r, agg));
        let (lr, b1, b2, tau) = (eta as f32, self.beta1 as f32, self.beta2 as f32, self.tau as f32);
        let m = state_buffer(&mut s.m, w, 0.0)?.as_mut_slice();
        let v = state_buffer(&mut s.v, w, tau * tau)?.as_mut_slice();
        let variant = self.variant;
        server_step(w, &agg.delta, |i, d| {
            let d2 = d * d;
            m[i] = b1 * m[i] + (1.0 - b1) * d;
            v[i] = match variant {
                Variant::Adagrad => v[i] + d2,
                Variant::Adam => b2 * v[i] + (1.0 - b2) * d2,
                Variant::Yogi => v[i] - (1.0 - b2) * d2 * sign(v[i] - d2),
            };
            lr * m[i] / (v[i].sqrt() + tau)
        })?;
        Ok(Metrics::from([("server_lr".to_string(), eta)]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::server_opt::testing::{aggregate, layout, params, with_round};
    use super::*;

    fn opt(variant: Variant) -> FedOpt {
        FedOpt::build(variant, &toml::Table::new(), &mut toml::Table::new()).unwrap()
    }

    #[test]
    fn one_fedadam_step_by_hand() {
        let l = layout(3, 1);
        let a = opt(Variant::Adam);
        let mut w = params(&l, vec![1.0, 1.0, 1.0, 5.0]);
        let mut s = FedOptState::default();
        let agg = aggregate(&l, vec![0.1, -0.2, 0.0, 0.5], 4);
        with_round(1, 4, &w.clone(), |r| a.server_update(r, &mut w, &mut s, &agg)).unwrap();
        // Delta = 0.1: m = 0.1 * 0.1 = 0.01, v = 0.99 * 1e-6 + 0.01 * 0.01 = 1.0099e-4,
        // step = 0.01 * 0.01 / (sqrt(1.0099e-4) + 1e-3) = 0.0090503...
        let step = |d: f64| 0.01 * (0.1 * d) / ((0.99 * 1e-6 + 0.01 * d * d).sqrt() + 1e-3);
        assert!((step(0.1) - 0.0090503).abs() < 1e-7);
        let w = w.as_slice();
        assert!((w[0] as f64 - (1.0 + step(0.1))).abs() < 1e-6, "{w:?}");
        assert!((w[1] as f64 - (1.0 + step(-0.2))).abs() < 1e-6, "{w:?}");
        assert_eq!(w[2], 1.0, "a zero pseudo-gradient does not move x (no momentum yet)");
        assert_eq!(w[3], 5.5, "buffers move by the aggregate");
        let v = s.v.as_ref().unwrap().as_slice();
        assert!((v[0] as f64 - 1.0099e-4).abs() < 1e-9);
        assert!((v[2] as f64 - 0.99e-6).abs() < 1e-10, "v starts at tau^2");
    }

    #[test]
    fn fedyogi_second_moment_stays_nonnegative_and_moves_at_most_one_step() {
        let (n, l) = (64, layout(64, 0));
        let a = opt(Variant::Yogi);
        let mut w = params(&l, vec![0.0; n]);
        let mut s = FedOptState::default();
        let mut rng = fedkit_core::RngStream::new(3);
        let mut changed = 0;
        for round in 1..=40 {
            // Magnitudes spanning 1e-4 .. 1 so that v meets both signs of v - Delta^2.
            let d: Vec<f32> =
                (0..n).map(|_| (rng.gaussian(0.0, 1.0) * 10f64.powf(-4.0 * rng.uniform())) as f32).collect();
            let before = s.v.clone().unwrap_or_else(|| params(&l, vec![1e-6; n]));
            let agg = aggregate(&l, d.clone(), 3);
            with_round(round, 3, &w.clone(), |r| a.server_update(r, &mut w, &mut s, &agg)).unwrap();
            let after = s.v.as_ref().unwrap();
            for ((&v0, &v1), &d) in before.as_slice().iter().zip(after.as_slice()).zip(&d) {
                let bound = (1.0 - 0.99) * (d as f64) * (d as f64);
                assert!(v1 >= 0.0, "v stays >= 0");
                let rounding = f32::EPSILON as f64 * v0.max(v1) as f64;
                assert!(
                    ((v1 - v0) as f64).abs() <= bound * (1.0 + 1e-5) + rounding,
                    "|v1 - v0| <= (1 - beta2) Delta^2"
                );
                assert!((v1 - v0) as f64 * (d as f64 * d as f64 - v0 as f64) >= 0.0, "v moves toward Delta^2");
                changed += usize::from(v1 != v0);
            }
        }
        assert!(changed > 1000, "v must actually move ({changed})");
    }

    #[test]
    fn fedadagrad_second_moment_is_nondecreasing() {
        let (n, l) = (16, layout(16, 0));
        let a = opt(Variant::Adagrad);
        assert_eq!(a.server_lr, 0.1, "fedadagrad's default server_lr");
        let mut w = params(&l, vec![0.0; n]);
        let mut s = FedOptState::default();
        let mut rng = fedkit_core::RngStream::new(5);
        for round in 1..=20 {
            let d: Vec<f32> = (0..n).map(|_| rng.gaussian(0.0, 0.3) as f32).collect();
            let before = s.v.clone().unwrap_or_else(|| params(&l, vec![1e-6; n]));
            let agg = aggregate(&l, d.clone(), 2);
            with_round(round, 2, &w.clone(), |r| a.server_update(r, &mut w, &mut s, &agg)).unwrap();
            for ((&v0, &v1), &d) in before.as_slice().iter().zip(s.v.as_ref().unwrap().as_slice()).zip(&d) {
                assert!(v1 >= v0, "v is nondecreasing");
                assert!(((v1 - v0) - d * d).abs() <= 1e-6 * v1.max(1.0), "v grows by Delta^2");
            }
        }
    }

    #[test]
    fn cohort_scaling_multiplies_the_step() {
        let l = layout(2, 0);
        let step_with = |scaling: LrScaling, cohort: u32| {
            let a = FedOpt { lr_scaling: scaling, ..opt(Variant::Adam) };
            let mut w = params(&l, vec![0.0, 0.0]);
            let agg = aggregate(&l, vec![0.3, -0.1], cohort);
            with_round(1, cohort, &w.clone(), |r| a.server_update(r, &mut w, &mut FedOptState::default(), &agg))
                .unwrap();
            w.as_slice().to_vec()
        };
        let (base, sqrt, linear) =
            (step_with(LrScaling::None, 40), step_with(LrScaling::Sqrt, 40), step_with(LrScaling::Linear, 40));
        for i in 0..2 {
            assert!((sqrt[i] - 2.0 * base[i]).abs() < 1e-7, "sqrt(40 / 10) = 2");
            assert!((linear[i] - 4.0 * base[i]).abs() < 1e-7, "40 / 10 = 4");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |k: &str, v: toml::Value| {
            let t = toml::Table::from_iter([(k.to_string(), v)]);
            FedOpt::build(Variant::Yogi, &t, &mut toml::Table::new()).unwrap_err().to_string()
        };
        assert!(bad("beta2", 1.0.into()).contains("beta2"));
        assert!(bad("tau", 0.0.into()).contains("tau"));
        assert!(bad("server_lr", (-1.0).into()).contains("server_lr"));
        assert!(bad("lr_scaling", "cubic".into()).contains("sqrt"));
        assert!(bad("variant", "adam".into()).contains("variant"), "the variant is not a config key");
    }
}
