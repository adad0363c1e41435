//! Federated algorithms: a paper's client rule and server rule (`[algorithm] use = "<name>"`).

pub mod fedavg;
pub mod fedprox;

use fedkit_core::DynAlgorithm;
use fedkit_core::registry::{Entry, params_resolved};

/// Every registered algorithm.
pub fn algorithms() -> &'static [Entry<dyn DynAlgorithm>] {
    static ALGORITHMS: &[Entry<dyn DynAlgorithm>] = &[
        Entry {
            name: "fedavg",
            source: include_str!("fedavg.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fedavg::FedAvg>(t, "", r)?)),
        },
        Entry {
            name: "fedprox",
            source: include_str!("fedprox.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fedprox::FedProx>(t, "", r)?.validated()?)),
        },
    ];
    ALGORITHMS
}
