//! fedkit-data: the datasets and the partitioners that turn a dataset into a federation.
//!
//! The `[data]` config section picks a dataset (`name`), the number of clients and a partition:
//! - `synthetic` (default): FedProx's Synthetic(alpha, beta), generated from the run's seed;
//! - `fcube`: NIID-Bench's FCUBE 3-D points, generated from the run's seed;
//! - `fashion_mnist`, `mnist`: the IDX files in `data_dir`;
//! - `cifar10`: CIFAR-10's binary batches in `data_dir`;
//! - `femnist`, `shakespeare`: LEAF's JSON files in `data_dir`, one client per writer or role;
//! - `tabular`: features and labels from CSV or NPY files (`[data.tabular]`);
//! - `fortunes`: word-level language modelling on Debian's fortune files, one client per topic,
//!   a target per position (`[data.fortunes]`; the `transformer` model).
//!
//! `clients = 0` (the default) means the dataset's natural number of clients: one per user for
//! `synthetic` (`data.synthetic.users`), and 10 (NIID-Bench's usual number of parties) for the
//! datasets without users. An empty `[data.partition]` (the default) means `natural` for
//! `synthetic` and `iid` for the others. Data generation draws from the stream
//! `(seed, "data")`, partitioning from `(seed, "partition")`, so the two never disturb each other.
//!
//! ```toml
//! [data]
//! name = "fashion_mnist"
//! clients = 10
//! [data.partition]
//! use = "dirichlet_label"
//! alpha = 0.5
//! ```

pub mod cifar10;
pub mod fashion_mnist;
pub mod fcube;
pub mod fortunes;
pub mod idx;
pub mod label_noise;
pub mod leaf;
pub mod partitioners;
pub mod synthetic;
pub mod tabular;

use std::fmt::Write;
use std::sync::Arc;

use fedkit_core::registry::{Kind, build_from_table};
use fedkit_core::{ClientData, Dataset, Error, FeatureAffine, Result, RngStream};
use serde::{Deserialize, Serialize};

pub use label_noise::{LabelNoise, NoiseKind};
pub use partitioners::{array_split, partitioners};
pub use synthetic::SyntheticParams;

/// Number of clients when `data.clients = 0` and the dataset has no users.
pub const DEFAULT_CLIENTS: usize = 10;

/// The `[data]` config section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// "synthetic" (default) | "fashion_mnist" | "mnist" | "cifar10" | "femnist" | "shakespeare" |
    /// "tabular" | "fcube" | "fortunes".
    pub name: String,
    /// Number of clients; 0 = the dataset's natural number (synthetic: its users; others: 10).
    pub clients: usize,
    /// `use = "<partitioner>"` plus its parameters; empty = `natural` for synthetic, else `iid`.
    pub partition: toml::Table,
    /// Folder of the IDX files (fashion_mnist, mnist); None = the dataset's default folder.
    pub data_dir: Option<String>,
    /// Parameters of the synthetic dataset.
    pub synthetic: SyntheticParams,
    /// The files of the `tabular` dataset (CSV or NPY).
    pub tabular: tabular::TabularParams,
    /// Context length and vocabulary of the `fortunes` corpus.
    pub fortunes: fortunes::FortunesParams,
    /// Relabel a fraction of every client's samples (`label_noise.rs`).
    pub label_noise: LabelNoise,
    /// Keep this fraction of every client's training samples (a seeded random subset, at least
    /// one sample; 1 = all): few-label settings, e.g. fine-tuning a pre-trained model.
    pub subsample: f64,
    /// Of the training samples no client holds (with `subsample` < 1, or a partition that
    /// leaves some out), the share the server may read as unlabeled data (the distillation set
    /// of FedDF and FedBE, FedHeNN's representation probes): a seeded random subset. The rest is
    /// read by no one, e.g. the held-out non-members of `fedkit attack membership` on a
    /// distilled model. 1 = all of them.
    pub unlabeled_share: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            name: "synthetic".into(),
            clients: 0,
            partition: toml::Table::new(),
            data_dir: None,
            synthetic: SyntheticParams::default(),
            tabular: tabular::TabularParams::default(),
            fortunes: fortunes::FortunesParams::default(),
            label_noise: LabelNoise::default(),
            subsample: 1.0,
            unlabeled_share: 1.0,
        }
    }
}

/// A dataset split among clients.
#[derive(Clone, Debug)]
pub struct Federation {
    /// The training data the clients' indices point into.
    pub train: Arc<Dataset>,
    /// The global test set.
    pub test: Arc<Dataset>,
    /// One entry per client.
    pub clients: Vec<ClientData>,
    /// The resolved `[data.partition]` table: `use` and every parameter, defaults filled in.
    pub partition: toml::Table,
    /// Each client's true group, when the partition builds known clusters (`permuted_labels`).
    pub groups: Option<Vec<u32>>,
}

static DATASETS: &[(&str, &str)] = &[
    ("synthetic", include_str!("synthetic.rs")),
    ("fcube", include_str!("fcube.rs")),
    ("fashion_mnist", include_str!("fashion_mnist.rs")),
    ("mnist", include_str!("fashion_mnist.rs")),
    ("cifar10", include_str!("cifar10.rs")),
    ("femnist", include_str!("leaf.rs")),
    ("shakespeare", include_str!("leaf.rs")),
    ("tabular", include_str!("tabular.rs")),
    ("fortunes", include_str!("fortunes.rs")),
];

/// Every dataset name with its module source (its `//!` docs are the documentation).
pub fn datasets() -> &'static [(&'static str, &'static str)] {
    DATASETS
}

/// Load or generate the (train, test) datasets named by `cfg.name`.
fn load_datasets(cfg: &DataConfig, seed: u64) -> Result<(Dataset, Dataset)> {
    let mut rng = RngStream::derive(seed, "data", 0, 0);
    let dir = cfg.data_dir.as_deref();
    match cfg.name.as_str() {
        "synthetic" => synthetic::generate(&cfg.synthetic, &mut rng),
        "fcube" => Ok(fcube::generate(&mut rng)),
        "fashion_mnist" => fashion_mnist::load(&fashion_mnist::FASHION_MNIST, dir),
        "mnist" => fashion_mnist::load(&fashion_mnist::MNIST, dir),
        "cifar10" => cifar10::load(dir),
        "femnist" => leaf::load(leaf::LeafKind::Femnist, dir),
        "shakespeare" => leaf::load(leaf::LeafKind::Shakespeare, dir),
        "tabular" => tabular::load(&cfg.tabular),
        "fortunes" => fortunes::load(&cfg.fortunes, dir),
        other => {
            let names: Vec<&str> = DATASETS.iter().map(|d| d.0).collect();
            Err(Error::config("data.name", format!("unknown dataset `{other}`; allowed: {}", names.join(", "))))
        }
    }
}

/// The per-client data transforms of the `[data]` section (name, source file), for `fedkit list`
/// and `fedkit explain`.
pub fn transforms() -> &'static [(&'static str, &'static str)] {
    &[("label_noise", include_str!("label_noise.rs"))]
}

/// Build the federation described by `cfg`: the datasets, and the training set partitioned among
/// the clients, each with the partitioner's feature transforms (affine transform and noise).
pub fn build_federation(cfg: &DataConfig, seed: u64) -> Result<Federation> {
    let (train, test) = load_datasets(cfg, seed)?;
    train.validate()?;
    test.validate()?;
    let n = match (cfg.clients, &train.users) {
        (0, Some(users)) => users.iter().collect::<std::collections::BTreeSet<_>>().len(),
        (0, None) => DEFAULT_CLIENTS,
        (n, _) => n,
    };
    let mut table = cfg.partition.clone();
    if table.is_empty() {
        let default = if train.users.is_some() { "natural" } else { "iid" };
        table.insert("use".into(), default.into());
    }
    let (partitioner, partition) =
        build_from_table(partitioners(), Kind::Partitioner, partitioners::SECTION, &table, &[])?;
    let parts = partitioner.partition(&train, n, &mut RngStream::derive(seed, "partition", 0, 0))?;
    check_parts(&parts, n, train.len())?;
    let noise = partitioner.feature_noise(n).into_iter().chain(std::iter::repeat(0.0));
    let affine = partitioner.feature_affine(n).into_iter().chain(std::iter::repeat(FeatureAffine::IDENTITY));
    let train = Arc::new(train);
    let label_maps = partitioner.label_maps(n, train.classes);
    let groups = partitioner.groups(n);
    let mut clients: Vec<ClientData> = parts
        .into_iter()
        .zip(noise.zip(affine))
        .map(|(idx, (noise_std, affine))| ClientData {
            data: train.clone(),
            idx: idx.into(),
            noise_std,
            affine,
            labels: None,
            stamp: None,
        })
        .collect();
    for (d, map) in clients.iter_mut().zip(&label_maps) {
        if let Some(map) = map {
            d.labels = Some(d.idx.iter().map(|&i| map[d.data.y[i as usize] as usize]).collect());
        }
    }
    if !(cfg.subsample > 0.0 && cfg.subsample <= 1.0) {
        return Err(Error::config("data.subsample", format!("must be in (0, 1], got {}", cfg.subsample)));
    }
    if !(cfg.unlabeled_share > 0.0 && cfg.unlabeled_share <= 1.0) {
        return Err(Error::config("data.unlabeled_share", format!("must be in (0, 1], got {}", cfg.unlabeled_share)));
    }
    if cfg.subsample < 1.0 {
        for (c, d) in clients.iter_mut().enumerate() {
            let k = ((d.len() as f64 * cfg.subsample).round() as usize).clamp(1, d.len());
            let mut keep = RngStream::derive(seed, "subsample", 0, c as u64).choose(d.len(), k);
            keep.sort_unstable();
            *d = d.subset(&keep);
        }
    }
    cfg.label_noise.apply(&mut clients, seed)?;
    if clients.iter().any(|d| d.labels.is_some()) {
        clients.iter().try_for_each(ClientData::validate_labels)?;
    }
    Ok(Federation { train, test: Arc::new(test), clients, partition, groups })
}

/// Every client non-empty, indices in range and disjoint.
fn check_parts(parts: &[Vec<u32>], n: usize, len: usize) -> Result<()> {
    if parts.len() != n {
        return Err(Error::Data(format!("the partition made {} clients instead of data.clients = {n}", parts.len())));
    }
    if let Some(i) = parts.iter().position(Vec::is_empty) {
        return Err(Error::config(
            "data.clients",
            format!("client {i} of {n} received no samples ({len} training samples in all); use fewer clients"),
        ));
    }
    let mut seen = vec![false; len];
    for &i in parts.iter().flatten() {
        match seen.get_mut(i as usize) {
            Some(s) if !*s => *s = true,
            _ => return Err(Error::Data(format!("the partition gave sample {i} twice or out of range 0..{len}"))),
        }
    }
    Ok(())
}

/// A text table of each client's sample count and label histogram, with totals and the min, max
/// and mean client size.
pub fn stats_table(fed: &Federation) -> String {
    let classes = fed.train.classes;
    let rows: Vec<(String, usize, Vec<usize>)> = fed
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| (i.to_string(), c.len(), fed.train.label_histogram(&c.idx)))
        .collect();
    let mut total = vec![0; classes];
    rows.iter().for_each(|r| r.2.iter().zip(&mut total).for_each(|(a, t)| *t += a));
    let sizes: Vec<usize> = rows.iter().map(|r| r.1).collect();
    let all = sizes.iter().sum::<usize>();
    let header: Vec<String> =
        ["client".to_string(), "samples".to_string()].into_iter().chain((0..classes).map(|c| c.to_string())).collect();
    let line = |r: &(String, usize, Vec<usize>)| -> Vec<String> {
        [r.0.clone(), r.1.to_string()].into_iter().chain(r.2.iter().map(usize::to_string)).collect()
    };
    let mut table: Vec<Vec<String>> = vec![header];
    table.extend(rows.iter().map(line));
    table.push(line(&("total".to_string(), all, total)));
    let width: Vec<usize> = (0..classes + 2).map(|j| table.iter().map(|r| r[j].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &table {
        let cells: Vec<String> = r.iter().zip(&width).map(|(c, w)| format!("{c:>w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
    let (min, max) = (sizes.iter().min().copied().unwrap_or(0), sizes.iter().max().copied().unwrap_or(0));
    let mean = all as f64 / sizes.len().max(1) as f64;
    let _ = writeln!(
        out,
        "{} clients ({}); samples per client: min {min}, max {max}, mean {mean:.1}; test set: {} samples",
        sizes.len(),
        fed.train.name,
        fed.test.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> DataConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn default_is_synthetic_one_client_per_user() {
        let fed = build_federation(&DataConfig::default(), 1).unwrap();
        assert_eq!(fed.clients.len(), 30);
        assert_eq!(fed.clients.iter().map(ClientData::len).sum::<usize>(), fed.train.len());
        let users = fed.train.users.as_ref().unwrap();
        for (k, c) in fed.clients.iter().enumerate() {
            assert!(c.idx.iter().all(|&i| users[i as usize] == k as u32));
            assert_eq!(c.noise_std, 0.0);
        }
        assert_eq!(fed.test.name, "synthetic/test");
        assert_eq!(fed.partition.get("use").and_then(toml::Value::as_str), Some("natural"));
        let again = build_federation(&DataConfig::default(), 1).unwrap();
        assert_eq!(again.train.x, fed.train.x);
    }

    #[test]
    fn fcube_with_partitions_and_noise() {
        let fed =
            build_federation(&cfg("name = \"fcube\"\nclients = 4\npartition = { use = \"synthetic_feature\" }"), 2)
                .unwrap();
        assert_eq!(fed.clients.iter().map(ClientData::len).collect::<Vec<_>>(), [1000; 4]);
        let fed = build_federation(&cfg("name = \"fcube\"\npartition = { use = \"noise_feature\", sigma = 0.9 }"), 2)
            .unwrap();
        assert_eq!(fed.clients.len(), DEFAULT_CLIENTS);
        assert_eq!(fed.clients[9].noise_std, 0.9);
        assert_eq!(fed.clients[0].noise_std, 0.0);
        assert_eq!(fed.partition.get("sigma").and_then(toml::Value::as_float), Some(0.9));
        // Default partition for a dataset without users is iid.
        let fed = build_federation(&cfg("name = \"fcube\"\nclients = 3"), 2).unwrap();
        assert_eq!(fed.clients.iter().map(ClientData::len).collect::<Vec<_>>(), [1334, 1333, 1333]);
        // The resolved partition table records the defaults.
        let fed = build_federation(&cfg("name = \"fcube\"\npartition = { use = \"dirichlet_label\" }"), 2).unwrap();
        assert_eq!(fed.partition.get("alpha").and_then(toml::Value::as_float), Some(0.5));
        assert_eq!(fed.partition.get("min_size").and_then(toml::Value::as_integer), Some(10));
    }

    // affine_feature: the clients get the partitioner's transforms and no noise, and client i's
    // batches are exactly a_i x + b_i of the raw features.
    #[test]
    fn affine_feature_clients_see_their_own_domain() {
        let text = "name = \"fcube\"\nclients = 5\npartition = { use = \"affine_feature\", contrast = 0.8 }";
        let fed = build_federation(&cfg(text), 3).unwrap();
        let want = partitioners::AffineFeature { contrast: 0.8, brightness: 0.5 };
        let want = fedkit_core::Partitioner::feature_affine(&want, 5);
        assert_eq!(fed.clients.iter().map(|c| c.affine).collect::<Vec<_>>(), want);
        assert!(fed.clients.iter().all(|c| c.noise_std == 0.0));
        assert_eq!(fed.partition.get("brightness").and_then(toml::Value::as_float), Some(0.5));
        let d = fed.train.feature_len();
        for (c, a) in fed.clients.iter().zip(&want) {
            let ids: Vec<usize> = (0..c.len().min(7)).collect();
            let mut b = fedkit_core::Batch::default();
            b.fill(c, &ids, &mut RngStream::new(0));
            let raw = ids.iter().flat_map(|&p| fed.train.features(c.idx[p] as usize));
            let mapped: Vec<f32> = raw.map(|&x| a.scale * x + a.shift).collect();
            assert_eq!(b.x, mapped);
            assert_eq!(b.x.len(), ids.len() * d);
        }
        assert!(!want[0].is_identity() && want[0].scale < 1.0 && want[4].scale > 1.0);
    }

    #[test]
    fn clear_errors() {
        let e = build_federation(&cfg("name = \"cifar\""), 0).unwrap_err().to_string();
        assert!(
            e.contains("data.name")
                && e.contains("synthetic, fcube, fashion_mnist, mnist, cifar10, femnist, shakespeare, tabular"),
            "{e}"
        );
        let e = build_federation(&cfg("clients = 7"), 0).unwrap_err().to_string();
        assert!(e.contains("data.clients") && e.contains("30"), "{e}");
        let e = build_federation(&cfg("name = \"fcube\"\nclients = 5000"), 0).unwrap_err().to_string();
        assert!(e.contains("data.clients") && e.contains("fewer clients"), "{e}");
        let e = build_federation(&cfg("partition = { use = \"dirichlet\" }"), 0).unwrap_err().to_string();
        assert!(e.contains("data.partition.use") && e.contains("dirichlet_label"), "{e}");
        let e = build_federation(&cfg("synthetic = { classes = 1 }"), 0).unwrap_err().to_string();
        assert!(e.contains("data.synthetic.classes"), "{e}");
        assert!(toml::from_str::<DataConfig>("nmae = \"x\"").is_err());
    }

    #[test]
    fn stats_table_lists_clients_and_totals() {
        let fed =
            build_federation(&cfg("name = \"fcube\"\nclients = 4\npartition = { use = \"synthetic_feature\" }"), 2)
                .unwrap();
        let t = stats_table(&fed);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 1 + 4 + 1 + 1, "{t}");
        assert!(lines[1].split_whitespace().eq(["0", "1000", "500", "500"]), "{t}");
        assert!(lines[5].split_whitespace().eq(["total", "4000", "2000", "2000"]), "{t}");
        assert!(lines[6].contains("min 1000, max 1000, mean 1000.0"), "{t}");
        assert!(lines[..6].iter().all(|l| l.len() == lines[0].len()), "columns must align:\n{t}");
    }

    #[test]
    fn every_dataset_is_documented() {
        for (name, src) in datasets() {
            let doc = fedkit_core::registry::module_doc(src);
            assert!(doc.contains(&format!("name = \"{name}\"")) || doc.contains(&format!("`{name}`")), "{name}");
        }
    }
}
