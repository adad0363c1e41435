//! Regression guards for the hot paths (issue 4): `cargo bench -p fedkit-engine`. Numbers and
//! the targets they guard are in docs/performance.md.
//!
//! - `client/logreg_*` (`tiny` = a one-batch client): one Synthetic(1,1) logreg client's whole round (client_step: state,
//!   stages, local training, update) against its model calls alone; the difference is the
//!   per-client overhead (target: under 20 us).
//! - `model/*`: one training step (forward + backward + SGD) of each model, batch 32
//!   (`cnn_burn_batch32`, `lenet_burn_batch32`: the burn implementations of `cnn` and `lenet`, for
//!   comparison with the native ones).
//! - `aggregate/mean_*`: the weighted mean of a cohort's updates.
//! - `round/logreg_1000_clients`: one engine round with 1000 clients (workload 3's shape).

use std::hint::black_box;

use fedkit_core::{Batch, ClientCtx, ClientData, Extras, Layout, Model, ParamKind, Params, RngStream, Update};
use fedkit_engine::{Engine, RunConfig, client_step, engine::ClientSlot};

fn main() {
    divan::main();
}

fn synthetic(users: usize, extra: &[&str]) -> RunConfig {
    let mut sets: Vec<String> = vec![
        format!("data.synthetic.users={users}"),
        "client.epochs=1".into(),
        "client.batch_size=10".into(),
        "eval.train_loss=false".into(),
        "eval.initial=false".into(),
        "eval.every=1000".into(),
        "rounds=1000".into(),
        "threads=1".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::load(None, &sets).expect("bench config")
}

/// A built engine plus one of its clients (the median-sized one).
struct OneClient {
    engine: Engine,
    model: Box<dyn Model>,
    client: usize,
}

/// `tiny`: 20,000 IID clients of about 9 samples (one batch each), so the per-client overhead is
/// not hidden behind many batches; otherwise the 200 natural users (median about 100 samples).
fn one_client(tiny: bool) -> OneClient {
    let sets: &[&str] = if tiny { &["data.clients=20000", "data.partition.use=iid"] } else { &[] };
    let engine = Engine::new(synthetic(200, sets)).expect("engine");
    let mut sizes: Vec<(usize, usize)> = engine.fed.clients.iter().map(|c| c.len()).enumerate().collect();
    sizes.sort_by_key(|s| s.1);
    let client = sizes[sizes.len() / 2].0;
    let model = fedkit_models::models()
        .iter()
        .find(|e| e.name == "logreg")
        .map(|e| (e.build)(&toml::Table::new(), &mut toml::Table::new()).expect("logreg"))
        .expect("logreg registered")
        .instantiate(&engine.fed.train.feature_shape, engine.fed.train.classes)
        .expect("logreg fits");
    OneClient { engine, model, client }
}

#[divan::bench_group]
mod client {
    use super::*;

    /// One client's whole round: state, stages, local training (E = 1, B = 10), the update.
    #[divan::bench(args = [false, true])]
    fn logreg_client_step(b: divan::Bencher, tiny: bool) {
        let mut s = one_client(tiny);
        let (extras, e) = (Extras::default(), &s.engine);
        let step = e.local.as_ref();
        let mut slot = ClientSlot::default();
        b.bench_local(|| {
            let cx = ClientCtx {
                round: 1,
                client: s.client as u32,
                seed: 0,
                global: &e.global,
                broadcast: &extras,
                train: &e.cfg.client,
                epochs: 1,
                malicious: false,
                step,
                loss: e.loss.as_ref(),
                train_hook: None,
            };
            black_box(
                client_step(
                    e.algorithm.as_ref(),
                    &e.stages,
                    None,
                    s.model.as_mut(),
                    &cx,
                    &e.fed.clients[s.client],
                    &mut slot,
                )
                .expect("client step"),
            )
        });
    }

    /// The same client's model calls alone: its batches' forward + backward, nothing else.
    #[divan::bench(args = [false, true])]
    fn logreg_model_calls(b: divan::Bencher, tiny: bool) {
        let mut s = one_client(tiny);
        let d: &ClientData = &s.engine.fed.clients[s.client];
        let bs = s.engine.cfg.client.batch_size;
        let mut batches = Vec::new();
        let ids: Vec<usize> = (0..d.len()).collect();
        for c in ids.chunks(bs) {
            let mut batch = Batch::default();
            batch.fill(d, c, &mut RngStream::new(0));
            batches.push(batch);
        }
        let mut w = s.engine.global.clone();
        let mut g = w.zeros_like();
        let mut rng = RngStream::new(0);
        b.bench_local(|| {
            for batch in &batches {
                black_box(s.model.loss_grad(&mut w, batch, &mut g, &mut rng).expect("loss"));
            }
        });
    }
}

#[divan::bench_group(sample_count = 20)]
mod model {
    use super::*;

    fn train_step(b: divan::Bencher, model: &str, shape: &[usize], table: &str) {
        let spec = fedkit_models::models()
            .iter()
            .find(|e| e.name == model)
            .map(|e| (e.build)(&table.parse().expect("toml"), &mut toml::Table::new()).expect("model"))
            .expect("registered");
        let mut m = spec.instantiate(shape, 10).expect("fits");
        let mut w = m.init(&mut RngStream::new(1));
        let mut g = w.zeros_like();
        let d: usize = shape.iter().product();
        let mut rng = RngStream::new(2);
        let batch = Batch {
            x: (0..32 * d).map(|_| rng.uniform() as f32).collect(),
            y: (0..32).map(|i| i % 10).collect(),
            feature_shape: shape.to_vec(),
            classes: 10,
            targets: Vec::new(),
        };
        b.bench_local(|| {
            black_box(m.loss_grad(&mut w, &batch, &mut g, &mut rng).expect("loss"));
            w.axpy(-0.01, &g);
        });
    }

    #[divan::bench]
    fn mlp_batch32(b: divan::Bencher) {
        train_step(b, "mlp", &[784], "");
    }

    #[divan::bench]
    fn cnn_batch32(b: divan::Bencher) {
        train_step(b, "cnn", &[1, 28, 28], "");
    }

    /// The same step on the burn implementation of `cnn` (the native one is the default).
    #[divan::bench]
    fn cnn_burn_batch32(b: divan::Bencher) {
        train_step(b, "cnn", &[1, 28, 28], "backend = 'burn'");
    }

    #[divan::bench]
    fn lenet_batch32(b: divan::Bencher) {
        train_step(b, "lenet", &[1, 28, 28], "");
    }

    /// The same step on the burn implementation of `lenet` (the native one is the default).
    #[divan::bench]
    fn lenet_burn_batch32(b: divan::Bencher) {
        train_step(b, "lenet", &[1, 28, 28], "backend = 'burn'");
    }
}

#[divan::bench_group]
mod aggregate {
    use super::*;

    fn cohort(clients: u32, n: usize) -> Vec<Update> {
        let mut l = Layout::new();
        l.push("w", &[n], ParamKind::Weight);
        let l = std::sync::Arc::new(l);
        (0..clients)
            .map(|c| {
                let mut r = RngStream::new(c as u64);
                let delta = Params::from_vec(l.clone(), (0..n).map(|_| r.normal() as f32).collect()).expect("len");
                Update {
                    client: c,
                    delta,
                    weight: 1.0 + c as f32,
                    extras: Extras::default(),
                    metrics: Default::default(),
                }
            })
            .collect()
    }

    #[divan::bench(args = [(10, 1_663_370), (100, 199_210), (1000, 610)])]
    fn mean(b: divan::Bencher, (clients, n): (u32, usize)) {
        let ups = cohort(clients, n);
        b.bench_local(|| black_box(fedkit_methods::aggregators::mean::weighted_mean(&ups, true).expect("mean")));
    }
}

#[divan::bench_group(sample_count = 10)]
mod round {
    use super::*;

    /// One engine round: 1000 logreg clients of Synthetic(1,1) (E = 1, B = 10), 2 threads.
    #[divan::bench]
    fn logreg_1000_clients(b: divan::Bencher) {
        let mut e = Engine::new(synthetic(1000, &["sampling.per_round=1000", "threads=2"])).expect("engine");
        b.bench_local(|| black_box(e.run_round().expect("round")));
    }
}
