//! The small transformer's defining properties: causal attention (no position sees a later
//! token), one row of outputs per position on sequence data and the last position's row
//! otherwise, gradients that match finite differences on token inputs, and a language model that
//! learns a deterministic sequence.

use fedkit_core::registry::{Kind, build_from_table};
use fedkit_core::{Batch, CrossEntropy, Dataset, Mode, Model, Outputs, Params, RngStream};
use fedkit_models::models;

const T: usize = 5;
const V: usize = 7;

fn transformer(extra: &str) -> Box<dyn Model> {
    let table: toml::Table = format!("use = 'transformer'\ndim = 8\nheads = 2\n{extra}").parse().unwrap();
    let (spec, _) = build_from_table(models(), Kind::Model, "model", &table, &[]).unwrap();
    spec.instantiate(&[T], V).unwrap()
}

/// `n` random token sequences; with `per_position`, targets at every position (else one label).
fn tokens(n: usize, per_position: bool, rng: &mut RngStream) -> Batch {
    let x: Vec<f32> = (0..n * T).map(|_| rng.below(V as u64) as f32).collect();
    let targets = if per_position { (0..n * T).map(|_| rng.below(V as u64) as u32).collect() } else { Vec::new() };
    Batch { x, y: (0..n).map(|_| rng.below(V as u64) as u32).collect(), targets, feature_shape: vec![T], classes: V }
}

fn forward(m: &mut dyn Model, p: &Params, b: &Batch) -> Outputs {
    let mut out = Outputs::default();
    m.forward(p, b, Mode::Eval, &mut out).unwrap();
    out
}

#[test]
fn attention_is_causal_and_rows_follow_the_targets() {
    let mut m = transformer("");
    assert!(m.per_position());
    let mut rng = RngStream::new(3);
    let p = m.init(&mut rng);
    let b = tokens(3, true, &mut rng);
    let out = forward(m.as_mut(), &p, &b);
    assert_eq!(out.logits.len(), 3 * T * V, "one row of logits per position");
    assert_eq!(out.features.len(), 3 * T * 8, "one row of features per position");
    // Changing sample 1's token at position j changes no row before j, and changes row j.
    for j in 0..T {
        let mut c = b.clone();
        c.x[T + j] = ((c.x[T + j] as usize + 1) % V) as f32;
        let o = forward(m.as_mut(), &p, &c);
        for pos in 0..T {
            let row = |o: &Outputs| o.logits_of(T + pos).to_vec();
            if pos < j {
                assert_eq!(row(&o), row(&out), "position {pos} saw the token at {j}");
            } else if pos == j {
                assert_ne!(row(&o), row(&out), "position {j} ignores its own token");
            }
        }
        // Other samples are untouched.
        assert_eq!(o.logits_of(0), out.logits_of(0));
    }
    // Without per-position targets the model returns the last position's row.
    let one = Batch { targets: Vec::new(), ..b.clone() };
    let last = forward(m.as_mut(), &p, &one);
    assert_eq!(last.logits.len(), 3 * V);
    for s in 0..3 {
        let want = out.logits_of(s * T + T - 1);
        assert!(last.logits_of(s).iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-5), "sample {s}");
    }
}

// The mean next-token cross-entropy's gradient against central differences along random
// directions (token inputs have no input gradient).
#[test]
fn sequence_loss_gradient_matches_finite_differences() {
    let mut m = transformer("layers = 1");
    let mut rng = RngStream::new(5);
    let p = m.init(&mut rng);
    let b = tokens(2, true, &mut rng);
    let mut g = p.zeros_like();
    let loss = m.loss_grad(&mut p.clone(), &b, &mut g, &mut RngStream::new(0)).unwrap();
    let mean = |m: &mut dyn Model, q: &Params| {
        let (sum, _) = m.eval_batch(q, &b).unwrap();
        sum / (2 * T) as f64
    };
    assert!((mean(m.as_mut(), &p) - loss as f64).abs() < 1e-5, "loss_grad is the mean over every position");
    for _ in 0..6 {
        let d: Vec<f32> = (0..p.len()).map(|_| rng.normal() as f32).collect();
        let norm = d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let want: f64 = g.as_slice().iter().zip(&d).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / norm;
        let eps = 1e-2;
        let at = |t: f64| {
            let mut q = p.clone();
            q.as_mut_slice().iter_mut().zip(&d).for_each(|(w, di)| *w += (t * *di as f64 / norm) as f32);
            q
        };
        let fd = (mean(m.as_mut(), &at(eps)) - mean(m.as_mut(), &at(-eps))) / (2.0 * eps);
        assert!((fd - want).abs() <= 0.02 * want.abs().max(fd.abs()) + 2e-4, "directional {want} vs {fd}");
    }
    // The vjp path with the cross-entropy head gives the same loss and gradient.
    let mut g2 = p.zeros_like();
    let l2 = m.vjp(&mut p.clone(), &b, Mode::Train, &mut CrossEntropy, Some(&mut g2), None, &mut RngStream::new(0));
    assert!((l2.unwrap() - loss).abs() < 1e-6);
    let diff: f32 = g.as_slice().iter().zip(g2.as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff < 1e-5, "vjp and loss_grad differ by {diff}");
}

#[test]
fn a_language_model_learns_a_deterministic_sequence() {
    // Next token = current + 1 (mod V): a position-independent rule every position must learn.
    let mut m = transformer("");
    let mut rng = RngStream::new(9);
    let mut p = m.init(&mut rng);
    let batch = |rng: &mut RngStream| {
        let mut b = tokens(8, true, rng);
        for s in 0..8 {
            let start = rng.below(V as u64) as usize;
            for t in 0..T {
                b.x[s * T + t] = ((start + t) % V) as f32;
                b.targets[s * T + t] = ((start + t + 1) % V) as u32;
            }
        }
        b
    };
    let test = batch(&mut rng);
    let (before, _) = m.eval_batch(&p, &test).unwrap();
    let cfg =
        fedkit_core::optim::LocalTrain { optimizer: fedkit_core::optim::OptimizerKind::Adam, ..Default::default() };
    let mut opt = fedkit_core::optim::Optimizer::new(&cfg, &p.layout());
    let mut g = p.zeros_like();
    for _ in 0..150 {
        let b = batch(&mut rng);
        m.loss_grad(&mut p, &b, &mut g, &mut rng).unwrap();
        opt.step(p.as_mut_slice(), g.as_slice(), 0.01);
    }
    let (after, correct) = m.eval_batch(&p, &test).unwrap();
    let n = (8 * T) as f64;
    assert!(before / n > 1.5 && after / n < 0.1, "next-token loss {} -> {}", before / n, after / n);
    assert_eq!(correct, 8 * T, "every next token predicted");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let mut m = transformer("");
    let mut rng = RngStream::new(1);
    let p = m.init(&mut rng);
    let mut b = tokens(1, true, &mut rng);
    b.x[2] = V as f32;
    let e = m.eval_batch(&p, &b).unwrap_err().to_string();
    assert!(e.contains("token id") && e.contains("model.vocab"), "{e}");
    b.x[2] = 0.5;
    assert!(m.eval_batch(&p, &b).is_err(), "a fractional token id");
    let table: toml::Table = "use = 'transformer'\nheads = 3".parse().unwrap();
    let (spec, _) = build_from_table(models(), Kind::Model, "model", &table, &[]).unwrap();
    let e = spec.instantiate(&[T], V).err().unwrap().to_string();
    assert!(e.contains("model.heads") && e.contains("dim = 64"), "{e}");
    let e = spec.instantiate(&[1, 28, 28], V).err().unwrap().to_string();
    assert!(e.contains("model.input") && e.contains("[T] token ids"), "{e}");
    // A per-sample model refuses sequence data by name.
    let mlp: toml::Table = "use = 'mlp'".parse().unwrap();
    let (spec, _) = build_from_table(models(), Kind::Model, "model", &mlp, &[]).unwrap();
    let data = Dataset {
        name: "seq".into(),
        x: vec![0.0; T],
        y: vec![0],
        targets: vec![0; T],
        feature_shape: vec![T],
        classes: V,
        users: None,
    };
    let e =
        fedkit_core::model::check_fits(spec.instantiate(&[T], V).unwrap().as_ref(), &data, "model.use").unwrap_err();
    assert!(e.to_string().contains("transformer"), "{e}");
}

#[test]
fn token_inputs_refuse_input_gradients_and_continuous_inputs_have_them() {
    let mut m = transformer("");
    let mut rng = RngStream::new(4);
    let p = m.init(&mut rng);
    let b = tokens(2, true, &mut rng);
    let mut gx = Vec::new();
    let e = m.input_grad(&p, &b, &mut gx).unwrap_err().to_string();
    assert!(e.contains("no gradient with respect to its inputs") && e.contains("continuous"), "{e}");
    let mut q = p.clone();
    let e = m
        .vjp(&mut q, &b, Mode::Eval, &mut CrossEntropy, None, Some(&mut gx), &mut RngStream::new(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokens"), "{e}");
    // Continuous inputs back-propagate to the inputs.
    let table: toml::Table = "use = 'transformer'\ndim = 8\nheads = 2\ninput = 'continuous'".parse().unwrap();
    let (spec, _) = build_from_table(models(), Kind::Model, "model", &table, &[]).unwrap();
    let mut c = spec.instantiate(&[T, 3], V).unwrap();
    let pc = c.init(&mut rng);
    let x: Vec<f32> = (0..2 * T * 3).map(|_| rng.normal() as f32).collect();
    let bc = Batch { x, feature_shape: vec![T, 3], ..b };
    c.input_grad(&pc, &bc, &mut gx).unwrap();
    assert_eq!(gx.len(), 2 * T * 3);
    assert!(gx.iter().any(|&g| g != 0.0));
}
