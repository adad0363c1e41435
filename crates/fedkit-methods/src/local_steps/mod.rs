//! Local step rules (`[local] use = "<name>"`): how a client turns one mini-batch into a descent
//! direction (plain gradient, SAM, WRM, FedNAR's co-clipping). They compose with every algorithm.

pub mod plain;

use fedkit_core::registry::{Entry, params_resolved};
use fedkit_core::{LocalStep, PlainStep};

/// Every registered local step rule.
pub fn local_steps() -> &'static [Entry<dyn LocalStep>] {
    static LOCAL_STEPS: &[Entry<dyn LocalStep>] = &[Entry {
        name: "plain",
        source: include_str!("plain.rs"),
        build: |t, r| {
            params_resolved::<plain::Plain>(t, "", r)?;
            Ok(Box::new(PlainStep))
        },
    }];
    LOCAL_STEPS
}
