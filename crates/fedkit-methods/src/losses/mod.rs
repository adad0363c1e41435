//! Training losses (`[loss] use = "<name>"`): what local training descends, on the model's
//! logits and features (`Model::vjp`), so every loss composes with every model, algorithm and
//! local step rule. The heterogeneity losses of the roadmap's row B: logit adjustment and LDAM for
//! long-tailed labels, MK-MMD for feature shift, the focal loss.

pub mod cross_entropy;
pub mod focal;
pub mod ldam;
pub mod logit_adjusted;
pub mod mk_mmd;
#[cfg(test)]
mod testing;

use fedkit_core::registry::{Entry, params_resolved};
use fedkit_core::{CrossEntropyLoss, Loss};

/// Every registered loss.
pub fn losses() -> &'static [Entry<dyn Loss>] {
    static LOSSES: &[Entry<dyn Loss>] = &[
        Entry {
            name: "cross_entropy",
            source: include_str!("cross_entropy.rs"),
            build: |t, r| {
                params_resolved::<cross_entropy::CrossEntropyParams>(t, "", r)?;
                Ok(Box::new(CrossEntropyLoss))
            },
        },
        Entry {
            name: "focal",
            source: include_str!("focal.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<focal::Focal>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "ldam",
            source: include_str!("ldam.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<ldam::Ldam>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "logit_adjusted",
            source: include_str!("logit_adjusted.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<logit_adjusted::LogitAdjusted>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "mk_mmd",
            source: include_str!("mk_mmd.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<mk_mmd::MkMmd>(t, "", r)?.validated()?)),
        },
    ];
    LOSSES
}
