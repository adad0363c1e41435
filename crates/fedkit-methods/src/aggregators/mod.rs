//! Aggregation rules: the mean, and (in later issues) robust rules (`[aggregator] use = "<name>"`).

pub mod mean;

use fedkit_core::Aggregator;
use fedkit_core::registry::{Entry, params_resolved};

/// Every registered aggregator.
pub fn aggregators() -> &'static [Entry<dyn Aggregator>] {
    static AGGREGATORS: &[Entry<dyn Aggregator>] = &[Entry {
        name: "mean",
        source: include_str!("mean.rs"),
        build: |t, r| Ok(Box::new(params_resolved::<mean::Mean>(t, "", r)?)),
    }];
    AGGREGATORS
}
