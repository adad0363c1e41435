//! Shared pieces of the server optimisers (`fedadam`, `fedyogi`, `fedadagrad`, `fedavgm`,
//! `large_cohort`): the cohort-size scaling rule of the server learning rate (Charles et al., "On
//! Large-Cohort Training for Federated Learning", NeurIPS 2021) and a per-coordinate server step
//! that leaves running-statistic buffers out of the optimiser. Not a registered method.

use fedkit_core::{Aggregate, Error, ParamKind, Params, Result, RoundCtx};
use serde::{Deserialize, Serialize};

/// How the server learning rate grows with the number of clients M aggregated in a round:
/// eta_s(M) = eta_s * (M / M_ref)^p.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrScaling {
    /// p = 0: the server learning rate does not depend on M.
    #[default]
    None,
    /// p = 1/2: the square-root rule of large-batch training.
    Sqrt,
    /// p = 1: the linear rule of large-batch training.
    Linear,
}

/// The server learning rate eta * (M / M_ref)^p for a round that aggregated `aggregated` (M)
/// clients, with `reference_cohort` M_ref.
pub fn scaled_server_lr(server_lr: f64, scaling: LrScaling, reference_cohort: usize, aggregated: usize) -> f64 {
    let ratio = aggregated as f64 / reference_cohort.max(1) as f64;
    match scaling {
        LrScaling::None => server_lr,
        LrScaling::Sqrt => server_lr * ratio.sqrt(),
        LrScaling::Linear => server_lr * ratio,
    }
}

/// M: the number of clients whose updates the aggregator combined this round (`accepted`), or
/// the round's running cohort when an aggregator leaves `accepted` empty.
pub fn aggregated_clients(r: &RoundCtx, agg: &Aggregate) -> usize {
    if agg.accepted.is_empty() { r.cohort.len().max(1) } else { agg.accepted.len() }
}

/// Check `server_lr` (finite, > 0).
pub fn validate_server_lr(server_lr: f64) -> Result<()> {
    if !(server_lr.is_finite() && server_lr > 0.0) {
        return Err(Error::config("server_lr", format!("must be a finite number > 0, got {server_lr}")));
    }
    Ok(())
}

/// Check `server_lr` (finite, > 0) and `reference_cohort` (>= 1) of a scaled server learning rate.
pub fn validate_scaled_server_lr(server_lr: f64, reference_cohort: usize) -> Result<()> {
    validate_server_lr(server_lr)?;
    if reference_cohort == 0 {
        return Err(Error::config("reference_cohort", "must be at least 1 (a number of clients)"));
    }
    Ok(())
}

/// Check a decay rate (`beta1`, `beta2`, `momentum`) is in [0, 1).
pub fn validate_decay(key: &str, value: f64) -> Result<()> {
    if !(0.0..1.0).contains(&value) {
        return Err(Error::config(key, format!("must be in [0, 1), got {value}")));
    }
    Ok(())
}

/// The optimiser buffer in `slot` (created filled with `init` in `like`'s layout on first use).
pub fn state_buffer<'a>(slot: &'a mut Option<Params>, like: &Params, init: f32) -> Result<&'a mut Params> {
    let buf = slot.get_or_insert_with(|| {
        let mut p = like.zeros_like();
        p.as_mut_slice().fill(init);
        p
    });
    if buf.len() != like.len() {
        return Err(Error::Method(format!(
            "server optimiser state has {} values but the model has {}",
            buf.len(),
            like.len()
        )));
    }
    Ok(buf)
}

/// The server step w += step(i, delta_i) for every trained coordinate i; running-statistic
/// buffers (`ParamKind::Buffer`) are averaged, not optimised: w_i += delta_i for them.
pub fn server_step(w: &mut Params, delta: &Params, mut step: impl FnMut(usize, f32) -> f32) -> Result<()> {
    if w.len() != delta.len() {
        return Err(Error::Shape(format!("aggregate has {} values, the model {}", delta.len(), w.len())));
    }
    let layout = w.layout().clone();
    let (w, d) = (w.as_mut_slice(), delta.as_slice());
    for e in layout.entries() {
        if e.kind == ParamKind::Buffer {
            e.range().for_each(|i| w[i] += d[i]);
        } else {
            e.range().for_each(|i| w[i] += step(i, d[i]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::Layout;
    use std::sync::Arc;

    #[test]
    fn scaling_rules() {
        assert_eq!(scaled_server_lr(0.5, LrScaling::None, 10, 40), 0.5);
        assert_eq!(scaled_server_lr(0.5, LrScaling::Sqrt, 10, 40), 1.0);
        assert_eq!(scaled_server_lr(0.5, LrScaling::Linear, 10, 40), 2.0);
        assert_eq!(scaled_server_lr(0.5, LrScaling::Linear, 10, 5), 0.25);
        assert!(validate_scaled_server_lr(0.0, 10).is_err() && validate_scaled_server_lr(1.0, 0).is_err());
        assert!(validate_decay("beta1", 1.0).is_err() && validate_decay("beta1", 0.0).is_ok());
    }

    #[test]
    fn buffers_are_averaged_not_stepped() {
        let mut l = Layout::new();
        l.push("w", &[2], ParamKind::Weight);
        l.push("running_mean", &[1], ParamKind::Buffer);
        let l = Arc::new(l);
        let mut w = Params::from_vec(l.clone(), vec![1.0, 1.0, 1.0]).unwrap();
        let d = Params::from_vec(l, vec![0.5, -0.5, 0.25]).unwrap();
        server_step(&mut w, &d, |_, d| 10.0 * d).unwrap();
        assert_eq!(w.as_slice(), &[6.0, -4.0, 1.25]);
    }
}

/// Fixtures for the server-optimiser tests: tiny layouts, aggregates and round contexts.
#[cfg(test)]
pub(crate) mod testing {
    use fedkit_core::{Aggregate, Extras, Layout, Metrics, ParamKind, Params, RoundCtx};
    use std::sync::Arc;

    /// A layout of `weights` trained values (`w`) followed by `buffers` running statistics.
    pub fn layout(weights: usize, buffers: usize) -> Arc<Layout> {
        let mut l = Layout::new();
        l.push("w", &[weights], ParamKind::Weight);
        if buffers > 0 {
            l.push("running_mean", &[buffers], ParamKind::Buffer);
        }
        Arc::new(l)
    }

    /// Params of `layout` holding `values`.
    pub fn params(layout: &Arc<Layout>, values: Vec<f32>) -> Params {
        Params::from_vec(layout.clone(), values).expect("values fit the layout")
    }

    /// An aggregate with delta `values` that accepted clients 0..accepted.
    pub fn aggregate(layout: &Arc<Layout>, values: Vec<f32>, accepted: u32) -> Aggregate {
        Aggregate {
            delta: params(layout, values),
            weight: accepted as f32,
            extras: Extras::default(),
            accepted: (0..accepted).collect(),
            metrics: Metrics::new(),
            weighting: fedkit_core::Weighting::UpdateWeights,
        }
    }

    /// Run `f` with a round context for `round` whose cohort is clients 0..cohort.
    pub fn with_round<T>(round: u32, cohort: u32, global: &Params, f: impl FnOnce(&RoundCtx) -> T) -> T {
        let ids: Vec<u32> = (0..cohort).collect();
        let malicious = vec![false; cohort as usize];
        let r = RoundCtx {
            round,
            cohort: &ids,
            global,
            seed: 7,
            population: cohort as usize,
            malicious: &malicious,
            draws: &[],
        };
        f(&r)
    }
}
