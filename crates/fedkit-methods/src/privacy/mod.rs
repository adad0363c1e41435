//! Differential-privacy stages (issue 10); the accountants are in `fedkit-privacy`.

pub mod dp_fixed_clip;
