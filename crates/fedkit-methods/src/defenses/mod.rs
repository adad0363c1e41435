//! Defences against poisoning: robust aggregation rules (registered with the aggregators,
//! `[aggregator] use = "<name>"`). Filtering rules (Krum, Multi-Krum, Bulyan, ...) list the
//! clients they keep in `accepted`, and runs log their detection rates against the threat model
//! (`detect_tpr`, `detect_fpr`).

pub mod bulyan;
pub mod centered_clip;
pub mod clustering;
pub mod coordinatewise;
pub mod crfl;
pub mod deepsight;
pub mod flame;
pub mod fltrust;
pub mod foolsgold;
pub mod geomed;
pub mod geometry;
pub mod krum;
pub mod median;
pub mod multi_krum;
pub mod norm_bound;
pub mod rlr;
pub mod sparsefed;
#[cfg(test)]
pub(crate) mod testing;
pub mod trimmed_mean;
pub mod weak_dp;
