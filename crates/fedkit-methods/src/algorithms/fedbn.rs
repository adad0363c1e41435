//! FedBN: Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
//! Normalization", ICLR 2021.
//!
//! FedAvg in which every client keeps its batch normalisation layers local: their scales and
//! shifts (gamma, beta) and their running statistics (mean, variance), i.e. the layout entries of
//! kind `NormScale`, `NormShift` and `Buffer`. Client k starts each round from the global model
//! with its own BN entries substituted (in its first round, the global ones), trains E local
//! epochs as FedAvg does, keeps the BN entries of the result and sends
//! delta_k = w_k - w_t with its BN entries set to 0: they never leave the client. The server
//! averages the rest, w_{t+1} = w_t + sum_k (n_k / n) delta_k on the non-BN entries, and never
//! changes the global BN entries. A client's personalised model (per-client evaluation,
//! `[eval] clients = true`) is the global model with its own BN entries.
//!
//! Needs a model with batch norm (e.g. `[model] use = "mlp"` with `norm = "batch"`); on a model
//! without norm entries it is FedAvg.
//!
//! Parameters: none of its own; E, B and eta are `[client] epochs, batch_size, lr`.
//!
//! ```toml
//! [algorithm]
//! use = "fedbn"
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Layout, Metrics, Model, NoHook, ParamKind, Params, Result, RoundCtx,
    Update, local_update_from,
};
use serde::{Deserialize, Serialize};

/// FedBN (no parameters).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedBn {}

/// True for the entries FedBN keeps on the client: norm scales and shifts, and buffers (running
/// statistics).
pub fn is_local(kind: ParamKind) -> bool {
    matches!(kind, ParamKind::NormScale | ParamKind::NormShift | ParamKind::Buffer)
}

/// The index ranges of the entries FedBN keeps on the client, in layout order.
fn local_ranges(layout: &Layout) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    layout.entries().iter().filter(|e| is_local(e.kind)).map(|e| e.range())
}

/// The values of the local entries of `w`, concatenated in layout order.
fn local_values(w: &Params) -> Vec<f32> {
    local_ranges(w.layout()).flat_map(|r| w.as_slice()[r].iter().copied()).collect()
}

/// `global` with its local entries replaced by `values` (as [`local_values`] returns them); an
/// error when `values` do not fit the layout.
fn with_local_values(global: &Params, values: &[f32]) -> Result<Params> {
    let want: usize = local_ranges(global.layout()).map(|r| r.len()).sum();
    if values.len() != want {
        return Err(fedkit_core::Error::Shape(format!(
            "fedbn: {} saved norm values for a model with {want}",
            values.len()
        )));
    }
    let mut w = global.clone();
    let mut rest = values;
    for r in local_ranges(global.layout()) {
        let (head, tail) = rest.split_at(r.len());
        w.as_mut_slice()[r].copy_from_slice(head);
        rest = tail;
    }
    Ok(w)
}

/// A client's state: its BN entries' values (layout order), `None` until it first trains.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalNorms(pub Option<Vec<f32>>);

impl Algorithm for FedBn {
    type Client = LocalNorms;
    type Server = ();

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, st: &mut LocalNorms) -> Result<Update> {
        let start = match &st.0 {
            Some(values) => with_local_values(cx.global, values)?,
            None => cx.global.clone(),
        };
        let (mut u, w) = local_update_from(cx, start, "batches", m, d, &mut NoHook)?;
        st.0 = Some(local_values(&w));
        let layout = u.delta.layout().clone();
        local_ranges(&layout).for_each(|r| u.delta.as_mut_slice()[r].fill(0.0));
        Ok(u)
    }

    /// `w += aggregate` on the shared entries only: the global BN entries never change, even
    /// when a server stage (noise, compression) made the aggregate's BN entries non-zero.
    fn server_update(&self, _r: &RoundCtx, w: &mut Params, _s: &mut (), agg: &Aggregate) -> Result<Metrics> {
        let layout = w.layout().clone();
        for e in layout.entries().iter().filter(|e| !is_local(e.kind)) {
            let r = e.range();
            w.as_mut_slice()[r.clone()].iter_mut().zip(&agg.delta.as_slice()[r]).for_each(|(w, d)| *w += d);
        }
        Ok(Metrics::new())
    }

    fn personalize(&self, global: &Params, st: &LocalNorms) -> Option<Params> {
        // A state that does not fit the model (never produced by client_update) falls back to the
        // global model rather than failing the evaluation.
        st.0.as_ref().and_then(|values| with_local_values(global, values).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::Extras;
    use std::sync::Arc;

    /// A layout with every kind of entry: weight, bias, norm scale and shift, two buffers.
    fn params(values: impl Fn(usize) -> f32) -> Params {
        let mut l = Layout::new();
        l.push("fc.weight", &[2, 2], ParamKind::Weight);
        l.push("fc.bias", &[2], ParamKind::Bias);
        l.push("bn.weight", &[2], ParamKind::NormScale);
        l.push("bn.bias", &[2], ParamKind::NormShift);
        l.push("bn.running_mean", &[2], ParamKind::Buffer);
        l.push("bn.running_var", &[2], ParamKind::Buffer);
        let l = Arc::new(l);
        Params::from_vec(l.clone(), (0..l.total()).map(values).collect()).unwrap()
    }

    // The personalised model is the global model with exactly the client's norm entries (scale,
    // shift, running statistics) substituted; without state it is the global model.
    #[test]
    fn personalize_substitutes_exactly_the_norm_entries() {
        let global = params(|i| i as f32);
        let own = params(|i| -1.0 - i as f32);
        let st = LocalNorms(Some(local_values(&own)));
        assert_eq!(st.0.as_ref().map(Vec::len), Some(8));
        let p = FedBn {}.personalize(&global, &st).unwrap();
        for (e, v) in p.tensors() {
            let want = if is_local(e.kind) { &own } else { &global };
            assert_eq!(v, &want.as_slice()[e.range()], "{}", e.name);
        }
        assert_eq!(FedBn {}.personalize(&global, &LocalNorms(None)), None);
        assert!(with_local_values(&global, &[1.0; 7]).is_err(), "a state of the wrong size is an error");
        assert!(with_local_values(&global, &[1.0; 9]).is_err(), "a state of the wrong size is an error");
    }

    // The server rule adds the aggregate to the shared entries and leaves the global norm entries
    // untouched, even when the aggregate carries norm values (e.g. after server-side noise).
    #[test]
    fn server_never_changes_global_norm_entries() {
        let mut w = params(|i| i as f32);
        let before = w.clone();
        let agg = Aggregate {
            delta: params(|_| 0.5),
            weight: 1.0,
            extras: Extras::default(),
            accepted: vec![0],
            metrics: Metrics::new(),
            weighting: fedkit_core::Weighting::UpdateWeights,
        };
        let r = RoundCtx {
            round: 1,
            cohort: &[0],
            global: &before,
            seed: 0,
            population: 1,
            malicious: &[false],
            draws: &[],
        };
        FedBn {}.server_update(&r, &mut w, &mut (), &agg).unwrap();
        for (e, v) in w.tensors() {
            let old = &before.as_slice()[e.range()];
            if is_local(e.kind) {
                assert_eq!(v, old, "{} changed", e.name);
            } else {
                assert!(v.iter().zip(old).all(|(a, b)| *a == b + 0.5), "{}: {v:?}", e.name);
            }
        }
    }
}
