use fedkit_core::wire::{self, Block};
use fedkit_core::{Extra, Extras, RngStream, Stage};

use super::qsgd::quantize;
use super::*;
use crate::attacks::testing::cx;
use crate::defenses::testing::update;

fn values(b: &Block) -> Vec<f32> {
    let mut v = Vec::new();
    b.decode_into(&mut v);
    v
}

#[test]
fn topk_keeps_exactly_the_k_largest_and_error_feedback_keeps_the_rest() {
    let s = topk::TopK { fraction: 0.4, error_feedback: true };
    let mut mem = Extras::default();
    let e = Extras::default();
    let mut u = update(1, &[0.1, -5.0, 2.0, 0.0, 3.0], 1.0);
    s.on_update(&cx(1, 1, &e), &mut u, &mut mem).unwrap();
    assert_eq!(u.delta.as_slice(), &[0.0, -5.0, 0.0, 0.0, 3.0]);
    let Some(Extra::Vector(r)) = mem.0.get("topk_residual").cloned() else { panic!("no residual") };
    assert_eq!(r, vec![0.1, 0.0, 2.0, 0.0, 0.0]);
    // Next round: residual plus the new update is what gets compressed; sent + residual' =
    // update + residual.
    let x = [1.0f32, 1.0, 1.0, 1.0, 1.0];
    let mut u = update(1, &x, 1.0);
    s.on_update(&cx(2, 1, &e), &mut u, &mut mem).unwrap();
    let Some(Extra::Vector(r2)) = mem.0.get("topk_residual") else { panic!("no residual") };
    for j in 0..5 {
        assert_eq!(u.delta.as_slice()[j] + r2[j], x[j] + r[j]);
    }
    assert_eq!(u.delta.as_slice(), &[1.0f32 + 0.1, 0.0, 3.0, 0.0, 0.0]);
}

#[test]
fn the_wire_extra_decodes_to_the_update() {
    let e = Extras::default();
    let mut mem = Extras::default();
    let mut u = update(2, &[0.5, -0.25, 4.0, 1e-3], 1.0);
    u.extras.0.insert("c".into(), Extra::Vector(vec![9.0]));
    qsgd::Qsgd { levels: 4, bucket: 0 }.on_update(&cx(1, 2, &e), &mut u, &mut mem).unwrap();
    let Some(Extra::Bytes(b)) = u.extras.0.get(wire::EXTRA_KEY) else { panic!("no wire bytes") };
    let m = wire::decode(b, Some((wire::layout_id(u.delta.layout()), 4))).unwrap();
    let (v, extras) = m.values();
    assert_eq!(v, u.delta.as_slice());
    assert_eq!(extras.0.get("c"), Some(&Extra::Vector(vec![9.0])));
    // A second compressor on the same update is refused.
    assert!(topk::TopK::default().on_update(&cx(1, 2, &e), &mut u, &mut mem).is_err());
}

#[test]
fn qsgd_is_unbiased_within_its_variance_bound() {
    let mut rng = RngStream::new(3);
    let x: Vec<f32> = (0..64).map(|_| rng.normal() as f32).collect();
    let norm2: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
    let s = 2;
    let draws = 20_000;
    let mut mean = vec![0.0f64; x.len()];
    let mut err2 = 0.0;
    for _ in 0..draws {
        let q = values(&quantize(&x, s, &mut rng));
        for (m, v) in mean.iter_mut().zip(&q) {
            *m += *v as f64 / draws as f64;
        }
        err2 += q.iter().zip(&x).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / draws as f64;
    }
    let d = x.len() as f64;
    let bound = (d / (s * s) as f64).min(d.sqrt() / s as f64) * norm2;
    assert!(err2 <= bound, "variance {err2} above the bound {bound}");
    for (m, v) in mean.iter().zip(&x) {
        // 20,000 draws: the mean's std is at most sqrt(bound / draws) per coordinate.
        assert!((m - *v as f64).abs() < 5.0 * (bound / draws as f64).sqrt(), "{m} vs {v}");
    }
}

#[test]
fn randk_is_unbiased_and_sends_k_values() {
    let x: Vec<f32> = (0..20).map(|i| i as f32 - 7.5).collect();
    let s = randk::RandK { fraction: 0.25, error_feedback: false };
    let e = Extras::default();
    let rounds = 20_000;
    let mut mean = vec![0.0f64; 20];
    for r in 0..rounds {
        let mut u = update(0, &x, 1.0);
        s.on_update(&cx(r, 0, &e), &mut u, &mut Extras::default()).unwrap();
        assert_eq!(u.delta.as_slice().iter().filter(|v| **v != 0.0).count(), 5);
        mean.iter_mut().zip(u.delta.as_slice()).for_each(|(m, v)| *m += *v as f64 / rounds as f64);
    }
    for (m, v) in mean.iter().zip(&x) {
        assert!((m - *v as f64).abs() < 0.35, "{m} vs {v}");
    }
}

#[test]
fn signs_and_casts() {
    let b = signsgd::sign_block(&[1.0, -3.0, 0.5, -0.5]);
    assert_eq!(values(&b), vec![1.25, -1.25, 1.25, -1.25]);
    let x = [1.0f32, -2.5, 0.1, 1e-8, 65504.0];
    let f = values(&cast::half_block(&x, wire::Half::F16).unwrap());
    assert_eq!((f[0], f[1], f[4]), (1.0, -2.5, 65504.0), "representable values are exact");
    assert!((f[2] - 0.1).abs() <= 0.1 * 2f32.powi(-11));
    assert!(cast::half_block(&[7e4], wire::Half::F16).is_err(), "f16 overflow is refused");
    let g = values(&cast::half_block(&[7e4, 0.1], wire::Half::Bf16).unwrap());
    assert!((g[0] - 7e4).abs() <= 7e4 * 2f32.powi(-8) && (g[1] - 0.1).abs() <= 0.1 * 2f32.powi(-8));
}

#[test]
fn dadaquant_client_levels_keep_the_variance_with_fewer_levels() {
    use super::dadaquant::client_levels;
    assert_eq!(client_levels(&[0.25; 4], 8), vec![8; 4], "equal weights: the static level");
    let n = [10.0, 40.0, 150.0, 800.0];
    let total: f64 = n.iter().sum();
    let w: Vec<f64> = n.iter().map(|x| x / total).collect();
    let q = 16;
    let levels = client_levels(&w, q);
    // Heavier clients get more levels.
    assert!(levels.windows(2).all(|p| p[0] <= p[1]), "{levels:?}");
    // The expected variance sum_i w_i^2 / q_i^2 stays near the static level's (rounding aside),
    // with fewer levels in all.
    let var = |qs: &[u32]| w.iter().zip(qs).map(|(wi, &qi)| wi * wi / (qi as f64 * qi as f64)).sum::<f64>();
    let stat = var(&[q; 4]);
    assert!((var(&levels) / stat - 1.0).abs() < 0.1, "{} vs {stat}", var(&levels));
    assert!(levels.iter().sum::<u32>() < 4 * q);
}

#[test]
fn dadaquant_doubles_its_level_when_the_loss_plateaus() {
    use fedkit_core::{CohortSampling, RoundCtx, RunInfo};
    let mut s = super::dadaquant::DAdaQuant::default();
    // psi = 0: G~ is the raw loss, so a flat loss is a plateau (with smoothing, a flat loss
    // keeps the average falling towards it, and only the noise of real losses shows plateaus).
    (s.q_min, s.q_max, s.phi, s.psi, s.client_adaptive) = (1, 4, 2, 0.0, false);
    let info = RunInfo {
        population: 4,
        sampling: CohortSampling::FixedSize { per_round: 2 },
        rounds: 20,
        algorithm: "fedavg".into(),
        aggregator: "mean".into(),
        local_step: "plain".into(),
    };
    s.prepare(&info).unwrap();
    let mut qs = Vec::new();
    for round in 1..=12u32 {
        let base = crate::defenses::testing::ctx_with(round, &[]);
        let r = RoundCtx { cohort: &[0, 1], ..base };
        s.on_round_start(&r, &[10, 30]).unwrap();
        let mut a = fedkit_core::Aggregate {
            delta: update(0, &[0.0], 1.0).delta,
            weight: 1.0,
            extras: Extras::default(),
            accepted: vec![0, 1],
            metrics: Default::default(),
            weighting: fedkit_core::Weighting::Uniform,
        };
        // The loss falls for 4 rounds, then stays flat.
        let loss = if round <= 4 { 2.0 - 0.3 * round as f64 } else { 0.8 };
        let mut us: Vec<_> = (0..2)
            .map(|c| {
                let mut u = update(c, &[0.0], 10.0);
                u.metrics.insert("loss".into(), loss);
                u
            })
            .collect();
        s.on_cohort(&r, &mut us).unwrap();
        s.on_aggregate(&r, &mut a).unwrap();
        qs.push(a.metrics["dadaquant_q"] as u32);
    }
    assert_eq!(qs[0], 1, "{qs:?}");
    assert!(qs.windows(2).all(|p| p[1] == p[0] || p[1] == 2 * p[0]), "only doublings: {qs:?}");
    assert_eq!(*qs.last().unwrap(), 4, "capped at q_max: {qs:?}");
    // Each level holds at least phi = 2 rounds.
    let first_two = qs.iter().position(|&q| q == 2).unwrap();
    let first_four = qs.iter().position(|&q| q == 4).unwrap();
    assert!(first_four - first_two >= 2, "{qs:?}");
    // While the loss still fell (rounds 1-4, smoothed), the level did not move early.
    assert!(qs[..3].iter().all(|&q| q == 1), "{qs:?}");
}
