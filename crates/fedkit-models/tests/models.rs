//! Integration tests of the registered models: gradients, evaluation, learning, layouts,
//! initialisation and input errors.

use std::sync::Arc;

use fedkit_core::registry::{Kind, build_from_table};
use fedkit_core::{
    Batch, ClientData, Dataset, EvalStats, LocalTrain, Model, NoHook, ParamKind, Params, RngStream, evaluate_range,
    local_train,
};
use fedkit_models::models;

/// Build a registered model from its `[model]` table (as TOML text) for the given data.
fn build(table: &str, shape: &[usize], classes: usize) -> fedkit_core::Result<Box<dyn Model>> {
    let table: toml::Table = table.parse().expect("valid TOML");
    let (spec, resolved) = build_from_table(models(), Kind::Model, "model", &table, &[])?;
    assert_eq!(resolved.get("use"), table.get("use"));
    spec.instantiate(shape, classes)
}

/// The small models every behavioural test runs on: (name, table, sample shape, classes). `cnn`
/// and `lenet` are the native implementations (the default), `cnn-burn` and `lenet-burn` the burn
/// ones.
const SMALL: [(&str, &str, &[usize], usize); 6] = [
    ("logreg", "use = 'logreg'", &[7], 3),
    ("mlp", "use = 'mlp'\nhidden = [5]", &[1, 4, 4], 3),
    ("lenet", "use = 'lenet'", &[1, 16, 16], 3),
    ("lenet-burn", "use = 'lenet'\nbackend = 'burn'", &[1, 16, 16], 3),
    ("cnn", "use = 'cnn'\nchannels = [2, 3]\nhidden = 4", &[1, 8, 8], 3),
    ("cnn-burn", "use = 'cnn'\nchannels = [2, 3]\nhidden = 4\nbackend = 'burn'", &[1, 8, 8], 3),
];

fn random_batch(shape: &[usize], classes: usize, n: usize, rng: &mut RngStream) -> Batch {
    let d: usize = shape.iter().product();
    Batch {
        x: (0..n * d).map(|_| rng.uniform() as f32).collect(),
        y: (0..n).map(|_| rng.below(classes as u64) as u32).collect(),
        feature_shape: shape.to_vec(),
        classes,
        targets: Vec::new(),
    }
}

/// n samples whose features are a class-dependent random mean plus Gaussian noise (std 0.2).
fn separable(shape: &[usize], classes: usize, n: usize, rng: &mut RngStream) -> Arc<Dataset> {
    let d: usize = shape.iter().product();
    let means: Vec<f64> = (0..classes * d).map(|_| rng.uniform()).collect();
    let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    let x = y
        .iter()
        .flat_map(|&c| (0..d).map(|j| (means[c as usize * d + j] + 0.2 * rng.normal()) as f32).collect::<Vec<_>>());
    let data = Dataset {
        name: "toy".into(),
        x: x.collect(),
        y,
        feature_shape: shape.to_vec(),
        classes,
        users: None,
        targets: Vec::new(),
    };
    data.validate().unwrap();
    Arc::new(data)
}

/// Reference forward pass of a chain of dense layers (`[in, out]` weights, biases, ReLU between),
/// i.e. logreg and mlp, in f64.
fn dense_logits(p: &Params, x: &[f32]) -> Vec<f64> {
    let t: Vec<_> = p.tensors().collect();
    let mut h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for (k, layer) in t.chunks(2).enumerate() {
        let ((we, w), (_, b)) = (layer[0], layer[1]);
        let (i, o) = (we.shape[0], we.shape[1]);
        assert_eq!(h.len(), i);
        let mut z: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        for (a, ha) in h.iter().enumerate() {
            z.iter_mut().zip(&w[a * o..(a + 1) * o]).for_each(|(zj, &wj)| *zj += ha * wj as f64);
        }
        if k + 1 < t.len() / 2 {
            z.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        h = z;
    }
    h
}

/// Brute-force summed cross-entropy and top-1 correct count of a dense model.
fn dense_eval(p: &Params, b: &Batch) -> (f64, usize) {
    let d = b.x.len() / b.len();
    let (mut loss, mut correct) = (0.0, 0);
    for (i, &y) in b.y.iter().enumerate() {
        let z = dense_logits(p, &b.x[i * d..(i + 1) * d]);
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        loss += max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln() - z[y as usize];
        correct += (z.iter().position(|&v| v == max) == Some(y as usize)) as usize;
    }
    (loss, correct)
}

fn close(a: f64, b: f64, rtol: f64, atol: f64) -> bool {
    (a - b).abs() <= atol + rtol * a.abs().max(b.abs())
}

// loss_grad's gradient matches central finite differences of the loss, per coordinate and in
// aggregate, on 8 coordinates of every layout entry (half among its larger gradients). ReLU and
// max-pool make the loss piecewise smooth and it is only f32, so a coordinate counts where
// differences at steps 1e-2 and 3e-3 (or 3e-3 and 1e-3) agree: no kink in the stencil, or on one
// side only (then the other side's one-sided difference is used). loss_grad's mean loss and
// eval_batch's summed loss / n agree at every point evaluated.
#[test]
fn gradients_match_finite_differences() {
    for (name, table, shape, classes) in SMALL {
        let mut m = build(table, shape, classes).unwrap();
        let mut rng = RngStream::new(11);
        let p = m.init(&mut rng);
        let mut batch = random_batch(shape, classes, 2, &mut rng);
        batch.x.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0); // zero-mean inputs: fewer dead ReLUs
        check_gradients(name, &mut m, &p, &batch, true, &[], &mut rng);
    }
}

// The same check for networks with batch norm (mlp and cnn, norm = "batch"), over the trained
// entries (scales and shifts included; running statistics get no gradient). In training mode the
// loss depends on the whole batch (its statistics), so the finite differences are of the batch
// loss, and eval_batch (running statistics) is not expected to agree with it. The biases of the
// layers that feed a batch norm cancel in its mean: their gradient and differences are ~0.
#[test]
fn gradients_match_finite_differences_with_batch_norm() {
    let cases: [(&str, &str, &[usize], &[&str]); 2] = [
        ("mlp+bn", "use = 'mlp'\nhidden = [5, 4]\nnorm = 'batch'", &[1, 4, 4], &["fc1.bias", "fc2.bias"]),
        (
            "cnn+bn",
            "use = 'cnn'\nchannels = [2, 3]\nhidden = 4\nnorm = 'batch'",
            &[1, 8, 8],
            &["conv1.bias", "conv2.bias"],
        ),
    ];
    for (name, table, shape, cancelled) in cases {
        let mut m = build(table, shape, 3).unwrap();
        let mut rng = RngStream::new(12);
        let p = m.init(&mut rng);
        let mut batch = random_batch(shape, 3, 6, &mut rng);
        batch.x.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0);
        check_gradients(name, &mut m, &p, &batch, false, cancelled, &mut rng);
    }
}

/// The derivative of `loss` (a function of one coordinate whose current value is `x`, loss `l0`
/// there, f32 resolution `ulps`) by finite differences at steps 1e-2, 3e-3 and 1e-3, with its noise
/// level; `None` at a kink. ReLU and max-pool make losses piecewise smooth and they are only f32, so
/// a difference counts where the stencils at two successive steps agree (within 2% of `scale` plus
/// twice the noise): the central difference where there is no kink, the one-sided difference of the
/// smooth side where there is a kink on one side only.
fn smooth_difference(x: f32, l0: f64, ulps: f64, scale: f64, loss: &mut dyn FnMut(f32) -> f64) -> Option<(f64, f64)> {
    // (up, down, central, noise) differences at each step
    let d: Vec<(f64, f64, f64, f64)> = [1e-2f32, 3e-3, 1e-3]
        .into_iter()
        .map(|eps| {
            let (hi, lo) = (x + eps, x - eps);
            let h = ((hi - x) as f64, (x - lo) as f64);
            let (l_hi, l_lo) = (loss(hi), loss(lo));
            ((l_hi - l0) / h.0, (l0 - l_lo) / h.1, (l_hi - l_lo) / (h.0 + h.1), ulps / eps as f64)
        })
        .collect();
    let agree = |a: f64, b: f64, noise: f64| (a - b).abs() <= 0.02 * scale + 2.0 * noise;
    (0..2).find_map(|k| {
        let ((u, dn, c, noise), next) = (d[k], d[k + 1]);
        let (up, down) = (agree(u, next.0, next.3), agree(dn, next.1, next.3));
        if up && down && agree(c, next.2, next.3) && agree(u, dn, noise) {
            Some((c, noise))
        } else if up != down {
            Some((if up { u } else { dn }, 2.0 * noise))
        } else {
            None
        }
    })
}

/// Compare loss_grad's gradient at `p` with finite differences of the loss on `batch` (see
/// `gradients_match_finite_differences`); buffers must get an exactly zero gradient.
/// `eval_agrees`: eval_batch's summed loss / n equals loss_grad's mean loss at every point.
/// `cancelled`: entries the loss does not depend on (biases before a batch norm).
fn check_gradients(
    name: &str,
    m: &mut Box<dyn Model>,
    p: &Params,
    batch: &Batch,
    eval_agrees: bool,
    cancelled: &[&str],
    rng: &mut RngStream,
) {
    let n = batch.len() as f64;
    let mut g = p.zeros_like();
    m.loss_grad(&mut p.clone(), batch, &mut g, &mut RngStream::new(0)).unwrap();
    let mut scratch = p.zeros_like();
    let mut loss_at = |m: &mut Box<dyn Model>, q: &Params| {
        let l = m.loss_grad(&mut q.clone(), batch, &mut scratch, &mut RngStream::new(0)).unwrap() as f64;
        if eval_agrees {
            let (sum, _) = m.eval_batch(q, batch).unwrap();
            assert!(close(l, sum / n, 1e-5, 1e-6), "{name}: loss_grad {l} vs eval_batch {sum}/{n}");
        }
        l
    };
    let l0 = loss_at(m, p);
    let ulps = 2.0 * l0 * f32::EPSILON as f64; // resolution of the f32 loss
    let (mut diff2, mut fd2, mut checked, mut tried) = (0.0, 0.0, 0, 0);
    for e in p.layout().entries() {
        let ge = &g.as_slice()[e.range()];
        if e.kind == ParamKind::Buffer {
            assert!(ge.iter().all(|&v| v == 0.0), "{name} {}: a buffer got a gradient", e.name);
            continue;
        }
        if cancelled.contains(&e.name.as_str()) {
            let gmax = ge.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!(gmax < 1e-5, "{name} {}: gradient {gmax} of an entry the loss does not depend on", e.name);
            let mut hi = p.clone();
            hi.as_mut_slice()[e.range()].iter_mut().for_each(|v| *v += 0.1);
            let shift = loss_at(m, &hi) - l0;
            assert!(shift.abs() < 1e-5, "{name} {}: shifting it by 0.1 changes the loss by {shift}", e.name);
            continue;
        }
        let gmax = ge.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
        assert!(gmax > 1e-4, "{name} {}: no gradient (max {gmax})", e.name);
        let large: Vec<usize> = (0..e.len()).filter(|&k| ge[k].abs() as f64 >= 0.3 * gmax).collect();
        let (want, mut done, mut fd_max) = (8.min(e.len()), 0, 0f64);
        while done < want && tried < 1000 {
            tried += 1;
            let pick = match tried % 2 {
                0 => rng.below(e.len() as u64) as usize,
                _ => large[rng.below(large.len() as u64) as usize],
            };
            let (i, gi) = (e.offset + pick, ge[pick] as f64);
            let mut q = p.clone();
            let mut loss_with = |v: f32| {
                q.as_mut_slice()[i] = v;
                loss_at(m, &q)
            };
            let Some((fd, noise)) = smooth_difference(p.as_slice()[i], l0, ulps, gmax, &mut loss_with) else {
                continue;
            };
            assert!(
                close(gi, fd, 0.25, 0.05 * gmax + noise),
                "{name} {}[{pick}]: grad {gi}, finite difference {fd}",
                e.name
            );
            (diff2, fd2, done, fd_max) = (diff2 + (gi - fd).powi(2), fd2 + fd * fd, done + 1, fd_max.max(fd.abs()));
        }
        assert_eq!(done, want, "{name} {}: too many coordinates at kinks", e.name);
        assert!(fd_max >= 0.2 * gmax, "{name} {}: largest gradients not checked", e.name);
        checked += done;
    }
    assert!(tried <= 2 * checked, "{name}: {tried} tries for {checked} smooth coordinates");
    assert!(diff2.sqrt() < 0.03 * fd2.sqrt(), "{name}: relative gradient error {}", (diff2 / fd2).sqrt());
}

// eval_batch returns the summed loss (= n x loss_grad's mean loss) and a correct count in 0..=n;
// for the dense models both equal a brute-force f64 forward pass with argmax over the logits.
#[test]
fn eval_batch_is_consistent() {
    for (name, table, shape, classes) in SMALL {
        let mut m = build(table, shape, classes).unwrap();
        let mut rng = RngStream::new(5);
        let mut p = m.init(&mut rng);
        let batch = random_batch(shape, classes, 40, &mut rng);
        let mut g = p.zeros_like();
        let mean = m.loss_grad(&mut p, &batch, &mut g, &mut RngStream::new(0)).unwrap() as f64;
        let (sum, correct) = m.eval_batch(&p, &batch).unwrap();
        assert!(close(sum / 40.0, mean, 1e-5, 1e-6), "{name}: {sum}/40 vs {mean}");
        assert!(correct <= 40);
        if matches!(name, "logreg" | "mlp") {
            // scale the params up so that logits are spread and predictions vary
            p.scale(5.0);
            let (sum, correct) = m.eval_batch(&p, &batch).unwrap();
            let (ref_sum, ref_correct) = dense_eval(&p, &batch);
            assert!(close(sum, ref_sum, 1e-4, 1e-4), "{name}: loss {sum} vs reference {ref_sum}");
            assert_eq!(correct, ref_correct, "{name}: correct count");
            assert!(ref_correct > 0 && ref_correct < 40, "{name}: degenerate batch ({ref_correct}/40)");
        }
    }
}

// The native logreg and the burn `mlp` without hidden layers are the same function: identical
// loss and gradient, also for logit gaps of hundreds (log-sum-exp stability).
#[test]
fn logreg_matches_linear_mlp_and_is_stable() {
    let mut lr = build("use = 'logreg'", &[7], 3).unwrap();
    let mut lin = build("use = 'mlp'\nhidden = []", &[7], 3).unwrap();
    assert_eq!(lr.layout().entries().iter().map(|e| &e.shape).collect::<Vec<_>>(), [&vec![7, 3], &vec![3]]);
    let mut rng = RngStream::new(3);
    let batch = random_batch(&[7], 3, 9, &mut rng);
    for scale in [1.0, 300.0] {
        let mut p = lr.init(&mut RngStream::new(4));
        p.scale(scale);
        let (mut g1, mut g2) = (p.zeros_like(), p.zeros_like());
        let l1 = lr.loss_grad(&mut p.clone(), &batch, &mut g1, &mut RngStream::new(0)).unwrap();
        let l2 = lin.loss_grad(&mut p.clone(), &batch, &mut g2, &mut RngStream::new(0)).unwrap();
        assert!(l1.is_finite() && close(l1 as f64, l2 as f64, 1e-5, 1e-5), "scale {scale}: {l1} vs {l2}");
        assert!(g1.sub(&g2).l2() <= 1e-5 * (1.0 + g2.l2()), "scale {scale}: gradients differ");
        let (s1, c1) = lr.eval_batch(&p, &batch).unwrap();
        let (s2, c2) = lin.eval_batch(&p, &batch).unwrap();
        assert!(s1.is_finite() && close(s1, s2, 1e-5, 1e-5) && c1 == c2, "scale {scale}: eval {s1} vs {s2}");
    }
}

/// The native and the burn implementation of the model of `table` (which leaves `backend` at its
/// default, native) are the same network: identical layouts and initialisation, and on the same
/// parameters and a random batch the same mean loss (1e-5 relative), every gradient entry within
/// 1e-4 relative (summation order differs), the same input gradient, and the same evaluation
/// (summed loss, correct count), also with parameters scaled up so that the predictions vary.
fn assert_native_matches_burn(table: &str, shape: &[usize], classes: usize) {
    let mut native = build(table, shape, classes).unwrap();
    let mut burn = build(&format!("{table}\nbackend = 'burn'"), shape, classes).unwrap();
    assert_eq!(native.layout(), burn.layout());
    let mut rng = RngStream::new(41);
    let p0 = native.init(&mut RngStream::new(40));
    assert_eq!(p0, burn.init(&mut RngStream::new(40)));
    let mut batch = random_batch(shape, classes, 6, &mut rng);
    batch.x.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0);
    for scale in [1.0, 4.0] {
        let mut p = p0.clone();
        p.scale(scale);
        let (mut g1, mut g2) = (p.zeros_like(), p.zeros_like());
        let l1 = native.loss_grad(&mut p.clone(), &batch, &mut g1, &mut RngStream::new(0)).unwrap() as f64;
        let l2 = burn.loss_grad(&mut p.clone(), &batch, &mut g2, &mut RngStream::new(0)).unwrap() as f64;
        assert!(close(l1, l2, 1e-5, 0.0), "{table}, scale {scale}: loss {l1} vs {l2}");
        for e in p.layout().entries() {
            let (a, b) = (&g1.as_slice()[e.range()], &g2.as_slice()[e.range()]);
            let gmax = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
            assert!(gmax > 1e-4, "{table}, scale {scale} {}: no gradient", e.name);
            for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
                let ok = close(x as f64, y as f64, 1e-4, 1e-6 * gmax);
                assert!(ok, "{table}, scale {scale} {}[{k}]: native {x} vs burn {y}", e.name);
            }
        }
        let (mut gx1, mut gx2) = (Vec::new(), Vec::new());
        let li1 = native.input_grad(&p, &batch, &mut gx1).unwrap() as f64;
        let li2 = burn.input_grad(&p, &batch, &mut gx2).unwrap() as f64;
        assert!(close(li1, li2, 1e-5, 0.0), "{table}, scale {scale}: input_grad loss {li1} vs {li2}");
        assert_eq!(gx1.len(), gx2.len());
        let gmax = gx2.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        for (k, (&x, &y)) in gx1.iter().zip(&gx2).enumerate() {
            let ok = close(x as f64, y as f64, 1e-4, 1e-6 * gmax);
            assert!(ok, "{table}, scale {scale} x[{k}]: native {x} vs burn {y}");
        }
        let big = random_batch(shape, classes, 40, &mut rng);
        let (s1, c1) = native.eval_batch(&p, &big).unwrap();
        let (s2, c2) = burn.eval_batch(&p, &big).unwrap();
        assert!(close(s1, s2, 1e-5, 0.0) && c1 == c2, "{table}, scale {scale}: eval ({s1}, {c1}) vs ({s2}, {c2})");
        if scale > 1.0 {
            assert!(c1 > 0 && c1 < 40, "{table}: degenerate predictions ({c1}/40 correct)");
        }
    }
}

// The native cnn and the burn cnn are the same network (`assert_native_matches_burn`; two input
// channels, a non-square image). `backend` accepts only native and burn.
#[test]
fn native_cnn_matches_burn_cnn() {
    let (table, shape, classes) = ("use = 'cnn'\nchannels = [4, 6]\nhidden = 8", &[2, 12, 8], 5);
    assert_native_matches_burn(table, shape, classes);
    assert!(build("use = 'cnn'\nbackend = 'gpu'", shape, classes).is_err());
}

// The native lenet and the burn lenet are the same network (`assert_native_matches_burn`; two
// input channels, a non-square image: 16x20 -> 12x16 -> 6x8 -> 2x4 -> 1x2). Sizes whose
// convolution outputs have an odd side (18x18: 14, then 3; 16x18: 14, then 3 wide; 30x30: 26)
// fall back to burn and train. `backend` accepts only native and burn.
#[test]
fn native_lenet_matches_burn_lenet() {
    let (table, shape, classes) = ("use = 'lenet'\nchannels = [4, 6]\nhidden = [12, 10]", &[2, 16, 20], 5);
    assert_native_matches_burn(table, shape, classes);
    assert!(build("use = 'lenet'\nbackend = 'gpu'", shape, classes).is_err());
    let mut rng = RngStream::new(42);
    for odd in [[1, 18, 18], [1, 16, 18], [1, 30, 30]] {
        let mut m = build(table, &odd, classes).unwrap();
        let mut p = m.init(&mut rng);
        let mut g = p.zeros_like();
        let batch = random_batch(&odd, classes, 3, &mut rng);
        let l = m.loss_grad(&mut p, &batch, &mut g, &mut RngStream::new(0)).unwrap();
        assert!(l.is_finite() && g.is_finite() && g.l2() > 0.0, "lenet on {odd:?}: loss {l}");
    }
}

// 200 steps of plain SGD on a separable toy set cut the training loss sharply and reach > 90%
// accuracy (logreg, mlp), and reduce the loss and raise the correct count (both lenets, both
// cnns).
#[test]
fn sgd_learns_a_separable_problem() {
    for (name, table, shape, classes) in SMALL {
        let mut m = build(table, shape, classes).unwrap();
        let mut rng = RngStream::new(21);
        let data = ClientData::whole(separable(shape, classes, 64, &mut rng));
        let mut p = m.init(&mut rng);
        let eval = |m: &mut Box<dyn Model>, p: &Params| -> EvalStats {
            evaluate_range(m.as_mut(), p, &data, 0..64, 64).unwrap()
        };
        let before = eval(&mut m, &p);
        let cfg = LocalTrain { lr: 0.1, batch_size: 16, max_steps: 200, ..LocalTrain::default() };
        let stats =
            local_train(m.as_mut(), &mut p, &data, &cfg, 1000, &mut NoHook, &fedkit_core::PlainStep, 1, &mut rng)
                .unwrap();
        let after = eval(&mut m, &p);
        println!(
            "{name}: loss {:.4} -> {:.4}, accuracy {:.3} -> {:.3}",
            before.loss(),
            after.loss(),
            before.accuracy(),
            after.accuracy()
        );
        assert_eq!((stats.steps, stats.samples), (200, 200 * 16));
        assert!(after.correct > before.correct, "{name}: correct {} -> {}", before.correct, after.correct);
        if matches!(name, "logreg" | "mlp") {
            assert!(after.loss() < 0.3 * before.loss(), "{name}: loss {} -> {}", before.loss(), after.loss());
            assert!(after.accuracy() > 0.9, "{name}: accuracy {}", after.accuracy());
        } else {
            assert!(after.loss() < 0.8 * before.loss(), "{name}: loss {} -> {}", before.loss(), after.loss());
        }
    }
}

/// Parameter count of a conv layer (`out x in x k x k` weights plus biases) and a linear layer.
fn conv_size(c_out: usize, c_in: usize, k: usize) -> usize {
    c_out * c_in * k * k + c_out
}
fn linear_size(n_in: usize, n_out: usize) -> usize {
    n_in * n_out + n_out
}

// Default layouts: named weight/bias entries, contiguous offsets, and the published sizes
// (FedAvg CNN 1,663,370; 2NN 199,210; NIID-Bench SimpleCNNMNIST 44,426; logreg 610).
#[test]
fn layouts_have_published_sizes() {
    let cnn = conv_size(32, 1, 5) + conv_size(64, 32, 5) + linear_size(7 * 7 * 64, 512) + linear_size(512, 10);
    let mlp = linear_size(784, 200) + linear_size(200, 200) + linear_size(200, 10);
    let lenet = conv_size(6, 1, 5) + conv_size(16, 6, 5) + linear_size(16 * 4 * 4, 120);
    let lenet = lenet + linear_size(120, 84) + linear_size(84, 10);
    assert_eq!((cnn, mlp, lenet), (1_663_370, 199_210, 44_426));
    let cases: [(&str, &[usize], usize, &[&str]); 5] = [
        ("cnn", &[1, 28, 28], cnn, &["conv1", "conv2", "fc1", "fc2"]),
        ("mlp", &[1, 28, 28], mlp, &["fc1", "fc2", "fc3"]),
        ("mlp", &[784], mlp, &["fc1", "fc2", "fc3"]),
        ("lenet", &[1, 28, 28], lenet, &["conv1", "conv2", "fc1", "fc2", "fc3"]),
        ("logreg", &[60], linear_size(60, 10), &["linear"]),
    ];
    for (name, shape, size, layers) in cases {
        let m = build(&format!("use = '{name}'"), shape, 10).unwrap();
        let l = m.layout();
        assert_eq!((l.total(), l.trainable()), (size, size), "{name} on {shape:?}");
        let mut offset = 0;
        for (e, want) in l.entries().iter().zip(layers.iter().flat_map(|n| [(n, "weight"), (n, "bias")])) {
            assert_eq!(e.name, format!("{}.{}", want.0, want.1));
            assert_eq!(e.kind, if want.1 == "weight" { ParamKind::Weight } else { ParamKind::Bias }, "{}", e.name);
            assert_eq!(e.offset, offset, "{}", e.name);
            offset += e.len();
        }
        assert_eq!(l.entries().len(), 2 * layers.len(), "{name}");
        assert_eq!(l.entries().last().unwrap().shape, [10], "{name}: output bias");
        assert_eq!(m.init(&mut RngStream::new(0)).len(), size);
    }
}

// Initialisation follows PyTorch's default: each layer's weights and bias lie in
// +-1/sqrt(fan_in) and fill that range (std ~ bound/sqrt(3) on large layers); it is
// deterministic per seed and differs across seeds.
#[test]
fn init_follows_pytorch_default() {
    for name in ["cnn", "lenet", "mlp"] {
        let m = build(&format!("use = '{name}'"), &[1, 28, 28], 10).unwrap();
        let p = m.init(&mut RngStream::new(7));
        assert_eq!(p, m.init(&mut RngStream::new(7)), "{name}: init not deterministic");
        assert_ne!(p, m.init(&mut RngStream::new(8)), "{name}: init ignores the seed");
        let l = m.layout();
        for (e, v) in p.tensors() {
            let (layer, _) = e.name.split_once('.').unwrap();
            let w = &l.get(&format!("{layer}.weight")).unwrap().shape;
            // linear weights are [in, out]; conv weights [out, in, k, k]
            let fan_in: usize = if w.len() == 2 { w[0] } else { w[1..].iter().product() };
            let bound = 1.0 / (fan_in as f64).sqrt();
            let max = v.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
            assert!(max <= bound, "{name} {}: |value| {max} > bound {bound}", e.name);
            if v.len() >= 50 {
                assert!(max > 0.9 * bound, "{name} {}: values only reach {max} of bound {bound}", e.name);
            }
            if v.len() >= 10_000 {
                let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
                let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
                assert!(mean.abs() < 0.02 * bound, "{name} {}: mean {mean}", e.name);
                let want = bound / 3f64.sqrt();
                assert!(close(std, want, 0.02, 0.0), "{name} {}: std {std}, want {want}", e.name);
            }
        }
    }
}

// Bad input gives errors, not panics: image models on vector data (naming the model and
// suggesting mlp/logreg), images too small for the architecture, bad parameters, and batches
// whose feature count does not match the model.
#[test]
fn bad_input_is_an_error() {
    for name in ["cnn", "lenet"] {
        let err = build(&format!("use = '{name}'"), &[60], 10).err().expect("image model on vectors must fail");
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains("mlp") && msg.contains("logreg"), "{msg}");
    }
    assert!(build("use = 'lenet'", &[1, 16, 16], 3).is_ok());
    for side in [4, 12, 15] {
        assert!(build("use = 'lenet'", &[1, side, side], 3).is_err(), "lenet on {side}x{side}");
    }
    assert!(build("use = 'cnn'", &[1, 10, 10], 3).is_err());
    assert!(build("use = 'mlp'\nhidden = [0]", &[4], 3).is_err());
    assert!(build("use = 'mlp'\nhiden = [5]", &[4], 3).is_err());
    assert!(build("use = 'logreg'", &[7], 1).is_err());
    for (name, table, shape, classes) in SMALL {
        let mut m = build(table, shape, classes).unwrap();
        let mut p = m.init(&mut RngStream::new(1));
        let mut g = p.zeros_like();
        let mut rng = RngStream::new(2);
        let d: usize = shape.iter().product();
        let ok = random_batch(shape, classes, 4, &mut rng);
        assert!(m.loss_grad(&mut p, &ok, &mut g, &mut RngStream::new(0)).is_ok(), "{name}");
        let bad = random_batch(&[d + 1], classes, 4, &mut rng);
        assert!(
            m.loss_grad(&mut p, &bad, &mut g, &mut RngStream::new(0)).is_err(),
            "{name}: loss_grad accepted {} features",
            d + 1
        );
        assert!(m.eval_batch(&p, &bad).is_err(), "{name}: eval_batch accepted {} features", d + 1);
    }
}

/// The `[model]` table of the small mlp with batch norm the batch-norm tests use (on `[6]`).
const MLP_BN: &str = "use = 'mlp'\nhidden = [5, 4]\nnorm = 'batch'";

/// The entry `name` of `p`.
fn entry<'a>(p: &'a Params, name: &str) -> &'a [f32] {
    &p.as_slice()[p.layout().get(name).unwrap_or_else(|| panic!("no entry {name}")).range()]
}

/// Reference forward pass of an `mlp` with batch norm over a whole batch, in f64: each sample's
/// logits, and each batch norm's batch mean and unbiased variance. `training`: batch norm
/// normalises with the batch mean and biased variance, else with its running statistics.
fn mlp_bn_reference(p: &Params, b: &Batch, training: bool) -> (Vec<Vec<f64>>, Vec<(Vec<f64>, Vec<f64>)>) {
    let f64s = |name: &str| entry(p, name).iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (n, d) = (b.len(), b.x.len() / b.len());
    let mut h: Vec<Vec<f64>> = b.x.chunks(d).map(|r| r.iter().map(|&v| v as f64).collect()).collect();
    let mut stats = Vec::new();
    for k in 1.. {
        let Some(we) = p.layout().get(&format!("fc{k}.weight")) else { break };
        let (w, bias, o) = (f64s(&we.name), f64s(&format!("fc{k}.bias")), we.shape[1]);
        let mut z: Vec<Vec<f64>> = h
            .iter()
            .map(|x| {
                (0..o).map(|j| bias[j] + x.iter().enumerate().map(|(a, xa)| xa * w[a * o + j]).sum::<f64>()).collect()
            })
            .collect();
        if p.layout().get(&format!("bn{k}.weight")).is_some() {
            let [scale, shift, rm, rv] =
                ["weight", "bias", "running_mean", "running_var"].map(|s| f64s(&format!("bn{k}.{s}")));
            let mean: Vec<f64> = (0..o).map(|j| z.iter().map(|r| r[j]).sum::<f64>() / n as f64).collect();
            let ss: Vec<f64> = (0..o).map(|j| z.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>()).collect();
            let (mu, var) = if training { (mean.clone(), ss.iter().map(|s| s / n as f64).collect()) } else { (rm, rv) };
            z.iter_mut().for_each(|r| {
                (0..o).for_each(|j| r[j] = scale[j] * (r[j] - mu[j]) / (var[j] + 1e-5).sqrt() + shift[j])
            });
            stats.push((mean, ss.iter().map(|s| s / (n - 1) as f64).collect()));
        }
        if p.layout().get(&format!("fc{}.weight", k + 1)).is_some() {
            z.iter_mut().for_each(|r| r.iter_mut().for_each(|v| *v = v.max(0.0)));
        }
        h = z;
    }
    (h, stats)
}

/// Each sample's cross-entropy loss for `logits`, and whether its top-1 prediction is right.
fn cross_entropy(logits: &[Vec<f64>], y: &[u32]) -> Vec<(f64, bool)> {
    logits
        .iter()
        .zip(y)
        .map(|(z, &y)| {
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            (lse - z[y as usize], z.iter().position(|&v| v == max) == Some(y as usize))
        })
        .collect()
}

/// Parameters of the small batch-norm mlp with running statistics (and norm scales and shifts)
/// set to random values, so that no test passes on the initial 0 / 1 by accident.
fn mlp_bn_params(m: &dyn Model, rng: &mut RngStream) -> Params {
    let mut p = m.init(rng);
    for e in p.layout().clone().entries().iter().filter(|e| e.name.starts_with("bn")) {
        let v = &mut p.as_mut_slice()[e.range()];
        let var = e.name.ends_with("running_var") || e.kind == ParamKind::NormScale;
        v.iter_mut().for_each(|x| *x = if var { 0.5 + 1.5 * rng.uniform() as f32 } else { rng.normal() as f32 * 0.5 });
    }
    p
}

// Batch norm layouts: PyTorch's names and order (linear or conv, then `bn<i>.weight` NormScale,
// `.bias` NormShift, `.running_mean` and `.running_var` Buffer), after every hidden linear layer
// of mlp and every convolution of cnn; buffers are not trainable; initialisation is scale 1,
// shift 0, running mean 0, running variance 1. `norm` other than none/batch is an error.
#[test]
fn batch_norm_layouts_and_init() {
    use ParamKind::*;
    let bn = |k: usize, c: usize| -> Vec<(String, Vec<usize>, ParamKind)> {
        [("weight", NormScale), ("bias", NormShift), ("running_mean", Buffer), ("running_var", Buffer)]
            .into_iter()
            .map(|(s, kind)| (format!("bn{k}.{s}"), vec![c], kind))
            .collect()
    };
    let layer = |name: &str, w: Vec<usize>, b: usize| {
        vec![(format!("{name}.weight"), w, Weight), (format!("{name}.bias"), vec![b], Bias)]
    };
    let mlp =
        [layer("fc1", vec![6, 5], 5), bn(1, 5), layer("fc2", vec![5, 4], 4), bn(2, 4), layer("fc3", vec![4, 3], 3)];
    let cnn = [
        layer("conv1", vec![2, 1, 5, 5], 2),
        bn(1, 2),
        layer("conv2", vec![3, 2, 5, 5], 3),
        bn(2, 3),
        layer("fc1", vec![3 * 2 * 2, 4], 4),
        layer("fc2", vec![4, 3], 3),
    ];
    let cases: [(&str, &[usize], Vec<_>, usize); 2] = [
        (MLP_BN, &[6], mlp.concat(), 2 * (5 + 4)),
        ("use = 'cnn'\nchannels = [2, 3]\nhidden = 4\nnorm = 'batch'", &[1, 8, 8], cnn.concat(), 2 * (2 + 3)),
    ];
    for (table, shape, want, buffers) in cases {
        let m = build(table, shape, 3).unwrap();
        let l = m.layout();
        let got: Vec<_> = l.entries().iter().map(|e| (e.name.clone(), e.shape.clone(), e.kind)).collect();
        assert_eq!(got, want, "{table}");
        assert_eq!(l.trainable(), l.total() - buffers, "{table}");
        let p = m.init(&mut RngStream::new(3));
        for (e, v) in p.tensors() {
            let want = match (e.kind, e.name.ends_with("running_var")) {
                (NormScale, _) | (Buffer, true) => Some(1.0),
                (NormShift, _) | (Buffer, false) => Some(0.0),
                _ => None,
            };
            if let Some(want) = want {
                assert!(v.iter().all(|&x| x == want), "{table}: {} initialised to {v:?}", e.name);
            }
        }
    }
    assert!(build("use = 'mlp'\nnorm = 'layer'", &[6], 3).is_err());
    assert!(build("use = 'cnn'\nnorm = 'group'", &[1, 8, 8], 3).is_err());
}

// One training step (loss_grad) of an mlp with batch norm: the loss is that of the f64 reference
// normalising with the batch mean and biased variance; each running mean becomes 0.9 r + 0.1
// mean and each running variance 0.9 v + 0.1 unbiased variance of that layer's batch
// pre-activations (from random, not initial, r and v); nothing else in the parameters changes.
// A single-sample batch leaves the running statistics unchanged.
#[test]
fn batch_norm_running_statistics_follow_pytorch() {
    let mut m = build(MLP_BN, &[6], 3).unwrap();
    let mut rng = RngStream::new(31);
    let p = mlp_bn_params(m.as_ref(), &mut rng);
    let batch = random_batch(&[6], 3, 7, &mut rng);
    let (logits, stats) = mlp_bn_reference(&p, &batch, true);
    let want_loss = cross_entropy(&logits, &batch.y).iter().map(|c| c.0).sum::<f64>() / 7.0;
    let (mut q, mut g) = (p.clone(), p.zeros_like());
    let loss = m.loss_grad(&mut q, &batch, &mut g, &mut RngStream::new(0)).unwrap() as f64;
    assert!(close(loss, want_loss, 1e-5, 1e-6), "training loss {loss} vs reference {want_loss}");
    assert_eq!(stats.len(), 2);
    for (k, (mean, var)) in stats.iter().enumerate() {
        for (s, batch_stat) in [("running_mean", mean), ("running_var", var)] {
            let name = format!("bn{}.{s}", k + 1);
            let (old, new) = (entry(&p, &name), entry(&q, &name));
            for j in 0..old.len() {
                let want = 0.9 * old[j] as f64 + 0.1 * batch_stat[j];
                assert!(close(new[j] as f64, want, 1e-5, 1e-6), "{name}[{j}]: {} vs {want}", new[j]);
            }
        }
    }
    for e in p.layout().entries().iter().filter(|e| e.kind != ParamKind::Buffer) {
        assert_eq!(entry(&p, &e.name), entry(&q, &e.name), "{} changed in loss_grad", e.name);
    }
    let one = random_batch(&[6], 3, 1, &mut rng);
    let mut q1 = p.clone();
    assert!(m.loss_grad(&mut q1, &one, &mut g, &mut RngStream::new(0)).unwrap().is_finite());
    assert_eq!(q1, p, "a one-sample batch changed the running statistics");
}

/// Stride-1, padding-2 5x5 convolution of one `[c_in, h, w]` sample, in f64: `[c_out, h, w]`.
fn conv5_same(x: &[f32], [c_in, h, w]: [usize; 3], weight: &[f32], bias: &[f32]) -> Vec<f64> {
    let c_out = bias.len();
    let mut out = vec![0.0; c_out * h * w];
    for (o, r, c) in (0..c_out).flat_map(|o| (0..h).flat_map(move |r| (0..w).map(move |c| (o, r, c)))) {
        let mut acc = bias[o] as f64;
        for (i, dr, dc) in (0..c_in).flat_map(|i| (0..5).flat_map(move |dr| (0..5).map(move |dc| (i, dr, dc)))) {
            let (rr, cc) = ((r + dr).wrapping_sub(2), (c + dc).wrapping_sub(2));
            if rr < h && cc < w {
                acc += x[(i * h + rr) * w + cc] as f64 * weight[((o * c_in + i) * 5 + dr) * 5 + dc] as f64;
            }
        }
        out[(o * h + r) * w + c] = acc;
    }
    out
}

// Batch norm on images ([n, c, h, w], cnn with norm = "batch"): the first layer's running
// statistics after one training step are 0.9 r + 0.1 of the per-channel mean and unbiased
// variance over the n x h x w conv outputs (m = n h w values per channel); the second layer's
// are updated too.
#[test]
fn batch_norm_on_images_uses_channel_statistics() {
    let table = "use = 'cnn'\nchannels = [2, 3]\nhidden = 4\nnorm = 'batch'";
    let mut m = build(table, &[1, 8, 8], 3).unwrap();
    let mut rng = RngStream::new(32);
    let mut p = m.init(&mut rng);
    for name in ["bn1.running_mean", "bn1.running_var"] {
        let r = p.layout().get(name).unwrap().range();
        p.as_mut_slice()[r].iter_mut().for_each(|v| *v += rng.uniform() as f32);
    }
    let batch = random_batch(&[1, 8, 8], 3, 3, &mut rng);
    let conv: Vec<Vec<f64>> = batch
        .x
        .chunks(64)
        .map(|x| conv5_same(x, [1, 8, 8], entry(&p, "conv1.weight"), entry(&p, "conv1.bias")))
        .collect();
    let (mut q, mut g) = (p.clone(), p.zeros_like());
    m.loss_grad(&mut q, &batch, &mut g, &mut RngStream::new(0)).unwrap();
    for ch in 0..2 {
        let vals: Vec<f64> = conv.iter().flat_map(|s| s[ch * 64..(ch + 1) * 64].iter().copied()).collect();
        let mean = vals.iter().sum::<f64>() / 192.0;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 191.0;
        for (s, stat) in [("running_mean", mean), ("running_var", var)] {
            let name = format!("bn1.{s}");
            let want = 0.9 * entry(&p, &name)[ch] as f64 + 0.1 * stat;
            let got = entry(&q, &name)[ch] as f64;
            assert!(close(got, want, 1e-5, 1e-6), "{name}[{ch}]: {got} vs {want}");
        }
    }
    for name in ["bn2.running_mean", "bn2.running_var"] {
        assert!(entry(&q, name).iter().zip(entry(&p, name)).all(|(a, b)| a != b), "{name} not updated");
    }
}

// Evaluation mode normalises with the running statistics: eval_batch equals the f64 reference
// that uses them, a sample's loss does not depend on the rest of its batch, and changing a
// running statistic changes the evaluation accordingly.
#[test]
fn batch_norm_eval_uses_running_statistics() {
    let mut m = build(MLP_BN, &[6], 3).unwrap();
    let mut rng = RngStream::new(33);
    let mut p = mlp_bn_params(m.as_ref(), &mut rng);
    p.scale(3.0); // spread the logits so that predictions vary
    let batch = random_batch(&[6], 3, 40, &mut rng);
    let check = |m: &mut Box<dyn Model>, p: &Params| -> f64 {
        let (sum, correct) = m.eval_batch(p, &batch).unwrap();
        let per = cross_entropy(&mlp_bn_reference(p, &batch, false).0, &batch.y);
        let want: f64 = per.iter().map(|c| c.0).sum();
        assert!(close(sum, want, 1e-5, 1e-5), "eval loss {sum} vs reference {want}");
        assert_eq!(correct, per.iter().filter(|c| c.1).count());
        let first = Batch { x: batch.x[..6].to_vec(), y: batch.y[..1].to_vec(), ..batch.clone() };
        let (alone, _) = m.eval_batch(p, &first).unwrap();
        assert!(close(alone, per[0].0, 1e-5, 1e-6), "sample 0 alone {alone} vs in its batch {}", per[0].0);
        sum
    };
    let before = check(&mut m, &p);
    for name in ["bn1.running_mean", "bn2.running_var"] {
        let r = p.layout().get(name).unwrap().range();
        p.as_mut_slice()[r].iter_mut().for_each(|v| *v *= 1.5);
        let after = check(&mut m, &p);
        assert!((after - before).abs() > 1e-3, "changing {name} left the eval loss at {after}");
    }
}

// An mlp with batch norm learns the separable toy problem with plain SGD, and the model it ends
// with classifies well in evaluation mode (with the running statistics training recorded).
#[test]
fn batch_norm_mlp_learns() {
    let mut m = build(MLP_BN, &[6], 3).unwrap();
    let mut rng = RngStream::new(34);
    let data = ClientData::whole(separable(&[6], 3, 96, &mut rng));
    let mut p = m.init(&mut rng);
    let cfg = LocalTrain { lr: 0.1, batch_size: 16, max_steps: 150, ..LocalTrain::default() };
    local_train(m.as_mut(), &mut p, &data, &cfg, 1000, &mut NoHook, &fedkit_core::PlainStep, 1, &mut rng).unwrap();
    let after = evaluate_range(m.as_mut(), &p, &data, 0..96, 96).unwrap();
    assert!(after.accuracy() > 0.9, "accuracy {}", after.accuracy());
    assert_ne!(entry(&p, "bn1.running_var"), &[1.0; 5], "training left the running statistics at init");
}

// input_grad's gradient with respect to the inputs matches finite differences of the loss in the
// inputs (the stencils of `smooth_difference`), per coordinate and in aggregate, on 12 input
// values of every small model (half among its larger gradients); its loss is loss_grad's mean
// loss, and the parameters are not changed.
#[test]
fn input_gradients_match_finite_differences() {
    for (name, table, shape, classes) in SMALL {
        let mut m = build(table, shape, classes).unwrap();
        let mut rng = RngStream::new(13);
        let p = m.init(&mut rng);
        let mut batch = random_batch(shape, classes, 3, &mut rng);
        batch.x.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0);
        let mut gx = Vec::new();
        let l = m.input_grad(&p, &batch, &mut gx).unwrap() as f64;
        assert_eq!(gx.len(), batch.x.len(), "{name}: one input gradient per input value");
        let mut scratch = p.zeros_like();
        let mut loss_at = |m: &mut Box<dyn Model>, b: &Batch| {
            m.loss_grad(&mut p.clone(), b, &mut scratch, &mut RngStream::new(0)).unwrap() as f64
        };
        let l0 = loss_at(&mut m, &batch);
        assert!(close(l, l0, 1e-6, 1e-7), "{name}: input_grad loss {l}, loss_grad {l0}");
        let ulps = 2.0 * l0 * f32::EPSILON as f64;
        let gmax = gx.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
        assert!(gmax > 1e-4, "{name}: no input gradient (max {gmax})");
        let large: Vec<usize> = (0..gx.len()).filter(|&k| gx[k].abs() as f64 >= 0.3 * gmax).collect();
        let (mut diff2, mut fd2, mut done, mut tried) = (0.0, 0.0, 0, 0);
        while done < 12 && tried < 100 {
            tried += 1;
            let i = match tried % 2 {
                0 => rng.below(gx.len() as u64) as usize,
                _ => large[rng.below(large.len() as u64) as usize],
            };
            let mut b = batch.clone();
            let mut loss_with = |v: f32| {
                b.x[i] = v;
                loss_at(&mut m, &b)
            };
            let Some((fd, noise)) = smooth_difference(batch.x[i], l0, ulps, gmax, &mut loss_with) else {
                continue;
            };
            let gi = gx[i] as f64;
            assert!(close(gi, fd, 0.25, 0.05 * gmax + noise), "{name} x[{i}]: input grad {gi}, finite difference {fd}");
            (diff2, fd2, done) = (diff2 + (gi - fd).powi(2), fd2 + fd * fd, done + 1);
        }
        assert_eq!(done, 12, "{name}: too many input values at kinks");
        assert!(diff2.sqrt() < 0.03 * fd2.sqrt(), "{name}: relative input gradient error {}", (diff2 / fd2).sqrt());
        assert_eq!(p, m.init(&mut RngStream::new(13)), "{name}: input_grad changed the parameters");
    }
}
