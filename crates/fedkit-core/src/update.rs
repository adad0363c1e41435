//! The values that cross the wire: what the server sends down, what a client sends back, and
//! what the aggregator makes of the cohort. All serialisable, so a networked transport carries
//! them unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Params;

/// Client identifier: the index of the client in the federation.
pub type ClientId = u32;

/// Named scalar metrics, ordered by name so that output is reproducible.
pub type Metrics = BTreeMap<String, f64>;

/// One typed side payload (SCAFFOLD's control variate, FedNova's tau, a quantiser's scale, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Extra {
    Scalar(f64),
    Vector(Vec<f32>),
    Params(Params),
    Bytes(Vec<u8>),
}

/// Named side payloads, ordered by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Extras(pub BTreeMap<String, Extra>);

impl Extras {
    /// Set `key`.
    pub fn insert(&mut self, key: &str, v: Extra) {
        self.0.insert(key.to_string(), v);
    }
    /// The payload at `key`.
    pub fn get(&self, key: &str) -> Option<&Extra> {
        self.0.get(key)
    }
    /// The scalar at `key`, if it is one.
    pub fn scalar(&self, key: &str) -> Option<f64> {
        match self.0.get(key) {
            Some(Extra::Scalar(x)) => Some(*x),
            _ => None,
        }
    }
    /// The parameters at `key`, if they are.
    pub fn params(&self, key: &str) -> Option<&Params> {
        match self.0.get(key) {
            Some(Extra::Params(p)) => Some(p),
            _ => None,
        }
    }
    /// The weighted mean, key by key, of several clients' extras (SCAFFOLD's control-variate
    /// deltas, FedNova's tau): each key is averaged over the clients that sent it, with their
    /// weights renormalised. Scalars, vectors and params are averaged (in f64, in the given
    /// order); byte payloads are not carried. Mismatched kinds or lengths are an error.
    pub fn weighted_mean(items: &[(&Extras, f64)]) -> crate::Result<Extras> {
        let mut keys: Vec<&String> = items.iter().flat_map(|(e, _)| e.0.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut out = Extras::default();
        for k in keys {
            let have: Vec<(&Extra, f64)> = items.iter().filter_map(|(e, w)| e.0.get(k).map(|v| (v, *w))).collect();
            let total: f64 = have.iter().map(|h| h.1).sum();
            if total <= 0.0 {
                continue;
            }
            let mismatch = || crate::Error::Method(format!("clients sent different kinds or sizes of extra `{k}`"));
            let mean_of = |xs: Vec<(&[f32], f64)>| -> crate::Result<Vec<f32>> {
                let n = xs[0].0.len();
                let mut acc = vec![0.0f64; n];
                for (x, w) in xs {
                    if x.len() != n {
                        return Err(mismatch());
                    }
                    acc.iter_mut().zip(x).for_each(|(a, v)| *a += w * *v as f64);
                }
                Ok(acc.into_iter().map(|a| (a / total) as f32).collect())
            };
            let v = match have[0].0 {
                Extra::Scalar(_) => Extra::Scalar(
                    have.iter()
                        .map(|(v, w)| if let Extra::Scalar(x) = v { Ok(x * w) } else { Err(mismatch()) })
                        .sum::<crate::Result<f64>>()?
                        / total,
                ),
                Extra::Vector(_) => Extra::Vector(mean_of(
                    have.iter()
                        .map(|(v, w)| if let Extra::Vector(x) = v { Ok((x.as_slice(), *w)) } else { Err(mismatch()) })
                        .collect::<crate::Result<_>>()?,
                )?),
                Extra::Params(p0) => {
                    let data = mean_of(
                        have.iter()
                            .map(
                                |(v, w)| {
                                    if let Extra::Params(p) = v { Ok((p.as_slice(), *w)) } else { Err(mismatch()) }
                                },
                            )
                            .collect::<crate::Result<_>>()?,
                    )?;
                    Extra::Params(Params::from_vec(p0.layout().clone(), data)?)
                }
                Extra::Bytes(_) => continue,
            };
            out.0.insert(k.clone(), v);
        }
        Ok(out)
    }

    /// Bytes on the wire for all payloads.
    pub fn wire_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        Extra::Scalar(_) => 8,
                        Extra::Vector(x) => 4 * x.len(),
                        Extra::Params(p) => p.wire_bytes(),
                        Extra::Bytes(b) => b.len(),
                    }
            })
            .sum()
    }
}

/// What the server sends to each client of a round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Downlink {
    pub round: u32,
    pub global: Params,
    pub extras: Extras,
}

/// What one client of a round receives beyond the broadcast ([`crate::Algorithm::personal_downlink`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonalDownlink {
    /// Payloads for this client alone, merged over the broadcast's (a key in both: this one).
    pub extras: Extras,
    /// The model values this client receives: `None`, the whole global model; `Some(n)`, n of
    /// them (a sub-model); `Some(0)`, none (clients that keep models of their own, as in RFFL
    /// and FedFomo). Only the byte count reads it: in simulation every client still sees the
    /// global model in `ClientCtx::global`.
    pub model_values: Option<usize>,
}

/// What a client sends back: `delta = w_local - w_global`, its aggregation weight (the number of
/// samples it trained on, by default), side payloads and training metrics.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Update {
    pub client: ClientId,
    pub delta: Params,
    pub weight: f32,
    pub extras: Extras,
    pub metrics: Metrics,
}

impl Update {
    /// Bytes this update puts on the wire.
    pub fn wire_bytes(&self) -> usize {
        self.delta.wire_bytes() + self.extras.wire_bytes()
    }
}

/// The aggregator's result: the combined delta, the total weight, which clients it accepted,
/// and how it weighted them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Aggregate {
    pub delta: Params,
    pub weight: f32,
    pub extras: Extras,
    pub accepted: Vec<ClientId>,
    pub metrics: Metrics,
    /// How `delta` weights the accepted updates; stateful server rules (SCAFFOLD's control
    /// variate) average their own state with the same weights, so that their fixed point is the
    /// objective the aggregate descends.
    pub weighting: Weighting,
}

/// How an aggregate weights the updates it accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Each accepted update in proportion to its `Update::weight` (its sample count by
    /// default): the objective sum_k (n_k / n) F_k.
    #[default]
    UpdateWeights,
    /// Each accepted update equally: the objective (1/N) sum_k F_k.
    Uniform,
    /// Not a weighted mean (coordinate-wise median, trimmed mean, ...): state means fall back
    /// to uniform weights over the accepted clients.
    Robust,
}

/// A client that did not deliver an update: a value, never a crash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientFailure {
    pub client: ClientId,
    pub reason: String,
}
