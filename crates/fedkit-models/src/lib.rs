//! fedkit model adapters: the only crate that sees the tensor backend (burn with its pure-Rust
//! `flex` CPU backend by default). Models are architectures over flat parameters; see
//! [`fedkit_core::Model`].

pub mod burn_adapter;
pub mod cnn;
pub mod init;
pub mod lenet;
pub mod logreg;
pub mod mlp;
mod nets;

use fedkit_core::registry::{Entry, params_from};
use fedkit_core::ModelSpec;

/// Every registered model, by `[model] use = "<name>"`.
pub fn models() -> &'static [Entry<dyn ModelSpec>] {
    static MODELS: &[Entry<dyn ModelSpec>] = &[
        Entry { name: "cnn", source: include_str!("cnn.rs"), build: |t| Ok(Box::new(params_from::<cnn::CnnSpec>(t, "model")?)) },
        Entry { name: "lenet", source: include_str!("lenet.rs"), build: |t| Ok(Box::new(params_from::<lenet::LeNetSpec>(t, "model")?)) },
        Entry { name: "logreg", source: include_str!("logreg.rs"), build: |t| Ok(Box::new(params_from::<logreg::LogRegSpec>(t, "model")?)) },
        Entry { name: "mlp", source: include_str!("mlp.rs"), build: |t| Ok(Box::new(params_from::<mlp::MlpSpec>(t, "model")?)) },
    ];
    MODELS
}
