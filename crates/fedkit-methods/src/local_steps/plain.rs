//! `plain`: ordinary local training, the default local step rule (local SGD as in FedAvg, McMahan
//! et al., AISTATS 2017). Each step takes the model's mini-batch gradient g = grad F_k(w; batch);
//! the algorithm's hook (FedProx's proximal term, SCAFFOLD's correction, ...) and the `[client]`
//! optimiser do the rest.
//!
//! Parameters: none.
//!
//! ```toml
//! [local]
//! use = "plain"
//! ```

use serde::{Deserialize, Serialize};

/// The plain step rule's (empty) parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plain {}
