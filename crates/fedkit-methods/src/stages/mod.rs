//! Pipeline stages (`[[pipeline]] use = "<name>"`, optionally `on = "all" | "malicious" |
//! "benign"`): clipping, DP, compression, attacks (in `attacks/`) and filters.

pub mod clip;

use fedkit_core::Stage;
use fedkit_core::registry::{Entry, params_resolved};

use crate::{attacks, compression};

/// Every registered stage.
pub fn stages() -> &'static [Entry<dyn Stage>] {
    static STAGES: &[Entry<dyn Stage>] = &[
        Entry {
            name: "clip",
            source: include_str!("clip.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<clip::Clip>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "dp_fixed_clip",
            source: include_str!("../privacy/dp_fixed_clip.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::privacy::dp_fixed_clip::DpFixedClip>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "dp_adaptive_clip",
            source: include_str!("../privacy/dp_adaptive_clip.rs"),
            build: |t, r| {
                Ok(Box::new(
                    params_resolved::<crate::privacy::dp_adaptive_clip::DpAdaptiveClip>(t, "", r)?.validated()?,
                ))
            },
        },
        Entry {
            name: "topk",
            source: include_str!("../compression/topk.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<compression::topk::TopK>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "randk",
            source: include_str!("../compression/randk.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<compression::randk::RandK>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "qsgd",
            source: include_str!("../compression/qsgd.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<compression::qsgd::Qsgd>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "dadaquant",
            source: include_str!("../compression/dadaquant.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<compression::dadaquant::DAdaQuant>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "signsgd",
            source: include_str!("../compression/signsgd.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<compression::signsgd::SignSgd>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "fp16",
            source: include_str!("../compression/cast.rs"),
            build: |t, r| {
                params_resolved::<compression::cast::Cast>(t, "", r)?;
                Ok(Box::new(compression::cast::Cast::f16()))
            },
        },
        Entry {
            name: "bf16",
            source: include_str!("../compression/cast.rs"),
            build: |t, r| {
                params_resolved::<compression::cast::Cast>(t, "", r)?;
                Ok(Box::new(compression::cast::Cast::bf16()))
            },
        },
        Entry {
            name: "dp_sgd",
            source: include_str!("../privacy/dp_sgd.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<crate::privacy::dp_sgd::DpSgd>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "backdoor",
            source: include_str!("../attacks/backdoor.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::backdoor::Backdoor>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "model_replacement",
            source: include_str!("../attacks/model_replacement.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<attacks::model_replacement::ModelReplacement>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "label_flip",
            source: include_str!("../attacks/label_flip.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::label_flip::LabelFlip>(t, "", r)?)),
        },
        Entry {
            name: "sign_flip",
            source: include_str!("../attacks/sign_flip.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::sign_flip::SignFlip>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "audit_canary",
            source: include_str!("../privacy_attacks/audit.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::privacy_attacks::audit::AuditCanary>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "gan_leakage",
            source: include_str!("../privacy_attacks/gan_leakage.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::privacy_attacks::gan_leakage::GanLeakage>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "instahide",
            source: include_str!("../privacy_attacks/instahide.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<crate::privacy_attacks::instahide::InstaHide>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "gaussian",
            source: include_str!("../attacks/gaussian.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::gaussian::Gaussian>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "free_rider",
            source: include_str!("../attacks/free_rider.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::free_rider::FreeRider>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "alie",
            source: include_str!("../attacks/alie.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::alie::Alie>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "ipm",
            source: include_str!("../attacks/ipm.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::ipm::Ipm>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "min_max",
            source: include_str!("../attacks/min_max.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::min_max::MinMax>(t, "", r)?)),
        },
        Entry {
            name: "min_sum",
            source: include_str!("../attacks/min_sum.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::min_sum::MinSum>(t, "", r)?)),
        },
        Entry {
            name: "constrain_and_scale",
            source: include_str!("../attacks/constrain_and_scale.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<attacks::constrain_and_scale::ConstrainAndScale>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "neurotoxin",
            source: include_str!("../attacks/neurotoxin.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::neurotoxin::Neurotoxin>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "dba",
            source: include_str!("../attacks/dba.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::dba::Dba>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "fang",
            source: include_str!("../attacks/fang.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::fang::Fang>(t, "", r)?)),
        },
        Entry {
            name: "edge_case",
            source: include_str!("../attacks/edge_case.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::edge_case::EdgeCase>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "blind",
            source: include_str!("../attacks/blind.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<attacks::blind::Blind>(t, "", r)?)),
        },
    ];
    STAGES
}
