//! fedkit's privacy mathematics, pure functions with no ML backend (issue 10):
//! - [`rdp`]: Rényi-DP of the subsampled Gaussian mechanism, Poisson-subsampled (add/remove
//!   neighbours) and sampled without replacement (replace-one neighbours), its composition, and
//!   the conversion to (epsilon, delta);
//! - [`pld`]: the privacy-loss-distribution accountant (connect the dots, FFT composition);
//! - [`calibrate`]: the smallest noise multiplier that meets a target epsilon;
//! - [`secagg`]: secure aggregation (SecAgg, SecAgg+) on the phase API of
//!   `fedkit_core::protocol`;
//! - [`skellam`]: distributed DP with Skellam noise on the integers of secure aggregation;
//! - [`hybridalpha`]: secure aggregation by multi-input functional encryption with a key
//!   authority (HybridAlpha).
//!
//! The numbers agree with Google's `dp-accounting` (0.6.0) over the parameter range people use:
//! the same bits for most values, within 1e-9 relative for all but 16 of 13,079. There,
//! 80-digit values show dp-accounting's (or both libraries') float error. TF-Privacy's and
//! Opacus's published epsilons are reproduced on their order grids ([`Series::Signed`]).
//! `tests/rdp_reference.rs` checks all of it against values that `scripts/dp_reference.sh`
//! generated. See docs/results.md, "Privacy: the RDP accountant".

pub mod calibrate;
pub mod hybridalpha;
pub mod noise;
pub mod pld;
pub mod rdp;
pub mod secagg;
pub mod skellam;
mod special;

pub use calibrate::noise_multiplier;
pub use rdp::{Mechanism, Orders, RdpAccountant, Sampling, Series, epsilon, epsilon_from_rdp};

/// A parameter outside its domain, named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PrivacyError {
    pub field: &'static str,
    pub message: String,
}

impl PrivacyError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        PrivacyError { field, message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, PrivacyError>;
