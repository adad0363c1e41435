//! DP inside the engine: Poisson cohorts, `dp_fixed_clip` end to end (the logged epsilon is the
//! accountant's, empty cohorts are noised, no per-client loss is logged), and the config checks.

use fedkit_engine::{Engine, RunConfig, poisson_cohort};

mod common;
use common::run;

const BASE: &[&str] = &[
    "rounds=6",
    "data.synthetic.users=50",
    "client.epochs=1",
    "client.batch_size=10",
    "eval.every=1000",
    "eval.initial=false",
];

fn cfg(sets: &[&str]) -> fedkit_core::Result<RunConfig> {
    common::config(BASE, sets)
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

/// What reached the server and what the aggregate was, per round.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(Vec<(u32, Vec<f32>)>, Vec<u32>, Vec<f32>)>>>;

/// Run `c` with a tap that records each round's updates (before secure aggregation, as sent in
/// the clear to nobody: the simulation's view) and the aggregate with the clients it holds.
fn tapped(c: RunConfig) -> (Engine, Seen) {
    struct Tap(Seen, Vec<(u32, Vec<f32>)>);
    impl fedkit_core::Stage for Tap {
        fn on_cohort(
            &mut self,
            _r: &fedkit_core::RoundCtx,
            us: &mut Vec<fedkit_core::Update>,
        ) -> fedkit_core::Result<()> {
            self.1 = us.iter().map(|u| (u.client, u.delta.as_slice().to_vec())).collect();
            Ok(())
        }
        fn on_aggregate(
            &mut self,
            _r: &fedkit_core::RoundCtx,
            a: &mut fedkit_core::Aggregate,
        ) -> fedkit_core::Result<()> {
            self.0.lock().unwrap().push((std::mem::take(&mut self.1), a.accepted.clone(), a.delta.as_slice().to_vec()));
            Ok(())
        }
    }
    let mut e = Engine::new(c).unwrap();
    let seen: Seen = Default::default();
    e.stages.push(fedkit_engine::config::StageSlot {
        stage: Box::new(Tap(seen.clone(), Vec::new())),
        on: fedkit_engine::config::Scope::All,
    });
    for _ in 0..e.cfg.rounds {
        e.run_round().unwrap();
    }
    (e, seen)
}

#[test]
fn secure_aggregation_returns_the_mean_of_the_summed_updates_under_dropouts() {
    for (protocol, dropout, phase) in
        [("secagg", 0.0, 2), ("secagg", 0.3, 2), ("secagg", 0.3, 3), ("secagg_plus", 0.0, 2), ("secagg_plus", 0.2, 1)]
            .into_iter()
            .chain([("hybridalpha", 0.0, 0), ("hybridalpha", 0.3, 0)])
    {
        let sets = [
            "rounds=2".to_string(),
            "sampling.per_round=20".to_string(),
            format!("secure_aggregation.use=\"{protocol}\""),
            format!("secure_aggregation.dropout={dropout}"),
            format!("secure_aggregation.dropout_phase={phase}"),
            "secure_aggregation.neighbours=8".to_string(),
        ];
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let (e, seen) = tapped(cfg(&sets).unwrap());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (ups, summed, agg) in seen.iter() {
            let dropped = ups.len() - summed.len();
            // Dropping before unmasking keeps the inputs; earlier, they are lost.
            let want_dropped = if phase == 3 { 0 } else { (dropout * 20.0f64).round() as usize };
            assert_eq!(dropped, want_dropped, "{protocol} {dropout} {phase}");
            let bound = 1.0; // every synthetic update coordinate stays inside it
            let ring = if protocol == "hybridalpha" { (1u64 << 24) as f64 } else { i32::MAX as f64 };
            let scale = (ring / (ups.len() as f64 * bound)).floor();
            for j in 0..agg.len() {
                let mean: f64 = ups.iter().filter(|u| summed.contains(&u.0)).map(|u| u.1[j] as f64).sum::<f64>()
                    / summed.len() as f64;
                assert!(
                    (agg[j] as f64 - mean).abs() <= 1.0 / scale + 1e-6,
                    "{protocol}: coordinate {j}: {} vs {mean}",
                    agg[j]
                );
            }
        }
        let last = e.records.last().unwrap();
        assert!(last.get("secagg_summed").is_some() && last.get("client_loss").is_none());
        assert!(last.get("bytes_up").unwrap() > 0.0);
    }
}

#[test]
fn secure_aggregation_refuses_what_would_read_individual_updates() {
    let err = |sets: &[&str]| match cfg(sets).and_then(Engine::new) {
        Ok(mut e) => e.run_round().err().map(|e| e.to_string()).unwrap_or_else(|| format!("{sets:?} was accepted")),
        Err(e) => e.to_string(),
    };
    let sa = "secure_aggregation.use=\"secagg\"";
    assert!(err(&[sa, "aggregator.use=\"krum\""]).contains("aggregator.use"));
    let e = err(&[sa, "algorithm.use=\"feddyn\""]);
    assert!(e.contains("algorithm.use") && e.contains("individual updates"), "{e}");
    let e = err(&[sa, "secure_aggregation.dropout=0.8"]);
    assert!(e.contains("fewer than") && e.contains("without a result"), "{e}");
    assert!(err(&["secure_aggregation.use=\"secagg_plus\"", "secure_aggregation.neighbours=3"]).contains("even"));
    let ha = "secure_aggregation.use=\"hybridalpha\"";
    let e = err(&[ha, "secure_aggregation.dropout=0.8"]);
    assert!(e.contains("authority requires") && e.contains("without a result"), "{e}");
    assert!(err(&[ha, "aggregator.use=\"median\""]).contains("aggregator.use"));
    assert!(err(&[ha, "secure_aggregation.range_bits=50"]).contains("range_bits"));
    assert!(err(&[ha, "secure_aggregation.range_bits=40", "secure_aggregation.table_bits=20"]).contains("giant steps"));
}

#[test]
fn dp_composes_with_secure_aggregation() {
    // Central DP noise on the securely summed, clipped updates: epsilon as without secagg.
    let base = ["sampling.scheme=\"poisson\"", "sampling.rate=0.3", DP];
    let plain = run(cfg(&base).unwrap());
    let mut with = base.to_vec();
    with.push("secure_aggregation.use=\"secagg\"");
    let secure = run(cfg(&with).unwrap());
    for (a, b) in plain.records.iter().zip(&secure.records) {
        assert_eq!(a.get("epsilon"), b.get("epsilon"));
    }
    // The models agree to the encoding's resolution (the noise is the same stream).
    let d =
        plain.global.as_slice().iter().zip(secure.global.as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d < 1e-4, "max difference {d}");
}

#[test]
fn os_randomness_for_deployments() {
    // Secure aggregation with OS secrets: other masks, the same sum, so the same model.
    let sa = ["secure_aggregation.use=\"secagg\"", "rounds=2"];
    let seeded = run(cfg(&sa).unwrap());
    let mut os = sa.to_vec();
    os.push("secure_aggregation.entropy=\"os\"");
    assert_eq!(run(cfg(&os).unwrap()).global.as_slice(), seeded.global.as_slice());
    // DP noise from the OS: the same accounting, a different (unreproducible) model.
    let dp = r#"pipeline=[{ use = "dp_fixed_clip", clip = 0.5, noise_multiplier = 1.1, delta = 1e-4, noise_source = "os" }]"#;
    let sets = ["sampling.scheme=\"poisson\"", "sampling.rate=0.2", "rounds=2", dp];
    let (a, b) = (run(cfg(&sets).unwrap()), run(cfg(&sets).unwrap()));
    assert_ne!(a.global.as_slice(), b.global.as_slice());
    assert_eq!(a.records.last().unwrap().get("epsilon"), b.records.last().unwrap().get("epsilon"));
}

const SKELLAM: [&str; 5] = [
    "sampling.scheme=\"poisson\"",
    "sampling.rate=0.4",
    "secure_aggregation.threshold=0.3",
    "secure_aggregation.use=\"secagg\"",
    "secure_aggregation.dp=\"skellam\"",
];

/// The model change of one round of `sets`, and the engine.
fn one_round(sets: &[&str]) -> (Vec<f64>, Engine) {
    let mut all: Vec<&str> = SKELLAM.to_vec();
    all.extend(sets);
    all.push("rounds=1");
    let mut e = Engine::new(cfg(&all).unwrap()).unwrap();
    let start = e.global.clone();
    e.run_round().unwrap();
    let d = e.global.as_slice().iter().zip(start.as_slice()).map(|(a, b)| (a - b) as f64).collect();
    (d, e)
}

#[test]
fn skellam_noise_on_the_secure_sum_is_the_central_estimator_plus_the_planned_noise() {
    // Negligible noise: the fixed-denominator mean of the clipped updates, to the rounding.
    let central = r#"pipeline=[{ use = "dp_fixed_clip", clip = 0.5, noise_multiplier = 1e-9 }]"#;
    let (want, _) = one_round(&[central, "secure_aggregation.dp=\"none\""]);
    let tiny = ["secure_aggregation.dp_clip=0.5", "secure_aggregation.dp_noise_multiplier=1e-9"];
    let (got, e) = one_round(&tiny);
    let d = e.global.len();
    let gamma = 100.0 * (d as f64).sqrt() / 0.5;
    let expected = 0.4 * 50.0;
    // HybridAlpha carries the same integers: the same model, bit for bit.
    let (ha, _) = one_round(&[tiny[0], tiny[1], "secure_aggregation.use=\"hybridalpha\""]);
    assert_eq!(ha, got);
    let k = e.records[0].get("secagg_summed").unwrap();
    for (g, w) in got.iter().zip(&want) {
        // Each client's stochastic rounding moves its coordinate by < 1 / gamma.
        assert!((g - w).abs() <= k / (gamma * expected) + 1e-6, "{g} vs {w}");
    }
    // The planned noise: survivors k of min_survivors m leave std sqrt(k / m) z Delta_2 on the sum.
    let (noisy, e) = one_round(&["secure_aggregation.dp_clip=0.5", "secure_aggregation.dp_noise_multiplier=1.0"]);
    let (l2, l1) = fedkit_privacy::skellam::sensitivity(0.5, gamma, d);
    let m = fedkit_privacy::secagg::threshold(0.3, 20) as f64;
    let k = e.records[0].get("secagg_summed").unwrap();
    let planned = (k / m).sqrt() * l2 / (gamma * expected);
    let var = noisy.iter().zip(&got).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / d as f64;
    assert!((var.sqrt() / planned - 1.0).abs() < 0.1, "std {} vs planned {planned}", var.sqrt());
    // The logged epsilon is the Skellam accountant's.
    let mu = l2 * l2 / 2.0;
    let eps = fedkit_privacy::skellam::epsilon(0.4, mu, l2, l1, 1, 50f64.powf(-1.1)).unwrap().0;
    assert_eq!(e.records[0].get("epsilon"), Some(eps));
    let server = fedkit_privacy::skellam::epsilon(1.0, mu, l2, l1, 1, 50f64.powf(-1.1)).unwrap().0;
    assert_eq!(e.records[0].get("epsilon_server"), Some(server));
    assert!(server > eps);
}

#[test]
fn skellam_refuses_fixed_cohorts_and_too_few_survivors() {
    let err = |sets: &[&str]| match cfg(sets).and_then(Engine::new) {
        Ok(mut e) => e.run_round().err().map(|e| e.to_string()).unwrap_or_else(|| format!("{sets:?} was accepted")),
        Err(e) => e.to_string(),
    };
    let e = err(&["secure_aggregation.use=\"secagg\"", "secure_aggregation.dp=\"skellam\""]);
    assert!(e.contains("secure_aggregation.dp") && e.contains("poisson"), "{e}");
    // Without a protocol, or beside a DP stage, distributed DP is refused.
    let e = err(&["sampling.scheme=\"poisson\"", "sampling.rate=0.4", "secure_aggregation.dp=\"skellam\""]);
    assert!(e.contains("secure_aggregation.dp") && e.contains("secure_aggregation.use"), "{e}");
    let mut both = SKELLAM.to_vec();
    both.push(r#"pipeline=[{ use = "dp_fixed_clip" }]"#);
    assert!(err(&both).contains("keep one"));
    let mut sets = SKELLAM.to_vec();
    sets.push("secure_aggregation.dp_min_survivors=40");
    let e = err(&sets);
    assert!(e.contains("dp_min_survivors") && e.contains("falls below"), "{e}");
    // Dropouts below the planned survivors fail the round.
    sets.pop();
    sets.extend(["rounds=1", "secure_aggregation.dp_min_survivors=9", "secure_aggregation.dropout=0.6"]);
    // The floor is enforced inside the protocol: the clients refuse to unmask, the authority
    // to issue a key.
    let e = err(&sets);
    assert!(e.contains("refuses to unmask"), "{e}");
    sets.push("secure_aggregation.use=\"hybridalpha\"");
    let e = err(&sets);
    assert!(e.contains("authority requires") && e.contains("without a result"), "{e}");
    sets.truncate(SKELLAM.len());
    sets.pop();
    sets.push("secure_aggregation.dp_scale=1e9");
    assert!(err(&sets).contains("dp_scale"));
}
