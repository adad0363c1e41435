//! Differential-privacy stages (issue 10); the accountants are in `fedkit-privacy`.

pub mod accounting;
pub mod dp_adaptive_clip;
pub mod dp_fixed_clip;
pub mod dp_sgd;
