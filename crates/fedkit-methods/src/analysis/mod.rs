//! Analyses of trained models (`fedkit analyze KIND --run DIR`): what a run's models learned,
//! read from its model store. Representation similarity first: CKA, CCA, SVCCA, PWCCA and
//! Procrustes over [`Representation`]s of one probe set, and Ding et al.'s grounding test.

pub mod cca;
pub mod cka;
pub mod grounding;
pub mod lazy_neuron;
pub mod linalg;
pub mod linear_regions;
pub mod procrustes;
pub mod pyhessian;
pub mod representation;
pub mod similarity;

pub use representation::Representation;
pub use similarity::Metric;

/// Every analysis method: its name and source file (for `fedkit list` and `explain`).
pub fn analyses() -> &'static [(&'static str, &'static str)] {
    &[
        ("cka", include_str!("cka.rs")),
        ("cca", include_str!("cca.rs")),
        ("procrustes", include_str!("procrustes.rs")),
        ("grounding", include_str!("grounding.rs")),
        ("pyhessian", include_str!("pyhessian.rs")),
        ("lazy_neuron", include_str!("lazy_neuron.rs")),
        ("linear_regions", include_str!("linear_regions.rs")),
    ]
}
