//! Local step rules (`[local] use = "<name>"`): how a client turns one mini-batch into a descent
//! direction (plain gradient, SAM, WRM, FedNAR's co-clipping). They compose with every algorithm.

pub mod fednar;
pub mod plain;
pub mod sam;
#[cfg(test)]
pub(crate) mod test_model;
pub mod wrm;

use fedkit_core::registry::{Entry, params_resolved};
use fedkit_core::{LocalStep, Params, PlainStep};

/// Every registered local step rule.
pub fn local_steps() -> &'static [Entry<dyn LocalStep>] {
    static LOCAL_STEPS: &[Entry<dyn LocalStep>] = &[
        Entry {
            name: "plain",
            source: include_str!("plain.rs"),
            build: |t, r| {
                params_resolved::<plain::Plain>(t, "", r)?;
                Ok(Box::new(PlainStep))
            },
        },
        Entry {
            name: "sam",
            source: include_str!("sam.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<sam::Sam>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "wrm",
            source: include_str!("wrm.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<wrm::Wrm>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "fednar",
            source: include_str!("fednar.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fednar::FedNar>(t, "", r)?.validated()?)),
        },
    ];
    LOCAL_STEPS
}

/// The Euclidean norm of the trainable entries of `p` (buffers left out), accumulated in f64.
pub(crate) fn trainable_norm(p: &Params) -> f64 {
    let v = p.as_slice();
    p.layout().trainable_ranges().flat_map(|r| &v[r]).map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}
