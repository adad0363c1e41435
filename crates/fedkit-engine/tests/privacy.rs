//! DP inside the engine: Poisson cohorts, `dp_fixed_clip` end to end (the logged epsilon is the
//! accountant's, empty cohorts are noised, no per-client loss is logged), and the config checks.

use fedkit_engine::{Engine, RunConfig, poisson_cohort};

fn cfg(sets: &[&str]) -> fedkit_core::Result<RunConfig> {
    let mut all: Vec<String> = [
        "rounds=6",
        "data.synthetic.users=50",
        "client.epochs=1",
        "client.batch_size=10",
        "eval.every=1000",
        "eval.initial=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(sets.iter().map(|s| s.to_string()));
    RunConfig::load(None, &all)
}

fn run(c: RunConfig) -> Engine {
    let mut e = Engine::new(c).unwrap();
    for _ in 0..e.cfg.rounds {
        e.run_round().unwrap();
    }
    e
}

const DP: &str = r#"pipeline=[{ use = "dp_fixed_clip", clip = 0.5, noise_multiplier = 1.1, delta = 1e-4 }]"#;

#[test]
fn poisson_cohorts_have_the_right_size_on_average_and_are_deterministic() {
    let (n, q) = (2000, 0.05);
    let sizes: Vec<usize> = (1..=200).map(|r| poisson_cohort(7, r, n, q).len()).collect();
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    // 200 rounds of Binomial(2000, 0.05): mean 100, standard error about 0.7.
    assert!((mean - 100.0).abs() < 3.0, "{mean}");
    assert!(sizes.iter().collect::<std::collections::BTreeSet<_>>().len() > 10, "sizes vary");
    assert_eq!(poisson_cohort(7, 3, n, q), poisson_cohort(7, 3, n, q));
    assert_ne!(poisson_cohort(7, 3, n, q), poisson_cohort(7, 4, n, q));
}

#[test]
fn dp_fedavg_logs_the_accountants_epsilon_and_no_client_loss() {
    let e = run(cfg(&["sampling.scheme=\"poisson\"", "sampling.rate=0.2", DP]).unwrap());
    let m = fedkit_privacy::Mechanism { q: 0.2, sigma: 1.1, steps: 0, sampling: fedkit_privacy::Sampling::Poisson };
    for rec in &e.records {
        let steps = rec.round() as u64;
        let want = fedkit_privacy::epsilon(
            &fedkit_privacy::Mechanism { steps, ..m },
            1e-4,
            &fedkit_privacy::Orders::dp_accounting(),
            fedkit_privacy::Series::Magnitudes,
        )
        .unwrap()
        .0;
        let got = rec.get("epsilon").expect("epsilon every round");
        assert!((got - want).abs() <= 1e-12 * want, "round {steps}: {got} vs {want}");
        assert!(rec.get("client_loss").is_none(), "per-client losses are not released");
    }
    // The same config and seed give the same model bit for bit.
    let again = run(cfg(&["sampling.scheme=\"poisson\"", "sampling.rate=0.2", DP]).unwrap());
    assert_eq!(e.global.as_slice(), again.global.as_slice());
}

#[test]
fn an_empty_poisson_cohort_is_noised_and_without_dp_leaves_the_model() {
    // q = 1e-6 of 50 clients: every cohort is empty.
    let quiet = run(cfg(&["sampling.scheme=\"poisson\"", "sampling.rate=1e-6"]).unwrap());
    let start = Engine::new(cfg(&[]).unwrap()).unwrap().global;
    assert_eq!(quiet.global.as_slice(), start.as_slice(), "no one sampled, no DP: unchanged");
    assert!(quiet.records.iter().all(|r| r.get("participants") == Some(0.0)));
    let noised = run(cfg(&["sampling.scheme=\"poisson\"", "sampling.rate=1e-6", DP]).unwrap());
    assert_ne!(noised.global.as_slice(), start.as_slice(), "every DP round adds its noise");
    assert!(noised.records.iter().all(|r| r.get("epsilon").is_some()));
}

#[test]
fn mismatched_settings_are_refused_naming_the_key() {
    let err = |sets: &[&str]| match cfg(sets).and_then(Engine::new) {
        Ok(_) => panic!("{sets:?} was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err(&["sampling.scheme=\"poisson\""]).contains("sampling.rate"));
    assert!(err(&["sampling.rate=0.1"]).contains("sampling.rate"));
    assert!(err(&["sampling.scheme=\"poisson\"", "sampling.rate=1.5"]).contains("sampling.rate"));
    let e = err(&["sampling.scheme=\"poisson\"", "sampling.rate=0.2", DP, "aggregator.use=\"median\""]);
    assert!(e.contains("aggregator.use") && e.contains("mean"), "{e}");
    let e = err(&[r#"pipeline=[{ use = "dp_fixed_clip", noise_multiplier = 0.0 }]"#]);
    assert!(e.contains("pipeline.0.noise_multiplier"), "{e}");
}

#[test]
fn an_algorithm_that_draws_its_own_cohort_is_refused_under_dp() {
    let mut e = Engine::new(cfg(&["algorithm.use=\"drfa\"", DP]).unwrap()).unwrap();
    let msg = e.run_round().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("algorithm.use") && msg.contains("draws its own cohort"), "{msg}");
}

#[test]
fn scaffolds_control_variates_are_refused_under_dp() {
    let mut e = Engine::new(cfg(&["algorithm.use=\"scaffold\"", DP]).unwrap()).unwrap();
    let msg = match e.run_round() {
        Ok(_) => String::new(),
        Err(err) => err.to_string(),
    };
    // Refused in the client step: the round fails with every client's reason.
    assert!(msg.contains("every client failed") && msg.contains("algorithm.use") && msg.contains("delta_c"), "{msg}");
}
