//! Attacks (pipeline stages, usually `on = "malicious"`): backdoor and Byzantine poisoning of the
//! clients' data or updates, and cohort-aware attacks that replace the attacking clients' updates
//! on the server side of the round. The shared pieces: pixel triggers (`trigger.rs`) and the
//! cohort statistics (`cohort.rs`).

pub mod alie;
pub mod backdoor;
pub mod blind;
pub mod cohort;
pub mod constrain_and_scale;
pub mod dba;
pub mod edge_case;
pub mod fang;
pub mod free_rider;
pub mod gaussian;
pub mod ipm;
pub mod label_flip;
pub mod min_max;
pub mod min_sum;
pub mod model_replacement;
pub mod neurotoxin;
pub mod sign_flip;
#[cfg(test)]
pub(crate) mod testing;
pub mod trigger;
