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

/// The aggregator's result: the combined delta, the total weight, which clients it accepted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Aggregate {
    pub delta: Params,
    pub weight: f32,
    pub extras: Extras,
    pub accepted: Vec<ClientId>,
    pub metrics: Metrics,
}

/// A client that did not deliver an update: a value, never a crash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientFailure {
    pub client: ClientId,
    pub reason: String,
}
