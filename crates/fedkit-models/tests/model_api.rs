//! The model API every later family builds on, for every registered model (native and burn,
//! with and without batch norm): `forward` (logits and features), `vjp` (any head's gradient
//! with respect to the parameters and the inputs), and the cross-entropy methods that follow
//! from them.

use fedkit_core::registry::{Kind, build_from_table};
use fedkit_core::{Batch, CrossEntropy, Mode, Model, OutputGrads, Outputs, ParamKind, Params, RngStream};
use fedkit_models::models;

/// (name, `[model]` table, sample shape, classes): every model and backend, small.
const MODELS: [(&str, &str, &[usize], usize); 13] = [
    ("dae", "use = 'dae'\nhidden = 5", &[1, 4, 4], 3),
    ("logreg", "use = 'logreg'", &[7], 3),
    ("mlp", "use = 'mlp'\nhidden = [5, 4]", &[1, 4, 4], 3),
    ("mlp-bn", "use = 'mlp'\nhidden = [5, 4]\nnorm = 'batch'", &[1, 4, 4], 3),
    ("mlp-linear", "use = 'mlp'\nhidden = []", &[6], 3),
    ("lenet", "use = 'lenet'", &[1, 16, 16], 3),
    ("lenet-burn", "use = 'lenet'\nbackend = 'burn'", &[1, 16, 16], 3),
    ("cnn", "use = 'cnn'\nchannels = [2, 3]\nhidden = 4", &[1, 8, 8], 3),
    ("cnn-burn", "use = 'cnn'\nchannels = [2, 3]\nhidden = 4\nbackend = 'burn'", &[1, 8, 8], 3),
    ("cnn-bn", "use = 'cnn'\nchannels = [2, 3]\nhidden = 4\nnorm = 'batch'", &[1, 8, 8], 3),
    ("resnet-bn", "use = 'resnet'\ndepth = 8\nwidth = 4", &[3, 8, 8], 3),
    ("resnet-gn", "use = 'resnet'\ndepth = 8\nwidth = 4\nnorm = 'group'", &[3, 8, 8], 3),
    ("transformer", "use = 'transformer'\ndim = 8\nheads = 2\ninput = 'continuous'", &[3, 2], 3),
];

fn build(table: &str, shape: &[usize], classes: usize) -> Box<dyn Model> {
    let table: toml::Table = table.parse().expect("valid TOML");
    let (spec, _) = build_from_table(models(), Kind::Model, "model", &table, &[]).expect("a registered model");
    spec.instantiate(shape, classes).expect("the model fits the data")
}

fn batch(shape: &[usize], classes: usize, n: usize, rng: &mut RngStream) -> Batch {
    let d: usize = shape.iter().product();
    Batch {
        x: (0..n * d).map(|_| (2.0 * rng.uniform() - 1.0) as f32).collect(),
        y: (0..n).map(|_| rng.below(classes as u64) as u32).collect(),
        feature_shape: shape.to_vec(),
        classes,
        targets: Vec::new(),
    }
}

fn gaussian(n: usize, rng: &mut RngStream) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// A random direction of unit length (so a step moves every coordinate by little, and kinks
/// are rarely crossed).
fn direction(n: usize, rng: &mut RngStream) -> Vec<f32> {
    let v = gaussian(n, rng);
    let norm = dot(&v, &v).sqrt() as f32;
    v.into_iter().map(|x| x / norm).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// <v, logits> + <u, features> of `model` at `p` on `b`, in f64.
fn functional(model: &mut dyn Model, p: &Params, b: &Batch, mode: Mode, v: &[f32], u: &[f32]) -> f64 {
    let mut out = Outputs::default();
    model.forward(p, b, mode, &mut out).unwrap();
    dot(&out.logits, v) + dot(&out.features, u)
}

/// The central difference of `f` along a direction scaled by `eps`, at two step sizes: it is
/// trusted when both agree (no ReLU or max-pool kink within the stencil).
fn directional(f: &mut dyn FnMut(f64) -> f64) -> Option<f64> {
    let mut d = |eps: f64| (f(eps) - f(-eps)) / (2.0 * eps);
    let steps = [d(1e-2), d(3e-3), d(1e-3)];
    let agree = |a: f64, b: f64| (a - b).abs() <= 0.02 * a.abs().max(b.abs()) + 1e-3;
    (0..2).find(|&k| agree(steps[k], steps[k + 1])).map(|k| steps[k + 1])
}

// The defining property of a vector-Jacobian product: for a head that returns the linear
// functional <v, logits> + <u, features> (gradients v and u), vjp's parameter gradient g and
// input gradient gx satisfy <g, d> = d/dt F(theta + t d) and <gx, e> = d/dt F(x + t e) for random
// directions d, e (central differences), in evaluation and in training mode. Buffers get none.
#[test]
fn vjp_matches_finite_differences_for_every_model() {
    for (name, table, shape, classes) in MODELS {
        let mut m = build(table, shape, classes);
        let mut rng = RngStream::new(21);
        let p = m.init(&mut rng);
        let b = batch(shape, classes, 4, &mut rng);
        for mode in [Mode::Eval, Mode::TrainFrozen] {
            let mut out = Outputs::default();
            m.forward(&p, &b, mode, &mut out).unwrap();
            assert_eq!((out.classes, out.logits.len()), (classes, 4 * classes), "{name}: logits [n, classes]");
            assert!(out.feature_dim > 0 && out.features.len() == 4 * out.feature_dim, "{name}: features [n, dim]");
            let v = gaussian(out.logits.len(), &mut rng);
            let u = gaussian(out.features.len(), &mut rng);
            let (vh, uh) = (v.clone(), u.clone());
            let mut head = |o: &Outputs, _: &Batch, g: &mut OutputGrads| {
                g.logits.clone_from(&vh);
                g.features.clone_from(&uh);
                Ok((dot(&o.logits, &vh) + dot(&o.features, &uh)) as f32)
            };
            let (mut g, mut gx) = (p.zeros_like(), Vec::new());
            let mut q = p.clone();
            let value =
                m.vjp(&mut q, &b, mode, &mut head, Some(&mut g), Some(&mut gx), &mut RngStream::new(0)).unwrap();
            assert_eq!(q, p, "{name}: vjp in {mode:?} does not write the parameters");
            let f0 = functional(m.as_mut(), &p, &b, mode, &v, &u);
            assert!((value as f64 - f0).abs() <= 1e-4 * f0.abs().max(1.0), "{name}: head value {value} vs {f0}");
            for e in p.layout().entries().iter().filter(|e| e.kind == ParamKind::Buffer) {
                assert!(g.as_slice()[e.range()].iter().all(|&x| x == 0.0), "{name}: buffer {} got a gradient", e.name);
            }
            assert_eq!(gx.len(), b.x.len(), "{name}: one input gradient per input value");
            let (mut checked, mut err2, mut ref2) = (0, 0.0, 0.0);
            for _ in 0..12 {
                let mut d = direction(p.len(), &mut rng);
                for e in p.layout().entries().iter().filter(|e| e.kind == ParamKind::Buffer) {
                    d[e.range()].fill(0.0);
                }
                let want = dot(g.as_slice(), &d);
                let mut along = |t: f64| {
                    let mut pt = p.clone();
                    pt.as_mut_slice().iter_mut().zip(&d).for_each(|(w, di)| *w += (t * *di as f64) as f32);
                    functional(m.as_mut(), &pt, &b, mode, &v, &u)
                };
                if let Some(fd) = directional(&mut along) {
                    (checked, err2, ref2) = (checked + 1, err2 + (want - fd).powi(2), ref2 + fd * fd);
                }
                let e = direction(b.x.len(), &mut rng);
                let want_x = dot(&gx, &e);
                let mut along_x = |t: f64| {
                    let mut bt = b.clone();
                    bt.x.iter_mut().zip(&e).for_each(|(x, ei)| *x += (t * *ei as f64) as f32);
                    functional(m.as_mut(), &p, &bt, mode, &v, &u)
                };
                if let Some(fd) = directional(&mut along_x) {
                    (checked, err2, ref2) = (checked + 1, err2 + (want_x - fd).powi(2), ref2 + fd * fd);
                }
            }
            assert!(checked >= 12, "{name} {mode:?}: only {checked} smooth directions");
            assert!(err2.sqrt() <= 0.02 * ref2.sqrt(), "{name} {mode:?}: relative error {}", (err2 / ref2).sqrt());
        }
    }
}

// vjp with the cross-entropy head is loss_grad: same loss and gradient (bit for bit for the native
// models, whose fused path does the same operations), the same running statistics written in
// training mode, and input_grad's input gradient.
#[test]
fn the_cross_entropy_head_is_loss_grad() {
    for (name, table, shape, classes) in MODELS {
        let mut m = build(table, shape, classes);
        let mut rng = RngStream::new(5);
        let p = m.init(&mut rng);
        let b = batch(shape, classes, 5, &mut rng);
        let (mut pa, mut pb) = (p.clone(), p.clone());
        let (mut ga, mut gb) = (p.zeros_like(), p.zeros_like());
        let la = m.loss_grad(&mut pa, &b, &mut ga, &mut RngStream::new(0)).unwrap();
        let lb =
            m.vjp(&mut pb, &b, Mode::Train, &mut CrossEntropy, Some(&mut gb), None, &mut RngStream::new(0)).unwrap();
        let native = !name.contains("burn")
            && !name.contains("bn")
            && !["mlp", "resnet", "transformer"].iter().any(|m| name.starts_with(m));
        if native {
            assert_eq!((la.to_bits(), &ga), (lb.to_bits(), &gb), "{name}: bit for bit");
        } else {
            assert!((la - lb).abs() <= 1e-6 * la.abs().max(1.0), "{name}: loss {la} vs {lb}");
            let off = ga.sub(&gb).l2() / ga.l2().max(1e-12);
            assert!(off < 1e-5, "{name}: gradients differ by {off}");
        }
        let buffers_moved = pa.sub(&p).l2();
        assert!(pb.sub(&pa).l2() <= 1e-6 * buffers_moved.max(1.0), "{name}: the same running statistics");
        assert_eq!(name.ends_with("bn"), buffers_moved > 0.0, "{name}: only batch norm writes buffers");
        let (mut gx, mut gy) = (Vec::new(), Vec::new());
        m.input_grad(&p, &b, &mut gx).unwrap();
        m.vjp(&mut p.clone(), &b, Mode::TrainFrozen, &mut CrossEntropy, None, Some(&mut gy), &mut RngStream::new(0))
            .unwrap();
        let off = gx.iter().zip(&gy).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        assert!(off <= 1e-5 * dot(&gx, &gx).sqrt().max(1e-9), "{name}: input gradients differ by {off}");
    }
}

// forward's logits give eval_batch's summed loss and correct count, per_example_loss sums to
// the same loss, and the features are the output layer's input: logits = features W + b with the
// layout's last weight and bias.
#[test]
fn forward_explains_evaluation_and_the_output_layer() {
    for (name, table, shape, classes) in MODELS {
        let mut m = build(table, shape, classes);
        let mut rng = RngStream::new(8);
        let p = m.init(&mut rng);
        let b = batch(shape, classes, 6, &mut rng);
        let mut out = Outputs::default();
        m.forward(&p, &b, Mode::Eval, &mut out).unwrap();
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for (i, &y) in b.y.iter().enumerate() {
            let z: Vec<f64> = out.logits_of(i).iter().map(|&v| v as f64).collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            loss += lse - z[y as usize];
            correct += (fedkit_core::argmax(out.logits_of(i)) == y as usize) as usize;
        }
        let (sum, right) = m.eval_batch(&p, &b).unwrap();
        assert!((sum - loss).abs() <= 1e-4 * loss, "{name}: eval loss {sum} vs {loss}");
        assert_eq!(right, correct, "{name}: correct count");
        let mut per = Vec::new();
        m.per_example_loss(&p, &b, &mut per).unwrap();
        let total: f64 = per.iter().map(|&v| v as f64).sum();
        assert!((total - loss).abs() <= 1e-4 * loss, "{name}: per-example losses sum to {total}, not {loss}");
        let entries = p.layout().entries();
        let (w, bias) = (&entries[entries.len() - 2], &entries[entries.len() - 1]);
        let (wv, bv) = (&p.as_slice()[w.range()], &p.as_slice()[bias.range()]);
        let f = out.feature_dim;
        assert_eq!(w.shape, vec![f, classes], "{name}: the output layer reads the features");
        for i in 0..b.len() {
            for k in 0..classes {
                let z = bv[k] as f64
                    + (0..f).map(|j| out.features_of(i)[j] as f64 * wv[j * classes + k] as f64).sum::<f64>();
                let got = out.logits_of(i)[k] as f64;
                assert!((z - got).abs() <= 1e-4 * z.abs().max(1.0), "{name}: logit {got} vs features W + b {z}");
            }
        }
    }
}

/// HeteroFL's sub-models: `mlp` at rate 1/2 has every hidden width halved (rounded up), its
/// tensors are the leading blocks of the full model's, and in evaluation it computes exactly
/// what the full model computes with the other units' weights zeroed; in training it divides
/// each hidden layer's output by the rate (the Scaler). Models without hidden widths refuse.
#[test]
fn width_scaled_mlp_is_the_leading_block_with_a_training_scaler() {
    use fedkit_core::SubModel;
    let (shape, classes) = (&[6usize][..], 3);
    let full = build("use = 'mlp'\nhidden = [5, 4]", shape, classes);
    let mut half = full.width_scaled(0.5).unwrap();
    let shapes: Vec<Vec<usize>> = half.layout().entries().iter().map(|e| e.shape.clone()).collect();
    assert_eq!(shapes, vec![vec![6, 3], vec![3], vec![3, 2], vec![2], vec![2, 3], vec![3]]);
    let map = SubModel::new(full.layout(), half.layout()).unwrap();
    let mut rng = RngStream::new(5);
    let p = full.init(&mut rng);
    let sub = map.extract(&p).unwrap();
    let padded = map.scatter(&sub).unwrap();
    let b = batch(shape, classes, 4, &mut rng);
    let (mut a, mut z) = (Outputs::default(), Outputs::default());
    half.forward(&sub, &b, Mode::Eval, &mut a).unwrap();
    let mut full = full;
    full.forward(&padded, &b, Mode::Eval, &mut z).unwrap();
    assert!(!a.logits.is_empty() && a.logits.len() == z.logits.len());
    for (x, y) in a.logits.iter().zip(&z.logits) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
    // Training mode, one hidden layer: its output is divided by 1/2, so (ReLU is positively
    // homogeneous) the features double.
    let one = build("use = 'mlp'\nhidden = [4]", shape, classes);
    let mut one_half = one.width_scaled(0.5).unwrap();
    let q = one_half.init(&mut rng);
    let (mut t, mut e) = (Outputs::default(), Outputs::default());
    one_half.forward(&q, &b, Mode::TrainFrozen, &mut t).unwrap();
    one_half.forward(&q, &b, Mode::Eval, &mut e).unwrap();
    assert_eq!(t.feature_dim, 2);
    assert!(!t.features.is_empty() && t.features.len() == e.features.len());
    for (x, y) in t.features.iter().zip(&e.features) {
        assert_eq!(*x, 2.0 * y);
    }
    let mut whole = full.width_scaled(1.0).unwrap();
    let mut w = Outputs::default();
    whole.forward(&p, &b, Mode::TrainFrozen, &mut w).unwrap();
    let mut f = Outputs::default();
    full.forward(&p, &b, Mode::TrainFrozen, &mut f).unwrap();
    assert_eq!(w, f, "rate 1 is the model itself, without a Scaler");
    assert!(full.width_scaled(0.0).is_err() && full.width_scaled(1.5).is_err());
    let e = build("use = 'logreg'", &[7], 3).width_scaled(0.5).err().unwrap().to_string();
    assert!(e.contains("no hidden widths") && e.contains("mlp"), "{e}");
}

/// A training-mode pass that asks for no gradient (static batch norm's statistics pass) works
/// for every model and writes the same running statistics as one that does.
#[test]
fn vjp_without_gradients_only_records_statistics() {
    for (name, table, shape, classes) in MODELS {
        let mut m = build(table, shape, classes);
        let mut rng = RngStream::new(2);
        let p = m.init(&mut rng);
        let b = batch(shape, classes, 4, &mut rng);
        let (mut with, mut without) = (p.clone(), p.clone());
        let mut g = p.zeros_like();
        m.vjp(&mut with, &b, Mode::Train, &mut CrossEntropy, Some(&mut g), None, &mut RngStream::new(0)).unwrap();
        m.vjp(&mut without, &b, Mode::Train, &mut CrossEntropy, None, None, &mut RngStream::new(0))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(with, without, "{name}");
    }
}

#[test]
fn activations_end_with_the_features_and_logits_and_name_every_hidden_layer() {
    let mut rng = RngStream::new(11);
    for (name, table, shape, classes) in MODELS {
        let mut model = build(table, shape, classes);
        let p = model.init(&mut rng);
        let b = batch(shape, classes, 5, &mut rng);
        let acts = model.activations(&p, &b).unwrap();
        let mut out = Outputs::default();
        model.forward(&p, &b, Mode::Eval, &mut out).unwrap();
        let [.., f, l] = acts.as_slice() else { panic!("{name}: fewer than two activations") };
        assert_eq!((f.name.as_str(), l.name.as_str()), ("features", "logits"), "{name}");
        assert_eq!((&f.values, f.dim), (&out.features, out.feature_dim), "{name}: features");
        assert_eq!((&l.values, l.dim), (&out.logits, out.classes), "{name}: logits");
        for a in &acts {
            assert_eq!(a.rows() * a.dim, a.values.len(), "{name}: {}", a.name);
            assert_eq!(a.rows(), 5, "{name}: {} has one row per sample", a.name);
        }
        let names: Vec<&str> = acts.iter().map(|a| a.name.as_str()).collect();
        let expected: &[&str] = match name {
            "mlp" | "mlp-bn" => &["fc1", "features", "logits"],
            "lenet" | "lenet-burn" => &["conv1", "conv2", "fc1", "features", "logits"],
            "cnn" | "cnn-burn" | "cnn-bn" => &["conv1", "conv2", "features", "logits"],
            "resnet-bn" | "resnet-gn" => &["stem", "block1", "block2", "features", "logits"],
            "transformer" => &["block1", "features", "logits"],
            _ => &["features", "logits"],
        };
        assert_eq!(names, expected, "{name}");
    }
}

#[test]
fn native_and_burn_convolutions_give_the_same_activations() {
    let mut rng = RngStream::new(12);
    for (native, burn) in [("cnn", "cnn-burn"), ("lenet", "lenet-burn")] {
        let spec = |n: &str| MODELS.iter().find(|m| m.0 == n).copied().unwrap();
        let (_, tn, shape, classes) = spec(native);
        let (_, tb, _, _) = spec(burn);
        let (mut a, mut b) = (build(tn, shape, classes), build(tb, shape, classes));
        let p = a.init(&mut rng);
        let x = batch(shape, classes, 3, &mut rng);
        let (ua, ub) = (a.activations(&p, &x).unwrap(), b.activations(&p, &x).unwrap());
        assert_eq!(ua.len(), ub.len(), "{native}");
        for (u, v) in ua.iter().zip(&ub) {
            assert_eq!((&u.name, u.dim), (&v.name, v.dim), "{native}");
            let gap = u.values.iter().zip(&v.values).map(|(s, t)| (s - t).abs()).fold(0.0f32, f32::max);
            assert!(gap < 1e-4, "{native} {}: native and burn differ by {gap}", u.name);
        }
    }
}
