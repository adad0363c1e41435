//! `cross_entropy`: the mean softmax cross-entropy -log softmax(z)_y, the default training loss
//! (the maximum-likelihood loss of a categorical model; Goodfellow, Bengio, Courville, "Deep
//! Learning", 2016, section 6.2.2).
//! Models use their fused forward-backward path for it, so runs with it are the same bit for bit
//! as before `[loss]` existed.
//!
//! Parameters: none.
//!
//! ```toml
//! [loss]
//! use = "cross_entropy"
//! ```

use serde::{Deserialize, Serialize};

/// The (empty) parameters of `cross_entropy`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossEntropyParams {}
