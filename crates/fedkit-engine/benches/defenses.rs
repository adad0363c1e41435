//! The robust aggregators on large cohorts (issue 9): `cargo bench -p fedkit-engine --bench
//! defenses`. Numbers and targets in docs/performance.md.
//!
//! - `cnn_100/<defence>`: one aggregation of 100 updates of the `cnn` (1.66M parameters);
//!   targets on one core: Krum and FLAME under 2 s, coordinate-wise rules under 0.5 s, DeepSight
//!   (its DDifs run the model on 3 x 200 noise images per update) under 10 s;
//!   `cnn_100_deepsight_threads`: DeepSight with its DDifs on 1 and 2 engine workers.
//! - `mlp_1000/<defence>`: 1000 updates of the `mlp` 784-200-200-10 (199k parameters).
//!
//! Updates are N(0, 0.01^2) per coordinate around a common direction, so filtering rules see a
//! benign-looking cohort. One thread (`RAYON_NUM_THREADS=1` is not needed: the rules are serial).

use std::hint::black_box;
use std::sync::Arc;

use fedkit_core::registry::{Kind, build_from_table};
use fedkit_core::{
    AggregatorView, ClientData, Dataset, Extras, LocalTrain, Metrics, Model, ModelPool, Params, RngStream, RoundCtx,
    Update,
};
use fedkit_engine::workers::Workers;

fn main() {
    divan::main();
}

const DEFENCES: &[&str] = &[
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "geomed",
    "norm_bound",
    "centered_clip",
    "rlr",
    "fltrust",
    "foolsgold",
    "flame",
    "sparsefed",
    "weak_dp",
    "crfl",
    "deepsight",
];

/// A model of the registry for 1x28x28 images and 10 classes.
fn model(spec: &str) -> Box<dyn Model> {
    let table: toml::Table = spec.parse().expect("model table");
    let (m, _) = build_from_table(fedkit_models::models(), Kind::Model, "model", &table, &[]).expect("model");
    m.instantiate(&[1, 28, 28], 10).expect("instantiate")
}

/// Everything one aggregation needs.
struct Cohort {
    updates: Vec<Update>,
    global: Params,
    model: Box<dyn Model>,
    data: ClientData,
    ids: Vec<u32>,
    malicious: Vec<bool>,
}

fn cohort(spec: &str, n: usize) -> Cohort {
    let model = model(spec);
    let global = model.init(&mut RngStream::new(1));
    let mut rng = RngStream::new(2);
    let base: Vec<f32> = (0..global.len()).map(|_| (0.01 * rng.normal()) as f32).collect();
    let updates = (0..n as u32)
        .map(|c| {
            let v: Vec<f32> = base.iter().map(|b| b + (0.01 * rng.normal()) as f32).collect();
            Update {
                client: c,
                delta: Params::from_vec(global.layout().clone(), v).expect("layout"),
                weight: 1.0,
                extras: Extras::default(),
                metrics: Metrics::new(),
            }
        })
        .collect();
    let images = Dataset {
        name: "noise".into(),
        x: (0..200 * 784).map(|_| rng.uniform() as f32).collect(),
        y: (0..200).map(|i| i % 10).collect(),
        feature_shape: vec![1, 28, 28],
        classes: 10,
        users: None,
        targets: Vec::new(),
    };
    Cohort {
        updates,
        global,
        model,
        data: ClientData::whole(Arc::new(images)),
        ids: (0..n as u32).collect(),
        malicious: vec![false; n],
    }
}

fn aggregate(b: divan::Bencher, c: &mut Cohort, name: &str, threads: usize) {
    let table: toml::Table = format!("use = \"{name}\"").parse().expect("table");
    let (mut agg, _) =
        build_from_table(fedkit_methods::aggregators(), Kind::Aggregator, "aggregator", &table, &[]).expect("build");
    let train = LocalTrain { epochs: 1, batch_size: 32, ..LocalTrain::default() };
    let draws = vec![1u32; c.ids.len()];
    let mut workers = (threads > 1).then(|| Workers::new(threads, c.model.as_ref()).expect("workers"));
    b.bench_local(|| {
        let r = RoundCtx {
            round: 1,
            cohort: &c.ids,
            global: &c.global,
            seed: 1,
            population: c.ids.len(),
            malicious: &c.malicious,
            draws: &draws,
        };
        let mut view = AggregatorView {
            model: c.model.as_mut(),
            server_data: &c.data,
            train: &train,
            workers: workers.as_mut().map(|w| w as &mut dyn ModelPool),
        };
        black_box(agg.aggregate_with(&r, &c.updates, &mut view).expect("aggregate"));
    });
}

#[divan::bench(args = DEFENCES, sample_count = 3, sample_size = 1)]
fn cnn_100(b: divan::Bencher, name: &str) {
    let mut c = cohort("use = \"cnn\"", 100);
    aggregate(b, &mut c, name, 1);
}

/// DeepSight's DDifs on the engine's workers (its model work is the only parallel part).
#[divan::bench(args = [1, 2], sample_count = 3, sample_size = 1)]
fn cnn_100_deepsight_threads(b: divan::Bencher, threads: usize) {
    let mut c = cohort("use = \"cnn\"", 100);
    aggregate(b, &mut c, "deepsight", threads);
}

#[divan::bench(args = DEFENCES, sample_count = 3, sample_size = 1)]
fn mlp_1000(b: divan::Bencher, name: &str) {
    let mut c = cohort("use = \"mlp\"\nhidden = [200, 200]", 1000);
    aggregate(b, &mut c, name, 1);
}
