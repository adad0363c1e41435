//! Aggregation rules (`[aggregator] use = "<name>"`): the mean here, the robust rules of
//! `defenses/`.

pub mod mean;

use fedkit_core::Aggregator;
use fedkit_core::registry::{Entry, params_resolved};

use crate::defenses;

/// Every registered aggregator: the mean and the defences.
pub fn aggregators() -> &'static [Entry<dyn Aggregator>] {
    static AGGREGATORS: &[Entry<dyn Aggregator>] = &[
        Entry {
            name: "mean",
            source: include_str!("mean.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<mean::Mean>(t, "", r)?)),
        },
        Entry {
            name: "median",
            source: include_str!("../defenses/median.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::median::Median>(t, "", r)?)),
        },
        Entry {
            name: "trimmed_mean",
            source: include_str!("../defenses/trimmed_mean.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::trimmed_mean::TrimmedMean>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "krum",
            source: include_str!("../defenses/krum.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::krum::Krum>(t, "", r)?)),
        },
        Entry {
            name: "multi_krum",
            source: include_str!("../defenses/multi_krum.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::multi_krum::MultiKrum>(t, "", r)?)),
        },
        Entry {
            name: "bulyan",
            source: include_str!("../defenses/bulyan.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::bulyan::Bulyan>(t, "", r)?)),
        },
        Entry {
            name: "geomed",
            source: include_str!("../defenses/geomed.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::geomed::GeoMed>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "norm_bound",
            source: include_str!("../defenses/norm_bound.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::norm_bound::NormBound>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "centered_clip",
            source: include_str!("../defenses/centered_clip.rs"),
            build: |t, r| {
                Ok(Box::new(params_resolved::<defenses::centered_clip::CenteredClip>(t, "", r)?.validated()?))
            },
        },
        Entry {
            name: "rlr",
            source: include_str!("../defenses/rlr.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::rlr::Rlr>(t, "", r)?)),
        },
        Entry {
            name: "fltrust",
            source: include_str!("../defenses/fltrust.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::fltrust::FlTrust>(t, "", r)?)),
        },
        Entry {
            name: "foolsgold",
            source: include_str!("../defenses/foolsgold.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::foolsgold::FoolsGold>(t, "", r)?)),
        },
        Entry {
            name: "flame",
            source: include_str!("../defenses/flame.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::flame::Flame>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "sparsefed",
            source: include_str!("../defenses/sparsefed.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::sparsefed::SparseFed>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "weak_dp",
            source: include_str!("../defenses/weak_dp.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::weak_dp::WeakDp>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "crfl",
            source: include_str!("../defenses/crfl.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::crfl::Crfl>(t, "", r)?.validated()?)),
        },
        Entry {
            name: "deepsight",
            source: include_str!("../defenses/deepsight.rs"),
            build: |t, r| Ok(Box::new(params_resolved::<defenses::deepsight::DeepSight>(t, "", r)?.validated()?)),
        },
    ];
    AGGREGATORS
}
