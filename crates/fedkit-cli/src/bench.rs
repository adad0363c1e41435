//! `fedkit bench`: local-training throughput (samples/s) of the mlp and cnn models with 1 and 2
//! clients in parallel, and the round rate of a 1000-client logreg round on synthetic data.
//! Numbers go to docs/performance.md; nothing here is a pass/fail test.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use fedkit_core::registry::{Kind, build_from_table};
use fedkit_core::{ClientData, Dataset, LocalTrain, NoHook, RngStream, local_train};
use fedkit_engine::workers::Workers;

fn random_images(n: usize, shape: &[usize], classes: usize) -> Arc<Dataset> {
    let mut r = RngStream::new(1);
    let d: usize = shape.iter().product();
    Arc::new(Dataset {
        name: "bench".into(),
        x: (0..n * d).map(|_| r.uniform() as f32).collect(),
        y: (0..n).map(|_| r.below(classes as u64) as u32).collect(),
        feature_shape: shape.to_vec(),
        classes,
        users: None,
        targets: Vec::new(),
    })
}

fn model(name: &str, shape: &[usize]) -> Result<Box<dyn fedkit_core::Model>> {
    let mut table = toml::Table::new();
    table.insert("use".into(), toml::Value::String(name.into()));
    let (spec, _) = build_from_table(fedkit_models::models(), Kind::Model, "model", &table, &[])?;
    Ok(spec.instantiate(shape, 10)?)
}

/// Samples/s of `clients` parallel single-threaded clients each training one epoch on `n` samples.
fn train_throughput(name: &str, shape: &[usize], n: usize, clients: usize) -> Result<f64> {
    let m = model(name, shape)?;
    let data = ClientData::whole(random_images(n, shape, 10));
    let cfg = LocalTrain { lr: 0.01, batch_size: 32, epochs: 1, ..Default::default() };
    let init = m.init(&mut RngStream::new(0));
    let mut workers = Workers::new(clients, m.as_ref())?;
    let t = Instant::now();
    let res = workers.map(clients, |model, i| {
        let mut p = init.clone();
        local_train(
            model,
            &mut p,
            &data,
            &cfg,
            1,
            &mut NoHook,
            &fedkit_core::PlainStep,
            1,
            &mut RngStream::new(i as u64),
        )
        .map(|s| s.samples)
    });
    let samples: usize = res.into_iter().collect::<fedkit_core::Result<Vec<_>>>()?.iter().sum();
    Ok(samples as f64 / t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(quick: bool) -> Result<()> {
    let reps = if quick { 1 } else { 3 };
    println!(
        "fedkit bench ({} rep(s), median; mlp on burn-flex, cnn and logreg native Rust; one thread per client)",
        reps
    );
    for (name, shape, n) in [
        ("mlp", vec![1, 28, 28], if quick { 640 } else { 6400 }),
        ("cnn", vec![1, 28, 28], if quick { 64 } else { 640 }),
    ] {
        for clients in [1, 2] {
            let v: Vec<f64> = (0..reps).map(|_| train_throughput(name, &shape, n, clients)).collect::<Result<_>>()?;
            println!(
                "local training  {name:<4} batch 32, {clients} client(s) in parallel: {:>10.0} samples/s",
                median(v)
            );
        }
    }
    let rounds = if quick { 2 } else { 10 };
    let sets = vec![
        "data.synthetic.users=1000".to_string(),
        "sampling.per_round=1000".into(),
        "client.epochs=1".into(),
        "client.batch_size=10".into(),
        format!("rounds={rounds}"),
        "eval.every=1000000".into(),
        "eval.initial=false".into(),
        "eval.train_loss=false".into(),
    ];
    let cfg = fedkit_engine::RunConfig::load(None, &sets)?;
    let mut engine = fedkit_engine::Engine::new(cfg)?;
    let samples: usize = engine.fed.clients.iter().map(|c| c.len()).sum();
    let t = Instant::now();
    for _ in 0..rounds - 1 {
        engine.run_round()?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "1000-client logreg round (Synthetic(1,1), 1000 users, {samples} samples, E=1, B=10, {} threads): {:.2} rounds/s, {:.1} us per client",
        engine.threads(),
        (rounds - 1) as f64 / secs,
        secs / (rounds - 1) as f64 / 1000.0 * 1e6
    );
    Ok(())
}
