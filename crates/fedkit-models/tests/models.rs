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

/// The small models every behavioural test runs on: (name, table, sample shape, classes).
const SMALL: [(&str, &str, &[usize], usize); 4] = [
    ("logreg", "use = 'logreg'", &[7], 3),
    ("mlp", "use = 'mlp'\nhidden = [5]", &[1, 4, 4], 3),
    ("lenet", "use = 'lenet'", &[1, 16, 16], 3),
    ("cnn", "use = 'cnn'\nchannels = [2, 3]\nhidden = 4", &[1, 8, 8], 3),
];

fn random_batch(shape: &[usize], classes: usize, n: usize, rng: &mut RngStream) -> Batch {
    let d: usize = shape.iter().product();
    Batch {
        x: (0..n * d).map(|_| rng.uniform() as f32).collect(),
        y: (0..n).map(|_| rng.below(classes as u64) as u32).collect(),
        feature_shape: shape.to_vec(),
        classes,
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
    let data = Dataset { name: "toy".into(), x: x.collect(), y, feature_shape: shape.to_vec(), classes, users: None };
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
        let mut p = m.init(&mut rng);
        let mut batch = random_batch(shape, classes, 2, &mut rng);
        batch.x.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0); // zero-mean inputs: fewer dead ReLUs
        let mut g = p.zeros_like();
        m.loss_grad(&mut p, &batch, &mut g, &mut RngStream::new(0)).unwrap();
        let mut scratch = p.zeros_like();
        let mut loss_at = |m: &mut Box<dyn Model>, q: &Params| {
            let l = m.loss_grad(&mut q.clone(), &batch, &mut scratch, &mut RngStream::new(0)).unwrap() as f64;
            let (sum, _) = m.eval_batch(q, &batch).unwrap();
            assert!(close(l, sum / 2.0, 1e-5, 1e-6), "{name}: loss_grad {l} vs eval_batch {sum}/2");
            l
        };
        let l0 = loss_at(&mut m, &p);
        let ulps = 2.0 * l0 * f32::EPSILON as f64; // resolution of the f32 loss
        let (mut diff2, mut fd2, mut checked, mut tried) = (0.0, 0.0, 0, 0);
        for e in p.layout().entries() {
            let ge = &g.as_slice()[e.range()];
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
                // (up, down, central, noise) differences at steps 1e-2, 3e-3, 1e-3
                let d: Vec<(f64, f64, f64, f64)> = [1e-2f32, 3e-3, 1e-3]
                    .into_iter()
                    .map(|eps| {
                        let (mut hi, mut lo) = (p.clone(), p.clone());
                        hi.as_mut_slice()[i] += eps;
                        lo.as_mut_slice()[i] -= eps;
                        let h =
                            ((hi.as_slice()[i] - p.as_slice()[i]) as f64, (p.as_slice()[i] - lo.as_slice()[i]) as f64);
                        let (l_hi, l_lo) = (loss_at(&mut m, &hi), loss_at(&mut m, &lo));
                        ((l_hi - l0) / h.0, (l0 - l_lo) / h.1, (l_hi - l_lo) / (h.0 + h.1), ulps / eps as f64)
                    })
                    .collect();
                let agree = |a: f64, b: f64, noise: f64| (a - b).abs() <= 0.02 * gmax + 2.0 * noise;
                let smooth = (0..2).find_map(|k| {
                    let ((u, dn, c, noise), next) = (d[k], d[k + 1]);
                    let (up, down) = (agree(u, next.0, next.3), agree(dn, next.1, next.3));
                    if up && down && agree(c, next.2, next.3) && agree(u, dn, noise) {
                        Some((c, noise))
                    } else if up != down {
                        Some((if up { u } else { dn }, 2.0 * noise))
                    } else {
                        None
                    }
                });
                let Some((fd, noise)) = smooth else { continue };
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

// 200 steps of plain SGD on a separable toy set cut the training loss sharply and reach > 90%
// accuracy (logreg, mlp), and reduce the loss and raise the correct count (lenet, cnn).
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
