//! Aggregation rules (`[aggregator] use = "<name>"`): the mean and the robust rules. Filtering
//! rules (Krum, Multi-Krum, Bulyan, ...) list the clients they keep in `accepted`, and runs log
//! their detection rates against the threat model (`detect_tpr`, `detect_fpr`).

pub mod bulyan;
pub mod centered_clip;
pub mod coordinatewise;
pub mod geomed;
pub mod geometry;
pub mod krum;
pub mod mean;
pub mod median;
pub mod multi_krum;
pub mod norm_bound;
pub mod rlr;
#[cfg(test)]
mod testing;
pub mod trimmed_mean;

use fedkit_core::Aggregator;
use fedkit_core::registry::{Entry, params_resolved};

/// Every registered aggregator.
pub fn aggregators() -> &'static [Entry<dyn Aggregator>] {
    static AGGREGATORS: &[Entry<dyn Aggregator>] = &[
        Entry {
            name: "mean",
            source: include_str!("mean.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<mean::Mean>(t, "", r)?)),
        },
        Entry {
            name: "median",
            source: include_str!("median.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<median::Median>(t, "", r)?)),
        },
        Entry {
            name: "trimmed_mean",
            source: include_str!("trimmed_mean.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<trimmed_mean::TrimmedMean>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "krum",
            source: include_str!("krum.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<krum::Krum>(t, "", r)?)),
        },
        Entry {
            name: "multi_krum",
            source: include_str!("multi_krum.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<multi_krum::MultiKrum>(t, "", r)?)),
        },
        Entry {
            name: "bulyan",
            source: include_str!("bulyan.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<bulyan::Bulyan>(t, "", r)?)),
        },
        Entry {
            name: "geomed",
            source: include_str!("geomed.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<geomed::GeoMed>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "norm_bound",
            source: include_str!("norm_bound.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<norm_bound::NormBound>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "centered_clip",
            source: include_str!("centered_clip.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<centered_clip::CenteredClip>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "rlr",
            source: include_str!("rlr.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<rlr::Rlr>(t, "", r)?)),
        },
    ];
    AGGREGATORS
}
