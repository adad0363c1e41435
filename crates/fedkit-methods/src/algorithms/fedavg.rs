//! FedAvg: McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
//! Data", AISTATS 2017.
//!
//! Each sampled client runs E epochs of mini-batch SGD (batch size B, learning rate eta) from the
//! global model w_t and returns delta_k = w_k - w_t; the server sets
//! w_{t+1} = w_t + sum_k (n_k / n) delta_k (the aggregator's weighted mean).
//!
//! Parameters: none of its own; E, B and eta are `[client] epochs, batch_size, lr`, the cohort
//! size K is `[sampling] per_round`. Stragglers (`[sampling] drop_percent`) are dropped, as the
//! FedProx paper's FedAvg baseline does.
//!
//! ```toml
//! [algorithm]
//! use = "fedavg"
//! ```

use fedkit_core::Algorithm;
use serde::{Deserialize, Serialize};

/// FedAvg (no parameters).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAvg {}

impl Algorithm for FedAvg {
    type Client = ();
    type Server = ();
}
