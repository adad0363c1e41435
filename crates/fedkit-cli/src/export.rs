//! `fedkit data export CONFIG --out DIR`: write the federation a config builds, and its model's
//! initial parameters, as plain files, so another framework (the peer benchmarks in
//! `bench/peers/`) trains on exactly the same samples, client splits and starting weights.
//!
//! Files (all little-endian, row-major):
//! - `meta.json`: dataset name, `feature_shape`, `classes`, sample counts, client count, the
//!   model's layout (`name`, `shape`, `kind`, `offset` per entry; linear weights are `[in, out]`,
//!   convolutions `[out, in, k, k]`), the seed and the resolved config.
//! - `train_x.f32`, `test_x.f32`: features as f32 (`n x prod(feature_shape)`), exactly what
//!   fedkit's models see (after the dataset's scaling).
//! - `train_y.u32`, `test_y.u32`: labels.
//! - `clients.json`: one list of training-sample indices per client, in fedkit's order.
//! - `init.f32`: the initial global model (flat, in the layout's order).
//! - `cohorts.json`: for each round 1..=rounds, the clients fedkit trains that round (sorted ids):
//!   the engine's default uniform draw, which every algorithm that does not choose its own
//!   cohort (DRFA does) uses. Replaying it removes the cohort draw from cross-framework
//!   comparisons.
//! - `orders.u32`: the order in which each cohort member visits its samples, epoch by epoch
//!   (positions into its `clients.json` list), for round 1, its clients in `cohorts.json` order,
//!   then round 2, ...: `epochs` permutations of `n_c` values per client. These are the draws of
//!   the client's batch stream ([`fedkit_core::BATCH_STREAM`]), exact for local training that
//!   draws nothing else from it (FedAvg with plain SGD and no feature noise: the peer benchmarks).

use std::path::Path;

use anyhow::{Context, Result};
use fedkit_core::{BATCH_STREAM, RngStream};
use fedkit_engine::{RunConfig, uniform_cohort};
use serde_json::json;

/// Export the federation and initial model of `cfg` into `out`.
pub fn export(mut cfg: RunConfig, out: &Path) -> Result<String> {
    let built = cfg.build().map_err(|e| e.in_file(&cfg.source))?;
    let fed = fedkit_data::build_federation(&cfg.data, cfg.seed).map_err(|e| e.in_file(&cfg.source))?;
    cfg.data.partition = fed.partition.clone();
    let model =
        built.model.instantiate(&fed.train.feature_shape, fed.train.classes).map_err(|e| e.in_file(&cfg.source))?;
    // The engine's initial model: the same stream (seed, "init", 0, 0).
    let init = model.init(&mut RngStream::derive(cfg.seed, "init", 0, 0));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, bytes: Vec<u8>| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
    };
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    write("train_x.f32", f32s(&fed.train.x))?;
    write("train_y.u32", u32s(&fed.train.y))?;
    write("test_x.f32", f32s(&fed.test.x))?;
    write("test_y.u32", u32s(&fed.test.y))?;
    write("init.f32", f32s(init.as_slice()))?;
    let clients: Vec<&[u32]> = fed.clients.iter().map(|c| &c.idx[..]).collect();
    write("clients.json", serde_json::to_vec(&clients)?)?;
    let n = fed.clients.len();
    let cohorts: Vec<Vec<u32>> =
        (1..=cfg.rounds).map(|r| uniform_cohort(cfg.seed, r, n, cfg.sampling.per_round)).collect();
    write("cohorts.json", serde_json::to_vec(&cohorts)?)?;
    let mut orders = Vec::new();
    for (round, cohort) in (1..).zip(&cohorts) {
        for &c in cohort {
            let mut rng = RngStream::derive(cfg.seed, BATCH_STREAM, round, c as u64);
            for _ in 0..cfg.client.epochs {
                orders.extend(rng.permutation(fed.clients[c as usize].len()).into_iter().map(|i| i as u32));
            }
        }
    }
    write("orders.u32", u32s(&orders))?;
    let layout: Vec<_> = init
        .layout()
        .entries()
        .iter()
        .map(|e| json!({"name": e.name, "shape": e.shape, "kind": format!("{:?}", e.kind), "offset": e.offset}))
        .collect();
    let meta = json!({
        "dataset": fed.train.name,
        "feature_shape": fed.train.feature_shape,
        "classes": fed.train.classes,
        "train_samples": fed.train.len(),
        "test_samples": fed.test.len(),
        "clients": fed.clients.len(),
        "params": init.len(),
        "layout": layout,
        "seed": cfg.seed,
        "rounds": cfg.rounds,
        "epochs": cfg.client.epochs,
        "config": cfg.to_toml()?,
    });
    write("meta.json", serde_json::to_vec_pretty(&meta)?)?;
    Ok(format!(
        "exported {} clients, {} training and {} test samples, {} initial parameters to {}",
        fed.clients.len(),
        fed.train.len(),
        fed.test.len(),
        init.len(),
        out.display()
    ))
}
