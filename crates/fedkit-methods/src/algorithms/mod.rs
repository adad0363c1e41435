//! Federated algorithms: a paper's client rule and server rule (`[algorithm] use = "<name>"`).

pub mod afl;
pub(crate) mod composite;
pub mod diana;
pub mod drfa;
pub mod ef21_sgdm;
pub mod fedavg;
pub mod fedavgm;
pub mod fedbn;
pub mod feddualavg;
pub mod feddyn;
pub mod fedlaw;
pub mod fedmid;
pub mod fednova;
pub mod fedopt;
pub mod fedprox;
pub mod hsgd;
pub mod large_cohort;
pub(crate) mod mixture;
pub mod scaffold;
pub mod server_opt;
pub(crate) mod state_vectors;
#[cfg(test)]
pub(crate) mod testing;

use fedkit_core::DynAlgorithm;
use fedkit_core::registry::{Entry, params_resolved};

/// Every registered algorithm.
pub fn algorithms() -> &'static [Entry<dyn DynAlgorithm>] {
    static ALGORITHMS: &[Entry<dyn DynAlgorithm>] = &[
        Entry {
            name: "fedavg",
            source: include_str!("fedavg.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fedavg::FedAvg>(t, "", r)?)),
        },
        Entry {
            name: "fedprox",
            source: include_str!("fedprox.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fedprox::FedProx>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "scaffold",
            source: include_str!("scaffold.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<scaffold::Scaffold>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "perfedavg",
            source: include_str!("../personalization/perfedavg.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::personalization::perfedavg::PerFedAvg>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "ifca",
            source: include_str!("../personalization/ifca.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<crate::personalization::ifca::Ifca>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "pfedme",
            source: include_str!("../personalization/pfedme.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::personalization::pfedme::PFedMe>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "rffl",
            source: include_str!("../personalization/rffl.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<crate::personalization::rffl::Rffl>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "feddf",
            source: include_str!("../personalization/feddf.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<crate::personalization::feddf::FedDf>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "heterofl",
            source: include_str!("../personalization/heterofl.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::personalization::heterofl::HeteroFl>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "fedaws",
            source: include_str!("../personalization/fedaws.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::personalization::fedaws::FedAws>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "fedgen",
            source: include_str!("../personalization/fedgen.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::personalization::fedgen::FedGen>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "fedhenn",
            source: include_str!("../personalization/fedhenn.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::personalization::fedhenn::FedHenn>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "fedbe",
            source: include_str!("../personalization/fedbe.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<crate::personalization::fedbe::FedBe>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "fedfomo",
            source: include_str!("../personalization/fedfomo.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::personalization::fedfomo::FedFomo>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "local",
            source: include_str!("../personalization/local.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<crate::personalization::local::Local>(t, "", r)?)),
        },
        Entry {
            name: "diana",
            source: include_str!("diana.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<diana::Diana>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "ef21_sgdm",
            source: include_str!("ef21_sgdm.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<ef21_sgdm::Ef21Sgdm>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "fednova",
            source: include_str!("fednova.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fednova::FedNova>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "feddyn",
            source: include_str!("feddyn.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<feddyn::FedDyn>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "fedbn",
            source: include_str!("fedbn.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fedbn::FedBn>(t, "", r)?)),
        },
        Entry {
            name: "fedlaw",
            source: include_str!("fedlaw.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fedlaw::FedLaw>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "fedadam",
            source: include_str!("fedopt.rs"),
            build: |t, r| Ok(Box::new(fedopt::FedOpt::build(fedopt::Variant::Adam, t, r)?)),
        },
        Entry {
            name: "fedyogi",
            source: include_str!("fedopt.rs"),
            build: |t, r| Ok(Box::new(fedopt::FedOpt::build(fedopt::Variant::Yogi, t, r)?)),
        },
        Entry {
            name: "fedadagrad",
            source: include_str!("fedopt.rs"),
            build: |t, r| Ok(Box::new(fedopt::FedOpt::build(fedopt::Variant::Adagrad, t, r)?)),
        },
        Entry {
            name: "fedavgm",
            source: include_str!("fedavgm.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fedavgm::FedAvgM>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "large_cohort",
            source: include_str!("large_cohort.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<large_cohort::LargeCohort>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "fedmid",
            source: include_str!("fedmid.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<fedmid::FedMid>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "feddualavg",
            source: include_str!("feddualavg.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<feddualavg::FedDualAvg>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "afl",
            source: include_str!("afl.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<afl::Afl>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "drfa",
            source: include_str!("drfa.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<drfa::Drfa>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "hsgd",
            source: include_str!("hsgd.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<hsgd::Hsgd>(t, "", r)?.validated()?)),
        },
    ];
    ALGORITHMS
}
