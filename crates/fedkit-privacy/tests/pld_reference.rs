//! The PLD accountant against Google's dp-accounting 0.6.0 (`PLDAccountant`, its defaults):
//! epsilon within 1e-4 relative on every case of tests/data/pld_reference.json, which
//! `scripts/dp_reference.sh` generated (q from 0.001 to 1, sigma 0.5 to 10, 1 to 10,000 steps,
//! delta 1e-3 to 1e-7).

use fedkit_privacy::pld;

#[test]
fn pld_epsilons_agree_with_dp_accounting() {
    let text = include_str!("data/pld_reference.json");
    let v: serde_json::Value = serde_json::from_str(text).expect("the reference JSON");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 200, "{} cases", cases.len());
    let mut worst = (0.0f64, String::new());
    for c in cases {
        let f = |k: &str| c[k].as_f64().unwrap();
        let (q, sigma, steps, delta) = (f("q"), f("sigma"), c["steps"].as_u64().unwrap(), f("delta"));
        let got = pld::epsilon(q, sigma, steps, delta).unwrap();
        let case = format!("q {q} sigma {sigma} steps {steps} delta {delta}");
        match c["epsilon"].as_f64() {
            None => assert!(got.is_infinite(), "{case}: {got}, dp-accounting inf"),
            Some(want) => {
                let err = if want == 0.0 { got.abs() } else { (got / want - 1.0).abs() };
                if err > worst.0 {
                    worst = (err, format!("{case}: {got} vs {want}"));
                }
            }
        }
    }
    assert!(worst.0 < 1e-4, "worst: {} ({})", worst.0, worst.1);
    eprintln!("worst relative difference {:.2e} at {}", worst.0, worst.1);
}

/// PLD is tighter than RDP on the same mechanism (the reason to have it).
#[test]
fn pld_is_tighter_than_rdp() {
    use fedkit_privacy::{Mechanism, Orders, Sampling, Series};
    for (q, sigma, steps) in [(0.01, 1.0, 1000u64), (0.1, 2.0, 100), (0.004, 1.1, 10_000)] {
        let m = Mechanism { q, sigma, steps, sampling: Sampling::Poisson };
        let rdp = fedkit_privacy::epsilon(&m, 1e-5, &Orders::dp_accounting(), Series::Magnitudes).unwrap().0;
        let pld = pld::epsilon(q, sigma, steps, 1e-5).unwrap();
        assert!(pld < rdp, "q {q} sigma {sigma} T {steps}: PLD {pld} vs RDP {rdp}");
    }
}
