//! fedkit model adapters: the only crate that sees the tensor backend (burn with its pure-Rust
//! `flex` CPU backend by default). Models are architectures over flat parameters; see
//! [`fedkit_core::Model`].

pub mod burn_adapter;
pub mod cnn;
pub mod cnn_native;
mod conv_kernels;
pub mod dae;
pub mod init;
pub mod lenet;
pub mod logreg;
pub mod mlp;
mod nets;
pub mod quantized;
pub mod resnet;
pub mod transformer;

pub use nets::Norm;

use fedkit_core::ModelSpec;
use fedkit_core::registry::{Entry, params_resolved};

/// Every registered model, by `[model] use = "<name>"`.
pub fn models() -> &'static [Entry<dyn ModelSpec>] {
    static MODELS: &[Entry<dyn ModelSpec>] = &[
        Entry {
            name: "cnn",
            source: include_str!("cnn.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<cnn::CnnSpec>(t, "", r)?)),
        },
        Entry {
            name: "dae",
            source: include_str!("dae.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<dae::DaeSpec>(t, "", r)?)),
        },
        Entry {
            name: "lenet",
            source: include_str!("lenet.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<lenet::LeNetSpec>(t, "", r)?)),
        },
        Entry {
            name: "logreg",
            source: include_str!("logreg.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<logreg::LogRegSpec>(t, "", r)?)),
        },
        Entry {
            name: "mlp",
            source: include_str!("mlp.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<mlp::MlpSpec>(t, "", r)?)),
        },
        Entry {
            name: "resnet",
            source: include_str!("resnet.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<resnet::ResNetSpec>(t, "", r)?)),
        },
        Entry {
            name: "transformer",
            source: include_str!("transformer.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<transformer::TransformerSpec>(t, "", r)?)),
        },
    ];
    MODELS
}
