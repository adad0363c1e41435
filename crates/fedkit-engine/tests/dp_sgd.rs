//! Sample-level DP-SGD (`dp_sgd`) inside the engine: with every sample in every batch, no
//! clipping and negligible noise it is full-batch gradient descent; clipping bounds each
//! example's pull; the logged `sample_epsilon` is the accountant's for the worst client; the
//! same numbers on any thread count; bad combinations are refused.

use fedkit_engine::{Engine, RunConfig};
use fedkit_privacy::{Mechanism, Orders, Sampling, Series};

mod common;
use common::run;

const BASE: &[&str] = &[
    "rounds=3",
    "data.synthetic.users=20",
    "sampling.per_round=20",
    "client.epochs=1",
    "client.batch_size=10",
    "eval.every=1000",
    "eval.initial=false",
];

fn cfg(sets: &[&str]) -> fedkit_core::Result<RunConfig> {
    common::config(BASE, sets)
}

fn dp(clip: f64, z: f64) -> String {
    format!(r#"pipeline=[{{ use = "dp_sgd", clip = {clip}, noise_multiplier = {z}, delta = 1e-5 }}]"#)
}

#[test]
fn with_every_sample_no_clipping_and_no_noise_it_is_full_batch_descent() {
    // batch_size above every client's size: q = 1, one step an epoch, the fixed denominator n.
    let full = ["client.batch_size=100000"];
    let plain = run(cfg(&full).unwrap());
    let d = dp(1e6, 1e-15);
    let sgd = run(cfg(&[full[0], &d]).unwrap());
    let (a, b) = (plain.global.as_slice(), sgd.global.as_slice());
    let err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0.0, f32::max);
    assert!(err <= 1e-4 * scale, "max difference {err} of {scale}");
}

#[test]
fn clipping_bounds_each_examples_pull() {
    // One local step (max_steps = 1) at lr 1 from the same start: the update is the clipped
    // sum over the batch / L plus tiny noise, so its norm is at most |batch| C / L <= n C / L.
    let sets = ["rounds=1", "client.lr=1.0", "client.max_steps=1", "client.optimizer=\"sgd\""];
    let d = dp(1e-3, 1e-12);
    let mut all: Vec<&str> = sets.to_vec();
    all.push(&d);
    let mut e = Engine::new(cfg(&all).unwrap()).unwrap();
    let start = e.global.clone();
    e.run_round().unwrap();
    let norm =
        e.global.as_slice().iter().zip(start.as_slice()).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let max_n = e.fed.clients.iter().map(|c| c.len()).max().unwrap() as f64;
    assert!(norm > 0.0 && norm <= max_n * 1e-3 / 10.0 + 1e-6, "{norm}");
}

#[test]
fn the_logged_epsilon_is_the_accountants_for_the_worst_client() {
    let d = dp(1.0, 1.1);
    let e = run(cfg(&[&d]).unwrap());
    // Everyone trains every round: client i took rounds * ceil(n_i / 10) steps at q = 10 / n_i.
    let worst = e
        .fed
        .clients
        .iter()
        .map(|c| {
            let n = c.len();
            let m = Mechanism {
                q: (10.0 / n as f64).min(1.0),
                sigma: 1.1,
                steps: 3 * n.div_ceil(10) as u64,
                sampling: Sampling::Poisson,
            };
            fedkit_privacy::epsilon(&m, 1e-5, &Orders::dp_accounting(), Series::Magnitudes).unwrap().0
        })
        .fold(0.0, f64::max);
    let logged: Vec<f64> = e.records.iter().map(|r| r.get("sample_epsilon").unwrap()).collect();
    assert_eq!(logged[2], worst);
    // The PLD accountant: tighter, the same clients.
    let pld = format!("{}, accountant = \"pld\" }}]", d.trim_end_matches(" }]"));
    let p = run(cfg(&[&pld]).unwrap());
    let tight = p.records[2].get("sample_epsilon").unwrap();
    assert!(tight < worst && tight > 0.5 * worst, "PLD {tight} vs RDP {worst}");
    assert!(logged[0] < logged[1] && logged[1] < logged[2], "{logged:?}");
    assert!(e.records[2].get("client_loss").is_none());
}

#[test]
fn the_same_bits_on_any_thread_count() {
    let d = dp(0.5, 1.0);
    let one = run(cfg(&[&d, "threads=1"]).unwrap());
    let two = run(cfg(&[&d, "threads=2"]).unwrap());
    assert_eq!(one.global.as_slice(), two.global.as_slice());
    assert_eq!(one.records[2].get("sample_epsilon"), two.records[2].get("sample_epsilon"));
}

#[test]
fn bad_combinations_are_refused_naming_the_key() {
    let err = |sets: &[&str]| match cfg(sets).and_then(Engine::new) {
        Ok(mut e) => e.run_round().err().map(|e| e.to_string()).unwrap_or_else(|| format!("{sets:?} was accepted")),
        Err(e) => e.to_string(),
    };
    let d = dp(1.0, 1.0);
    let e = err(&[&d, "local.use=\"sam\""]);
    assert!(e.contains("local.use") && e.contains("plain"), "{e}");
    let e = err(&[&d, "algorithm.use=\"scaffold\""]);
    assert!(e.contains("algorithm.use"), "{e}");
    let e = err(&[r#"pipeline=[{ use = "dp_sgd", clip = -1.0 }]"#]);
    assert!(e.contains("clip"), "{e}");
}

#[test]
fn os_noise_and_batches_for_deployments() {
    let os = r#"pipeline=[{ use = "dp_sgd", clip = 1.0, noise_multiplier = 1.0, delta = 1e-5, noise_source = "os" }]"#;
    let (a, b) = (run(cfg(&[os]).unwrap()), run(cfg(&[os]).unwrap()));
    assert_ne!(a.global.as_slice(), b.global.as_slice());
    // The same plan of steps, so the same accounting.
    assert_eq!(a.records[2].get("sample_epsilon"), b.records[2].get("sample_epsilon"));
}
