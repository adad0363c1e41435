//! The local step rules (`[local]`) on the registry's `logreg` model and the toy data: every rule
//! is documented with an example that builds; SAM's gradient is taken at the ascent point; WRM's
//! adversarial inputs raise the loss and shrink as gamma grows; FedNAR composes with FedProx; and
//! the Hessian's top eigenvalue matches logistic regression's closed-form Hessian.

use fedkit_core::registry::Kind;
use fedkit_core::{Batch, ClientData, Extras, LocalStep, LocalTrain, Params, RngStream, StepCtx};
use fedkit_methods::algorithms;
use fedkit_methods::local_steps::{fednar::FedNar, local_steps, sam::Sam, wrm::Wrm};
use fedkit_testkit::{CLASSES, FEATURES, SAMPLES, SEED, build, check_registry, client_ctx, logreg, toy_data};

fn whole_batch(data: &ClientData) -> Batch {
    let mut b = Batch::default();
    b.fill(data, &(0..data.len()).collect::<Vec<_>>(), &mut RngStream::new(0));
    b
}

fn ctx() -> StepCtx {
    StepCtx { round: 1, step: 0, lr: 0.1, weight_decay: 0.0 }
}

#[test]
fn every_local_step_is_documented() {
    check_registry(local_steps(), Kind::LocalStep);
}

// On logreg, SAM's gradient equals the model's gradient at w + rho g / ||g|| computed by hand,
// differs from the plain gradient, and the loss it reports is the plain loss at w.
#[test]
fn sam_on_logreg_takes_the_gradient_at_the_ascent_point() {
    let mut m = logreg();
    let w = m.init(&mut RngStream::new(SEED));
    let mut b = whole_batch(&toy_data());
    let rho = 0.5;
    let mut g0 = w.zeros_like();
    let l0 = m.loss_grad(&mut w.clone(), &b, &mut g0, &mut RngStream::new(0)).unwrap();
    let mut at = w.clone();
    at.axpy((rho / g0.l2()) as f32, &g0);
    let mut want = w.zeros_like();
    m.loss_grad(&mut at, &b, &mut want, &mut RngStream::new(0)).unwrap();
    let (mut p, mut got) = (w.clone(), w.zeros_like());
    let l = Sam { rho }.grad(&ctx(), m.as_mut(), &mut p, &mut b, &mut got, &mut RngStream::new(0)).unwrap();
    assert_eq!(l, l0);
    assert_eq!(p, w);
    fedkit_testkit::assert_close(got.as_slice(), want.as_slice(), 1e-5, "sam: gradient at w + e");
    assert!(got.sub(&g0).l2() > 0.01 * g0.l2(), "sam: the perturbation changed nothing");
}

// On logreg, WRM's adversarial batch has a higher loss than the clean one, and the perturbation
// ||z - x|| strictly shrinks as gamma grows (the penalty keeps it bounded).
#[test]
fn wrm_on_logreg_raises_the_loss_within_a_shrinking_ball() {
    let mut m = logreg();
    let mut w = m.init(&mut RngStream::new(SEED));
    w.scale(3.0); // sharper logits: a loss that the inputs can move
    let clean = whole_batch(&toy_data());
    let mut g = w.zeros_like();
    let clean_loss = m.loss_grad(&mut w.clone(), &clean, &mut g, &mut RngStream::new(0)).unwrap();
    let mut last = f64::INFINITY;
    for gamma in [0.5, 1.0, 2.0, 4.0, 8.0] {
        let wrm = Wrm { gamma, steps: 15, step_size: None }.validated().unwrap();
        let mut z = clean.clone();
        let loss = wrm.grad(&ctx(), m.as_mut(), &mut w.clone(), &mut z, &mut g, &mut RngStream::new(0)).unwrap();
        assert!(loss > clean_loss, "gamma {gamma}: adversarial loss {loss} <= clean {clean_loss}");
        let moved = z.x.iter().zip(&clean.x).map(|(a, b)| (a - b) as f64 * (a - b) as f64).sum::<f64>().sqrt();
        assert!(moved > 0.0 && moved < last, "gamma {gamma}: perturbation {moved}, previous {last}");
        last = moved;
    }
}

// FedNAR composes with FedProx (the proximal hook runs first): with a bound that never binds it
// is FedProx with the optimiser's weight decay, bit for bit; with a tight bound every local step
// is at most eta A rho^t long, so the update is at most (local steps) x eta A rho^t.
#[test]
fn fednar_composes_with_fedprox() {
    let table: toml::Table = "use = 'fedprox'\nmu = 0.5".parse().unwrap();
    let (fedprox, _) = build(algorithms(), Kind::Algorithm, &table);
    let data = toy_data();
    let mut m = logreg();
    let global = m.init(&mut RngStream::new(SEED));
    let extras = Extras::default();
    let train = LocalTrain { lr: 0.5, batch_size: 8, weight_decay: 0.1, epochs: 2, ..LocalTrain::default() };
    let mut update = |step: &dyn LocalStep| {
        let cx = fedkit_core::ClientCtx { step, ..client_ctx(3, 0, &global, &extras, &train) };
        let mut st = fedprox.new_client_state();
        fedprox.client_update(&cx, m.as_mut(), &data, st.as_mut()).unwrap()
    };
    let plain = update(&fedkit_core::PlainStep);
    let loose = update(&FedNar { max_norm: 1e9, decay: 1.0, ..FedNar::default() });
    assert_eq!(plain.delta, loose.delta);
    let tight = FedNar { max_norm: 0.05, decay: 0.9, ..FedNar::default() };
    let clipped = update(&tight);
    let steps = clipped.metrics["steps"];
    let bound = steps * tight.step_bound(3, train.lr as f32);
    assert!(clipped.delta.l2() <= bound * (1.0 + 1e-5), "update {} > {bound}", clipped.delta.l2());
    assert!(plain.delta.l2() > 2.0 * bound, "the bound should bind here");
}

/// The Hessian of logreg's mean cross-entropy at `p` on `b`, in f64: for weights (j, k) and
/// (j', k') (the bias is feature d), mean_i x_ij x_ij' (delta_kk' p_ik - p_ik p_ik').
fn logreg_hessian(p: &Params, b: &Batch) -> Vec<Vec<f64>> {
    let (d, c) = (FEATURES, CLASSES);
    let w = p.as_slice();
    let dim = (d + 1) * c;
    let mut h = vec![vec![0.0; dim]; dim];
    for (x, _) in b.x.chunks(d).zip(&b.y) {
        let xt: Vec<f64> = x.iter().map(|&v| v as f64).chain([1.0]).collect();
        let z: Vec<f64> = (0..c).map(|k| (0..=d).map(|j| xt[j] * w[j * c + k] as f64).sum()).collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let s: f64 = e.iter().sum();
        let pr: Vec<f64> = e.iter().map(|v| v / s).collect();
        for (j, k) in (0..=d).flat_map(|j| (0..c).map(move |k| (j, k))) {
            for (j2, k2) in (0..=d).flat_map(|j| (0..c).map(move |k| (j, k))) {
                let s = if k == k2 { pr[k] } else { 0.0 } - pr[k] * pr[k2];
                h[j * c + k][j2 * c + k2] += xt[j] * xt[j2] * s / b.len() as f64;
            }
        }
    }
    h
}

// On logreg, whose Hessian has a closed form, hessian_top_eigenvalue matches the top eigenvalue
// of that matrix (2000 exact f64 power iterations, checked converged) within 1%.
#[test]
fn hessian_top_eigenvalue_matches_logreg_closed_form() {
    let mut m = logreg();
    let mut w = m.init(&mut RngStream::new(SEED));
    w.scale(2.0);
    let data = toy_data();
    let h = logreg_hessian(&w, &whole_batch(&data));
    let times = |v: &[f64]| -> Vec<f64> { h.iter().map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum()).collect() };
    let mut v = vec![1.0; h.len()];
    let mut want = 0.0;
    for _ in 0..2000 {
        let hv = times(&v);
        let norm = hv.iter().map(|a| a * a).sum::<f64>().sqrt();
        want = hv.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>() / v.iter().map(|a| a * a).sum::<f64>();
        v = hv.iter().map(|a| a / norm).collect();
    }
    let residual = times(&v).iter().zip(&v).map(|(a, b)| (a - want * b).powi(2)).sum::<f64>().sqrt();
    assert!(residual < 1e-6 * want, "reference power iteration not converged ({residual})");
    let got = fedkit_core::hessian_top_eigenvalue(m.as_mut(), &w, &data, SAMPLES, 200, &mut RngStream::new(7)).unwrap();
    assert!((got - want).abs() <= 0.01 * want, "estimate {got}, closed form {want}");
}
