//! Partitioners: how a dataset's training samples are split among clients.
//!
//! Selected by the `[data.partition]` table, `use = "<name>"` plus the partitioner's parameters.
//! The procedures follow NIID-Bench's `partition_data` (Li et al., "Federated Learning on Non-IID
//! Data Silos: An Experimental Study", ICDE 2022), with numpy's random calls replaced by
//! [`RngStream`]'s (permutation, shuffle, dirichlet, choose). Available: `iid`, `dirichlet_label`,
//! `label_quantity`, `quantity_skew`, `noise_feature`, `affine_feature`, `synthetic_feature`,
//! `shards`, `natural`, `mixed` (label and quantity skew at once) and `long_tail` (a class-imbalanced
//! subset). Feature-skew partitioners also give each client a feature transform
//! ([`Partitioner::feature_noise`], [`Partitioner::feature_affine`]) applied when batches are drawn.
//!
//! ```toml
//! [data.partition]
//! use = "dirichlet_label"
//! alpha = 0.5
//! ```

mod affine_feature;
mod dirichlet_label;
mod iid;
mod label_quantity;
mod long_tail;
mod mixed;
mod natural;
mod noise_feature;
mod permuted_labels;
mod quantity_skew;
mod shards;
mod synthetic_feature;

pub use affine_feature::AffineFeature;
pub use dirichlet_label::DirichletLabel;
pub use iid::Iid;
pub use label_quantity::LabelQuantity;
pub use long_tail::LongTail;
pub use mixed::Mixed;
pub use natural::Natural;
pub use noise_feature::NoiseFeature;
pub use permuted_labels::PermutedLabels;
pub use quantity_skew::QuantitySkew;
pub use shards::Shards;
pub use synthetic_feature::SyntheticFeature;

use fedkit_core::registry::{Entry, params_resolved};
use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The config section partitioners are built from.
pub const SECTION: &str = "data.partition";

/// How many times the Dirichlet-based partitioners redraw before giving up.
pub(crate) const MAX_REDRAWS: usize = 1000;

/// A partitioner's parameter struct: deserialised from its table, then checked.
trait Params: Partitioner + DeserializeOwned + Serialize + 'static {
    /// Reject out-of-range values with an error naming the key.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

fn build<P: Params>(table: &toml::Table, resolved: &mut toml::Table) -> Result<Box<dyn Partitioner>> {
    let p: P = params_resolved(table, SECTION, resolved)?;
    p.check()?;
    Ok(Box::new(p))
}

macro_rules! entry {
    ($name:literal, $ty:ty) => {
        Entry { name: $name, source: include_str!(concat!($name, ".rs")), build: build::<$ty> }
    };
}

static PARTITIONERS: &[Entry<dyn Partitioner>] = &[
    entry!("iid", Iid),
    entry!("dirichlet_label", DirichletLabel),
    entry!("label_quantity", LabelQuantity),
    entry!("quantity_skew", QuantitySkew),
    entry!("noise_feature", NoiseFeature),
    entry!("affine_feature", AffineFeature),
    entry!("synthetic_feature", SyntheticFeature),
    entry!("shards", Shards),
    entry!("natural", Natural),
    entry!("mixed", Mixed),
    entry!("long_tail", LongTail),
    entry!("permuted_labels", PermutedLabels),
];

/// Every registered partitioner, for `build_from_table` and `fedkit explain`.
pub fn partitioners() -> &'static [Entry<dyn Partitioner>] {
    PARTITIONERS
}

/// numpy's `array_split(xs, n)`: `n` consecutive parts, the first `len % n` one longer.
/// Returns no parts for `n == 0`.
pub fn array_split<T>(xs: &[T], n: usize) -> Vec<&[T]> {
    if n == 0 {
        return Vec::new();
    }
    let (q, r) = (xs.len() / n, xs.len() % n);
    let mut rest = xs;
    (0..n)
        .map(|i| {
            let (head, tail) = rest.split_at(q + usize::from(i < r));
            rest = tail;
            head
        })
        .collect()
}

/// numpy's `split(xs, cuts)` at increasing cut positions (clamped to the length).
pub(crate) fn split_at_cuts<'a, T>(xs: &'a [T], cuts: &[usize]) -> Vec<&'a [T]> {
    let mut start = 0;
    let mut parts: Vec<&[T]> = cuts
        .iter()
        .map(|&c| {
            let end = c.clamp(start, xs.len());
            let part = &xs[start..end];
            start = end;
            part
        })
        .collect();
    parts.push(&xs[start..]);
    parts
}

/// NIID-Bench's cut points `(cumsum(p) * len).astype(int)[:-1]`.
pub(crate) fn proportion_cuts(p: &[f64], len: usize) -> Vec<usize> {
    let mut acc = 0.0;
    let mut cuts: Vec<usize> = p
        .iter()
        .map(|&x| {
            acc += x;
            (acc * len as f64) as usize
        })
        .collect();
    cuts.pop();
    cuts
}

/// numpy's `where(y == k)` for every class k: sample indices by class, ascending.
pub(crate) fn class_indices(data: &Dataset) -> Vec<Vec<u32>> {
    let mut by_class = vec![Vec::new(); data.classes];
    for (i, &c) in data.y.iter().enumerate() {
        if let Some(v) = by_class.get_mut(c as usize) {
            v.push(i as u32);
        }
    }
    by_class
}

/// A random permutation of all sample indices.
pub(crate) fn permuted_indices(len: usize, rng: &mut RngStream) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..len as u32).collect();
    rng.shuffle(&mut idx);
    idx
}

/// Error unless `v` is finite and > 0.
pub(crate) fn check_positive(key: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(format!("{SECTION}.{key}"), format!("must be a finite number > 0, got {v}")))
    }
}

/// Error unless `min_size * n` samples are available.
pub(crate) fn check_min_size(min_size: usize, n: usize, len: usize) -> Result<()> {
    if min_size.saturating_mul(n) > len {
        return Err(Error::config(
            format!("{SECTION}.min_size"),
            format!(
                "{n} clients with at least {min_size} samples each need {} samples, but the dataset has {len}; \
                 use fewer clients (data.clients) or a smaller min_size",
                min_size.saturating_mul(n)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// `per_class` samples of each of `classes` classes, interleaved (label i % classes), one
    /// feature holding the sample index.
    pub fn toy(classes: usize, per_class: usize) -> Dataset {
        let n = classes * per_class;
        Dataset {
            name: "toy".into(),
            x: (0..n).map(|i| i as f32).collect(),
            y: (0..n).map(|i| (i % classes) as u32).collect(),
            feature_shape: vec![1],
            classes,
            users: None,
            targets: Vec::new(),
        }
    }

    /// Assert the parts are disjoint, in range, and (if `covering`) cover every sample.
    pub fn assert_disjoint(parts: &[Vec<u32>], len: usize, covering: bool) {
        let mut seen = vec![false; len];
        for &i in parts.iter().flatten() {
            assert!(!seen[i as usize], "sample {i} given twice");
            seen[i as usize] = true;
        }
        if covering {
            assert!(seen.iter().all(|&s| s), "not every sample was given out");
        }
    }

    /// Partition `data` with the named partitioner built from `toml`, seed `seed`.
    pub fn run(name: &str, toml: &str, data: &Dataset, n: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
        let p = make(name, toml)?;
        p.partition(data, n, &mut RngStream::derive(seed, "partition", 0, 0))
    }

    /// Build the named partitioner from a TOML table body.
    pub fn make(name: &str, toml: &str) -> Result<Box<dyn Partitioner>> {
        let mut t: toml::Table = toml.parse().map_err(|e| Error::config("test", format!("{e}")))?;
        t.insert("use".into(), name.into());
        let (p, _) = fedkit_core::registry::build_from_table(
            partitioners(),
            fedkit_core::registry::Kind::Partitioner,
            SECTION,
            &t,
            &[],
        )?;
        Ok(p)
    }

    /// Number of distinct labels among `idx`.
    pub fn n_labels(data: &Dataset, idx: &[u32]) -> usize {
        data.label_histogram(idx).iter().filter(|&&c| c > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_split_matches_numpy() {
        let xs: Vec<u32> = (0..10).collect();
        let lens: Vec<usize> = array_split(&xs, 3).iter().map(|p| p.len()).collect();
        assert_eq!(lens, [4, 3, 3]);
        assert_eq!(array_split(&xs, 3)[1], [4, 5, 6]);
        let lens: Vec<usize> = array_split(&xs[..2], 4).iter().map(|p| p.len()).collect();
        assert_eq!(lens, [1, 1, 0, 0]);
        assert!(array_split(&xs, 0).is_empty());
    }

    #[test]
    fn cuts_and_split() {
        let cuts = proportion_cuts(&[0.25, 0.25, 0.5], 10);
        assert_eq!(cuts, [2, 5]);
        let xs: Vec<u32> = (0..10).collect();
        let parts = split_at_cuts(&xs, &cuts);
        assert_eq!(parts, [&xs[..2], &xs[2..5], &xs[5..]]);
    }

    #[test]
    fn every_partitioner_has_docs_with_an_example() {
        for e in partitioners() {
            let doc = e.doc();
            assert!(!doc.trim().is_empty(), "{} has no docs", e.name);
            assert!(doc.contains(&format!("use = \"{}\"", e.name)), "{} docs lack a TOML example", e.name);
        }
    }

    #[test]
    fn unknown_parameter_is_rejected_with_its_name() {
        let e = testutil::make("iid", "alpha = 1.0").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("data.partition") && e.contains("alpha"), "{e}");
        let e = testutil::make("nope", "").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("dirichlet_label") && e.contains("nope"), "{e}");
    }
}
