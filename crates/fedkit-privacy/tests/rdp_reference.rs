//! fedkit-privacy against Google's dp-accounting 0.6.0 (`tests/data/rdp_reference.json`, made by
//! `scripts/dp_reference.sh`) and against the published values of TF-Privacy and Opacus.

use fedkit_privacy::rdp::rdp_step;
use fedkit_privacy::{Mechanism, Orders, Sampling, Series, epsilon};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("data/rdp_reference.json")).expect("reference JSON")
}

/// 80-digit values for the ill-conditioned cases: (sampling, q, sigma, order) -> RDP.
fn truth() -> Vec<(String, f64, f64, f64, f64)> {
    let v: Value = serde_json::from_str(include_str!("data/rdp_truth.json")).expect("truth JSON");
    v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let f = |k: &str| t[k].as_f64().unwrap();
            (t["sampling"].as_str().unwrap().to_string(), f("q"), f("sigma"), f("order"), f("rdp"))
        })
        .collect()
}

/// The high-precision RDP of this case, if there is one.
fn true_rdp(sampling: &str, q: f64, sigma: f64, order: f64) -> Option<f64> {
    truth().into_iter().find(|t| t.0 == sampling && t.1 == q && t.2 == sigma && t.3 == order).map(|t| t.4)
}

/// A JSON number, null meaning infinity (an order dp-accounting excludes).
fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::INFINITY)
}

fn close(got: f64, want: f64, tol: f64) -> bool {
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= tol * want.abs().max(1e-300)
}

fn sampling(v: &Value) -> Sampling {
    match v.as_str() {
        Some("poisson") => Sampling::Poisson,
        _ => Sampling::WithoutReplacement,
    }
}

#[test]
fn rdp_at_every_default_order_matches_dp_accounting() {
    let r = reference();
    let orders = Orders(r["orders"].as_array().unwrap().iter().map(num).collect());
    assert_eq!(orders, Orders::dp_accounting());
    let (mut worst, mut checked, mut beyond) = (0.0f64, 0, 0);
    for c in r["cases"].as_array().unwrap() {
        let (q, sigma) = (c["q"].as_f64().unwrap(), c["sigma"].as_f64().unwrap());
        let got = rdp_step(q, sigma, sampling(&c["sampling"]), &orders, Series::Magnitudes).unwrap();
        let name = c["sampling"].as_str().unwrap();
        for ((g, w), a) in got.iter().zip(c["rdp"].as_array().unwrap()).zip(&orders.0) {
            let w = num(w);
            if !close(*g, w, 1e-9) {
                // Where the two differ by more, dp-accounting's float error is the larger: the
                // 80-digit value must be there, and ours within 1e-10 of it.
                let t = true_rdp(name, q, sigma, *a);
                let t =
                    t.unwrap_or_else(|| panic!("{name} q {q} sigma {sigma} order {a}: {g} vs {w}, no 80-digit value"));
                let at = format!("{name} q {q} sigma {sigma} order {a}: {g}, true {t}, dp-accounting {w}");
                if name == "poisson" {
                    assert!(close(*g, t, 1e-10), "{at}");
                    assert!((w - t).abs() > (g - t).abs(), "{at}: dp-accounting is the closer");
                } else {
                    // Both float bounds are off here (the test below): ours must stay above.
                    assert!(*g > t, "{at}");
                }
                beyond += 1;
            }
            if w.is_finite() && w > 0.0 && close(*g, w, 1e-9) {
                worst = worst.max((g - w).abs() / w);
                checked += 1;
            }
        }
    }
    // Only Poisson at q = 1e-4, sigma = 10 (RDP near 1e-9: the 80-digit values show ours within
    // 2e-11, dp-accounting off by up to 2e-9), and without replacement at q = 0.1, sigma = 10,
    // orders 128 and 256.
    assert!(beyond <= 20, "{beyond} values beyond 1e-9");
    assert!(checked > 10_000, "{checked}");
    eprintln!("worst relative RDP difference over the {checked} values within 1e-9: {worst:e}; {beyond} beyond");
}

#[test]
fn epsilon_and_its_order_match_dp_accounting() {
    let r = reference();
    let orders = Orders::dp_accounting();
    let mut checked = 0;
    for c in r["cases"].as_array().unwrap() {
        let (q, sigma) = (c["q"].as_f64().unwrap(), c["sigma"].as_f64().unwrap());
        for e in c["epsilons"].as_array().unwrap() {
            let (steps, delta) = (e["steps"].as_u64().unwrap(), e["delta"].as_f64().unwrap());
            let m = Mechanism { q, sigma, steps, sampling: sampling(&c["sampling"]) };
            let (eps, order) = epsilon(&m, delta, &orders, Series::Magnitudes).unwrap();
            let want = num(&e["epsilon"]);
            let at = format!("{} q {q} sigma {sigma} steps {steps} delta {delta}", c["sampling"]);
            assert!(!eps.is_nan(), "{at}");
            if !close(eps, want, 1e-9) {
                // dp-accounting's RDP at that order is off (see above): epsilon from the
                // 80-digit RDP must match ours.
                let t = true_rdp(c["sampling"].as_str().unwrap(), q, sigma, order).expect("an 80-digit value");
                let mut acc = fedkit_privacy::RdpAccountant::new(Orders(vec![order]), Series::Magnitudes);
                acc.rdp = vec![t * steps as f64];
                let (from_truth, _) = acc.epsilon(delta).unwrap();
                if c["sampling"] == "poisson" {
                    assert!(close(eps, from_truth, 1e-9), "{at}: {eps} vs {want}, from the true RDP {from_truth}");
                } else {
                    assert!(eps >= from_truth, "{at}: {eps} undercuts {from_truth}");
                }
            }
            if want > 0.0 && want.is_finite() {
                assert_eq!(order, e["order"].as_f64().unwrap(), "{at}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 6 * 7 * 4 * 3);
}

#[test]
fn the_published_values_of_tf_privacy_and_opacus() {
    // TF-Privacy compute_dp_sgd_privacy: n = 60000, batch 150, sigma 1.3, 15 epochs (6000 steps).
    let tf = Mechanism { q: 150.0 / 60000.0, sigma: 1.3, steps: 6000, sampling: Sampling::Poisson };
    let (eps, order) = epsilon(&tf, 1e-5, &Orders::tf_privacy(), Series::Signed).unwrap();
    assert!(close(eps, 0.7242234026109595, 1e-12), "{eps}");
    assert_eq!(order, 19.0);
    // Opacus: sigma 1.5, q 0.04, 2250 steps.
    let op = Mechanism { q: 0.04, sigma: 1.5, steps: 2250, sampling: Sampling::Poisson };
    let (eps, order) = epsilon(&op, 1e-5, &Orders::tf_privacy(), Series::Signed).unwrap();
    assert!(close(eps, 7.32911117143, 1e-11), "{eps}");
    assert_eq!(order, 3.9);
    // dp-accounting's own reading of the same two (its magnitude series): in the JSON.
    for p in reference()["published"].as_array().unwrap() {
        let m = Mechanism {
            q: p["q"].as_f64().unwrap(),
            sigma: p["sigma"].as_f64().unwrap(),
            steps: p["steps"].as_u64().unwrap(),
            sampling: Sampling::Poisson,
        };
        let (eps, order) =
            epsilon(&m, p["delta"].as_f64().unwrap(), &Orders::tf_privacy(), Series::Magnitudes).unwrap();
        assert!(close(eps, p["epsilon"].as_f64().unwrap(), 1e-9), "{}: {eps}", p["name"]);
        assert_eq!(order, p["order"].as_f64().unwrap());
    }
}

#[test]
fn edge_cases_give_a_number_never_nan_or_a_hang() {
    let o = Orders::dp_accounting();
    let eps = |q, sigma, steps, delta| {
        let m = Mechanism { q, sigma, steps, sampling: Sampling::Poisson };
        epsilon(&m, delta, &o, Series::Magnitudes).unwrap().0
    };
    // Full participation: the plain Gaussian, min over the grid of T a / (2 s^2) + conversion.
    assert!(eps(1.0, 1.0, 1, 1e-5).is_finite());
    // Tiny epsilon: enormous noise.
    let tiny = eps(0.01, 1e4, 1, 1e-5);
    assert!((0.0..1e-3).contains(&tiny), "{tiny}");
    // Huge epsilon: little noise, many steps.
    let huge = eps(0.1, 0.3, 1_000_000, 1e-5);
    assert!(huge.is_finite() && huge > 1e4, "{huge}");
    // A trillion steps and delta 1e-12.
    assert!(eps(1e-4, 2.0, 1_000_000_000_000, 1e-12).is_finite());
    for series in [Series::Magnitudes, Series::Signed] {
        let m = Mechanism { q: 0.5, sigma: 0.3, steps: 10, sampling: Sampling::Poisson };
        let (e, _) = epsilon(&m, 1e-5, &Orders(vec![1.0001, 1.01, 1.5]), series).unwrap();
        assert!(!e.is_nan(), "{series:?}");
    }
}

#[test]
fn without_replacement_is_exact_or_conservative_against_80_digits() {
    // The forward differences of Wang et al.'s bound cancel catastrophically at high orders with
    // large sigma (as in dp-accounting, which computes them the same way): there the float bound
    // must at least not undercut the exact one.
    let (mut exact, mut loose) = (0, 0);
    for (sampling, q, sigma, order, t) in truth() {
        if sampling != "without_replacement" {
            continue;
        }
        let g = rdp_step(q, sigma, Sampling::WithoutReplacement, &Orders(vec![order]), Series::Magnitudes).unwrap()[0];
        if close(g, t, 1e-9) {
            exact += 1;
        } else {
            assert!(g > t, "q {q} sigma {sigma} order {order}: {g} undercuts the exact {t}");
            loose += 1;
        }
    }
    assert_eq!((exact, loose), (43, 2), "exact everywhere but sigma 10, q 0.1 at orders 128 and 256");
}
