//! Fixtures for the loss tests: random outputs and a finite-difference check of a head's
//! gradient with respect to logits and features.

use fedkit_core::{Batch, Head, OutputGrads, Outputs, RngStream};

/// Random outputs of `n` samples over `classes` classes with 3 features, and their batch.
pub fn outputs(n: usize, classes: usize, seed: u64) -> (Outputs, Batch) {
    let mut rng = RngStream::new(seed);
    let out = Outputs {
        logits: (0..n * classes).map(|_| (2.0 * rng.normal()) as f32).collect(),
        classes,
        features: (0..n * 3).map(|_| rng.normal() as f32).collect(),
        feature_dim: 3,
    };
    let batch = Batch {
        x: vec![0.0; n],
        y: (0..n).map(|_| rng.below(classes as u64) as u32).collect(),
        feature_shape: vec![1],
        classes,
        targets: Vec::new(),
    };
    (out, batch)
}

/// Assert the head's gradient equals central differences of its value, coordinate by
/// coordinate, for the logits and (when it returns one) the features.
#[track_caller]
pub fn check_head_gradient(head: &mut dyn Head, out: &Outputs, batch: &Batch) {
    let mut g = OutputGrads::default();
    head.value_grad(out, batch, &mut g).unwrap();
    let mut value_at = |o: &Outputs| -> f64 {
        let mut scratch = OutputGrads::default();
        head.value_grad(o, batch, &mut scratch).unwrap() as f64
    };
    let eps = 1e-2f32;
    for k in 0..out.logits.len() {
        let (mut hi, mut lo) = (out.clone(), out.clone());
        hi.logits[k] += eps;
        lo.logits[k] -= eps;
        let fd = (value_at(&hi) - value_at(&lo)) / (2.0 * eps as f64);
        let got = g.logits[k] as f64;
        assert!((got - fd).abs() <= 2e-3 + 2e-2 * fd.abs(), "logit {k}: gradient {got}, finite difference {fd}");
    }
    if !g.features.is_empty() {
        for k in 0..out.features.len() {
            let (mut hi, mut lo) = (out.clone(), out.clone());
            hi.features[k] += eps;
            lo.features[k] -= eps;
            let fd = (value_at(&hi) - value_at(&lo)) / (2.0 * eps as f64);
            let got = g.features[k] as f64;
            assert!((got - fd).abs() <= 2e-3 + 2e-2 * fd.abs(), "feature {k}: gradient {got}, finite difference {fd}");
        }
    }
}
