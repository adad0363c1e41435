//! The privacy attacks' defining properties on the real models.
//! - invert_gradients: the gradient of the gradient by central differences of input gradients
//!   matches finite differences in input space; the analytic inversion of a fully connected
//!   first layer recovers a batch-1 input exactly; iDLG recovers the label of a batch-1 update;
//!   the optimisation recovers an image from a FedSGD update far better than the mean image.
//! - gan_leakage: the generator learns to produce what the shared model calls the target class
//!   (here: images bright on the left), and the insider's data loses the target class and gains
//!   the injected samples labelled `fake`, round after round from its memory.
//! - instahide: with k = 1 and no mask its local step is the plain cross-entropy step; with the
//!   mask on, the step differs (it trains on encoded images).
//! - film: the embedding rows that moved are exactly the batch's tokens, and beam search under
//!   a model that learned the text puts the batch's sequence first.

use fedkit_core::registry::{Kind, build_from_table};
use fedkit_core::{Batch, Model, Params, RngStream};
use fedkit_methods::privacy_attacks::film::{EMBEDDING, bag_of_words, beam_search};
use fedkit_methods::privacy_attacks::image_metrics::psnr;
use fedkit_methods::privacy_attacks::invert_gradients::{
    InvertGradients, LabelSource, Observed, analytic_first_layer, cosine_loss_grad, param_gradient, recover_labels,
    unrolled_loss_grad,
};
use fedkit_models::models;

fn model(spec: &str, shape: &[usize], classes: usize) -> Box<dyn Model> {
    let table: toml::Table = spec.parse().unwrap();
    let (spec, _) = build_from_table(models(), Kind::Model, "model", &table, &[]).unwrap();
    spec.instantiate(shape, classes).unwrap()
}

/// A smooth blob image of `h x w` in [0, 1] (so TV priors have something to keep).
fn blob(h: usize, w: usize, cy: f32, cx: f32) -> Vec<f32> {
    (0..h * w)
        .map(|i| {
            let (y, x) = ((i / w) as f32, (i % w) as f32);
            (-((y - cy).powi(2) + (x - cx).powi(2)) / 8.0).exp()
        })
        .collect()
}

fn batch(x: Vec<f32>, y: Vec<u32>, shape: &[usize], classes: usize) -> Batch {
    Batch { x, y, targets: Vec::new(), feature_shape: shape.to_vec(), classes }
}

/// The FedSGD update of one step with learning rate 0.1 on `b`.
fn fedsgd_update(m: &mut dyn Model, p: &Params, b: &Batch) -> Params {
    let mut g = param_gradient(m, p, b).unwrap();
    g.scale(-0.1);
    g
}

/// The largest relative gap, over `directions` random unit directions, between `gx` and central
/// differences (step 3e-3) of `loss` around `x0` in input space.
fn worst_directional_gap(
    m: &mut dyn Model,
    x0: &[f32],
    gx: &[f32],
    directions: usize,
    rng: &mut RngStream,
    loss: &dyn Fn(&mut dyn Model, Vec<f32>) -> f64,
) -> f64 {
    let mut worst = 0.0f64;
    for _ in 0..directions {
        let v: Vec<f32> = (0..x0.len()).map(|_| rng.normal() as f32).collect();
        let vn = v.iter().map(|a| (a * a) as f64).sum::<f64>().sqrt();
        let dir: Vec<f32> = v.iter().map(|a| (*a as f64 / vn) as f32).collect();
        let at = |m: &mut dyn Model, s: f32| loss(m, x0.iter().zip(&dir).map(|(a, b)| a + s * b).collect());
        let eps = 3e-3f32;
        let fd = (at(m, eps) - at(m, -eps)) / (2.0 * eps as f64);
        let est: f64 = gx.iter().zip(&dir).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        worst = worst.max((est - fd).abs() / fd.abs().max(1e-12));
    }
    worst
}

// The gradient of the gradient by central differences of input gradients (relative step
// h = 1e-5, the default) against central differences of the cosine loss along random input
// directions (step 3e-3): within 2% on the lenet and the mlp (1.2% at worst in the directions drawn). Larger steps cross ReLU and
// max-pool switches (the input gradient jumps there) and are wrong by up to 10x, which is why
// the default step is small.
#[test]
fn the_gradient_of_the_cosine_loss_matches_input_space_finite_differences() {
    for (spec, shape) in [("use = 'lenet'", vec![1, 28, 28]), ("use = 'mlp'\nhidden = [32]", vec![1, 8, 8])] {
        let mut m = model(spec, &shape, 10);
        let mut rng = RngStream::new(5);
        let p = m.init(&mut rng);
        let d: usize = shape.iter().product();
        let truth = batch(blob(shape[1], shape[2], 3.0, 4.0), vec![3], &shape, 10);
        let mut target = fedsgd_update(m.as_mut(), &p, &truth);
        target.scale(-1.0);
        let x0: Vec<f32> = (0..d).map(|_| rng.uniform() as f32).collect();
        let h = InvertGradients::default().fd_step;
        let mut gx = Vec::new();
        cosine_loss_grad(m.as_mut(), &p, &batch(x0.clone(), vec![3], &shape, 10), &target, h, &mut gx).unwrap();
        let loss = |m: &mut dyn Model, x: Vec<f32>| {
            cosine_loss_grad(m, &p, &batch(x, vec![3], &shape, 10), &target, h, &mut Vec::new()).unwrap()
        };
        let worst = worst_directional_gap(m.as_mut(), &x0, &gx, 4, &mut rng, &loss);
        assert!(
            worst < 0.02,
            "{spec}: the gradient of the gradient is off finite differences by {worst:.4} (relative)"
        );
    }
}

#[test]
fn the_analytic_first_layer_inversion_is_exact_for_one_sample() {
    let shape = [1, 8, 8];
    let mut m = model("use = 'mlp'\nhidden = [32]", &shape, 10);
    let p = m.init(&mut RngStream::new(1));
    let x = blob(8, 8, 4.0, 2.0);
    let update = fedsgd_update(m.as_mut(), &p, &batch(x.clone(), vec![7], &shape, 10));
    let rec = analytic_first_layer(&update, 64).expect("the mlp starts with a fully connected layer");
    let err = x.iter().zip(&rec).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-4, "max error {err}");
    // The lenet starts with a convolution: no analytic inversion.
    let lenet = model("use = 'lenet'", &[1, 28, 28], 10);
    let pl = lenet.init(&mut RngStream::new(1));
    assert!(analytic_first_layer(&pl, 784).is_none());
}

#[test]
fn idlg_recovers_the_label_of_a_one_sample_update_and_counts_a_batch() {
    let shape = [1, 28, 28];
    let mut m = model("use = 'lenet'", &shape, 10);
    let mut rng = RngStream::new(2);
    let p = m.init(&mut rng);
    for y in 0..10u32 {
        let x: Vec<f32> = (0..784).map(|_| rng.uniform() as f32).collect();
        let u = fedsgd_update(m.as_mut(), &p, &batch(x, vec![y], &shape, 10));
        assert_eq!(recover_labels(&u, 1).unwrap(), [y]);
    }
    // Four samples of labels {1, 1, 4, 8} on an untrained model: the counting estimate.
    let x: Vec<f32> = (0..4 * 784).map(|_| rng.uniform() as f32).collect();
    let u = fedsgd_update(m.as_mut(), &p, &batch(x, vec![1, 4, 1, 8], &shape, 10));
    assert_eq!(recover_labels(&u, 4).unwrap(), [1, 1, 4, 8]);
    // Skewed counts: three of class 0 among eight.
    let labels = vec![0, 0, 0, 1, 2, 3, 4, 5];
    let x: Vec<f32> = (0..8 * 784).map(|_| rng.uniform() as f32).collect();
    let u = fedsgd_update(m.as_mut(), &p, &batch(x, labels.clone(), &shape, 10));
    assert_eq!(recover_labels(&u, 8).unwrap(), labels);
}

#[test]
fn inversion_recovers_a_one_sample_image_far_above_the_mean_image() {
    let shape = [1, 8, 8];
    let mut m = model("use = 'mlp'\nhidden = [64]", &shape, 10);
    let p = m.init(&mut RngStream::new(3));
    let x = blob(8, 8, 3.0, 5.0);
    let update = fedsgd_update(m.as_mut(), &p, &batch(x.clone(), vec![2], &shape, 10));
    let obs = Observed { global: &p, update: &update, samples: 1, shape: shape.to_vec(), classes: 10 };
    let attack = InvertGradients { iterations: 400, tv: 1e-3, labels: LabelSource::Idlg, ..Default::default() };
    let labels = recover_labels(&update, 1).unwrap();
    let rec = attack.invert(m.as_mut(), &obs, &labels, &mut RngStream::new(4)).unwrap();
    let mean = vec![x.iter().sum::<f32>() / 64.0; 64];
    let (got, base) = (psnr(&x, &rec.x, 1.0), psnr(&x, &mean, 1.0));
    assert!(got > base + 10.0, "PSNR {got:.2} dB vs the mean image's {base:.2} dB");
}

#[test]
fn film_recovers_the_bag_exactly_and_a_memorised_sequence_in_order() {
    // A transformer language model trained on next token = current + 1 (mod V).
    const V: usize = 12;
    const T: usize = 6;
    let mut m = model("use = 'transformer'\ndim = 16\nheads = 2", &[T], V);
    let mut rng = RngStream::new(9);
    let mut p = m.init(&mut rng);
    let chains = |starts: &[usize]| {
        let mut b = batch(Vec::new(), vec![0; starts.len()], &[T], V);
        for &s in starts {
            b.x.extend((0..T).map(|t| ((s + t) % V) as f32));
            b.targets.extend((0..T).map(|t| ((s + t + 1) % V) as u32));
        }
        b
    };
    let train =
        fedkit_core::optim::LocalTrain { optimizer: fedkit_core::optim::OptimizerKind::Adam, ..Default::default() };
    let mut opt = fedkit_core::optim::Optimizer::new(&train, &p.layout());
    let mut g = p.zeros_like();
    for _ in 0..200 {
        let starts: Vec<usize> = (0..8).map(|_| rng.below(V as u64) as usize).collect();
        m.loss_grad(&mut p, &chains(&starts), &mut g, &mut rng).unwrap();
        opt.step(p.as_mut_slice(), g.as_slice(), 0.01);
    }
    // A client's FedSGD update on the sequence 3 4 5 6 7 8.
    let client = chains(&[3]);
    let update = fedsgd_update(m.as_mut(), &p, &client);
    let bag = bag_of_words(&update, EMBEDDING).unwrap();
    assert_eq!(bag, (3..9).collect(), "the rows that moved are the input tokens");
    let beams = beam_search(m.as_mut(), &p, &bag, T, V, 8, 2).unwrap();
    assert_eq!(beams[0].tokens, [3, 4, 5, 6, 7, 8], "{beams:?}");
}

// The unrolled matching loss (three SGD steps) has the gradient finite differences in input space
// give, on the mlp; with one step it is the naive loss, since cosine ignores the scale -lr.
#[test]
fn the_unrolled_gradient_matches_finite_differences() {
    let shape = [1, 8, 8];
    let mut m = model("use = 'mlp'\nhidden = [32]", &shape, 10);
    let mut rng = RngStream::new(6);
    let p = m.init(&mut rng);
    let truth = batch(blob(8, 8, 3.0, 4.0), vec![3], &shape, 10);
    // The client's update of three steps at rate 0.1.
    let mut theta = p.clone();
    for _ in 0..3 {
        let g = param_gradient(m.as_mut(), &theta, &truth).unwrap();
        theta.axpy(-0.1, &g);
    }
    let update = theta.sub(&p);
    let x0: Vec<f32> = (0..64).map(|_| rng.uniform() as f32).collect();
    let h = InvertGradients::default().fd_step;
    let mut gx = Vec::new();
    unrolled_loss_grad(m.as_mut(), &p, &batch(x0.clone(), vec![3], &shape, 10), &update, 3, 0.1, h, &mut gx).unwrap();
    let loss = |m: &mut dyn Model, x: Vec<f32>| {
        unrolled_loss_grad(m, &p, &batch(x, vec![3], &shape, 10), &update, 3, 0.1, h, &mut Vec::new()).unwrap()
    };
    let worst = worst_directional_gap(m.as_mut(), &x0, &gx, 3, &mut rng, &loss);
    assert!(worst < 0.02, "the unrolled gradient is off finite differences by {worst:.4} (relative)");
    // One step: the same loss as the naive attack.
    let b = batch(x0, vec![3], &shape, 10);
    let mut g1 = Vec::new();
    let one_step = fedsgd_update(m.as_mut(), &p, &truth);
    let unrolled = unrolled_loss_grad(m.as_mut(), &p, &b, &one_step, 1, 0.1, h, &mut g1).unwrap();
    let mut neg = one_step.clone();
    neg.scale(-1.0);
    let naive = cosine_loss_grad(m.as_mut(), &p, &b, &neg, h, &mut gx).unwrap();
    assert!((unrolled - naive).abs() < 1e-5, "{unrolled} vs {naive}");
}

/// A logreg on 8x8 images that calls an image class 1 when its left half is brighter than its
/// right half, class 0 otherwise (and gives any further class a logit of 0).
fn left_right_classifier(classes: usize) -> (Box<dyn Model>, Params) {
    let m = model("use = \"logreg\"", &[1, 8, 8], classes);
    let mut w = m.init(&mut RngStream::new(0));
    let n = w.len();
    let v = w.as_mut_slice();
    v.iter_mut().for_each(|x| *x = 0.0);
    for i in 0..64 {
        let left = if i % 8 < 4 { 1.0 } else { -1.0 };
        v[i * classes] = -left;
        v[i * classes + 1] = left;
    }
    assert_eq!(n, (64 + 1) * classes);
    (m, w)
}

fn images_in_unit_box(n: usize, classes: usize) -> fedkit_core::Dataset {
    let mut rng = RngStream::new(9);
    fedkit_core::Dataset {
        name: "unit".into(),
        x: (0..n * 64).map(|_| rng.uniform() as f32).collect(),
        y: (0..n).map(|i| (i % classes) as u32).collect(),
        feature_shape: vec![1, 8, 8],
        classes,
        users: None,
        targets: Vec::new(),
    }
}

#[test]
fn the_gan_generator_learns_the_target_class_of_the_shared_model() {
    use fedkit_methods::privacy_attacks::gan_leakage::{GanLeakage, labelled};
    let (mut m, w) = left_right_classifier(2);
    let stage =
        GanLeakage { target: 1, fake: 0, steps: 150, batch: 16, latent: 8, hidden: 32, ..GanLeakage::default() };
    let g = stage.generator(&[1, 8, 8], &images_in_unit_box(4, 2));
    let mut st = stage.initial_state(&g, 5, 0);
    let confidence = |m: &mut dyn Model, phi: &[f32]| {
        let x = g.generate(phi, g.noise(64, &mut RngStream::new(77)));
        let mut l = Vec::new();
        m.per_example_loss(&w, &labelled(x.clone(), &[1, 8, 8], 2, 1), &mut l).unwrap();
        let left: f64 = x.chunks(8).flat_map(|r| &r[..4]).map(|&v| v as f64).sum();
        let right: f64 = x.chunks(8).flat_map(|r| &r[4..]).map(|&v| v as f64).sum();
        (l.iter().map(|&l| (-l as f64).exp()).sum::<f64>() / 64.0, (left - right) / (64.0 * 32.0))
    };
    let (before, gap0) = confidence(m.as_mut(), &st.phi);
    assert!(
        (0.2..0.8).contains(&before) && gap0.abs() < 0.03,
        "an untrained generator is not yet class 1: {before}, {gap0}"
    );
    stage.train_generator(&g, m.as_mut(), &w, &[1, 8, 8], 2, &mut st, &mut RngStream::new(1)).unwrap();
    let (after, gap) = confidence(m.as_mut(), &st.phi);
    assert!(after > 0.99, "the shared model calls the generated images class 1 with confidence {after}");
    assert!(gap > 0.05, "the generated images are brighter on the left: mean gap {gap}");
}

#[test]
fn the_gan_insider_drops_the_target_class_and_injects_samples_labelled_fake() {
    use fedkit_core::{ClientCtx, ClientData, Extras, LocalTrain, Stage};
    use fedkit_methods::privacy_attacks::gan_leakage::GanLeakage;
    let (mut m, w1) = left_right_classifier(3);
    let stage =
        GanLeakage { target: 1, fake: 0, steps: 3, batch: 4, latent: 4, hidden: 8, inject: 5, ..GanLeakage::default() };
    let data = std::sync::Arc::new(images_in_unit_box(12, 3));
    let g = stage.generator(&[1, 8, 8], &data);
    // The insider holds samples 2..10 and relabelled sample 3 (true class 0) as class 1 and
    // sample 4 (true class 1) as class 2: both are dropped, by its label and by the true one.
    let idx: std::sync::Arc<[u32]> = (2..10).collect();
    let own: std::sync::Arc<[u32]> = idx
        .iter()
        .map(|&i| match i {
            3 => 1,
            4 => 2,
            i => i % 3,
        })
        .collect();
    let mut w2 = w1.clone();
    w2.as_mut_slice().iter_mut().for_each(|v| *v *= -0.5);
    let (broadcast, train) = (Extras::default(), LocalTrain::default());
    let mut mem = Extras::default();
    for (round, w) in [(2u32, &w1), (5, &w2)] {
        let cx = ClientCtx {
            round,
            client: 4,
            seed: 1,
            global: w,
            broadcast: &broadcast,
            train: &train,
            epochs: 1,
            malicious: true,
            step: &fedkit_core::PlainStep,
            loss: &fedkit_core::CrossEntropyLoss,
            train_hook: None,
        };
        let mut d = ClientData { idx: idx.clone(), labels: Some(own.clone()), ..ClientData::whole(data.clone()) };
        stage.on_data_with_model(&cx, m.as_mut(), &mut d, &mut mem).unwrap();
        let labels: Vec<u32> = (0..d.len()).map(|p| d.label(p)).collect();
        // Kept: samples 2 (class 2), 5 (2), 6 (0), 8 (2), 9 (0); then the 5 fakes.
        assert_eq!(labels, [2, 2, 0, 2, 0, 0, 0, 0, 0, 0], "round {round}");
        let kept_x: Vec<f32> = [2usize, 5, 6, 8, 9].iter().flat_map(|&i| data.features(i).to_vec()).collect();
        assert_eq!(&d.data.x[..5 * 64], &kept_x[..], "round {round}: the insider's own features, untouched");
        let st = GanLeakage::state_in(&mem).unwrap();
        let fakes = g.generate(&st.phi, g.noise(5, &mut cx.rng("gan.inject")));
        assert_eq!(&d.data.x[5 * 64..], &fakes[..], "round {round}: then the generator's samples");
        let benign = ClientCtx { malicious: false, ..cx };
        let mut untouched = ClientData::whole(data.clone());
        stage.on_data_with_model(&benign, m.as_mut(), &mut untouched, &mut Extras::default()).unwrap();
        assert_eq!(untouched.len(), 12, "a benign client's data stays");
        assert!(stage.on_data(&cx, &mut d, &mut Extras::default()).is_err(), "without the model it refuses");
    }
    assert_eq!(GanLeakage::rounds_in(&mem), [2, 5]);
    let again = {
        let mut s = stage.initial_state(&g, 1, 4);
        for (round, w) in [(2u64, &w1), (5, &w2)] {
            let mut rng = RngStream::derive(1, "gan.train", round, 4);
            stage.train_generator(&g, m.as_mut(), w, &[1, 8, 8], 3, &mut s, &mut rng).unwrap();
        }
        s
    };
    assert_eq!(
        GanLeakage::state_in(&mem).unwrap(),
        again,
        "the replay from the seed gives the insider's generator bit for bit"
    );
}

#[test]
fn instahide_with_one_image_and_no_mask_is_the_plain_step() {
    use fedkit_core::{ClientCtx, Extras, LocalTrain, PlainStep, Stage, StepCtx};
    use fedkit_methods::privacy_attacks::instahide::InstaHide;
    let mut m = model("use = \"lenet\"", &[1, 28, 28], 10);
    let mut w = m.init(&mut RngStream::new(2));
    let mut rng = RngStream::new(3);
    let b = batch((0..4 * 784).map(|_| rng.uniform() as f32).collect(), vec![3, 1, 4, 1], &[1, 28, 28], 10);
    let (broadcast, train) = (Extras::default(), LocalTrain::default());
    let cx = ClientCtx {
        round: 1,
        client: 0,
        seed: 1,
        global: &w.clone(),
        broadcast: &broadcast,
        train: &train,
        epochs: 1,
        malicious: false,
        step: &PlainStep,
        loss: &fedkit_core::CrossEntropyLoss,
        train_hook: None,
    };
    let sc = StepCtx { round: 1, step: 0, lr: 0.1, weight_decay: 0.0 };
    let step_grad = |ih: InstaHide, m: &mut dyn Model, w: &mut Params| {
        let step = ih.local_step(&cx, &PlainStep).unwrap().expect("instahide replaces the step");
        let mut g = w.zeros_like();
        let loss = step.grad(&sc, m, w, &mut b.clone(), &mut g, &mut RngStream::new(5)).unwrap();
        (loss, g)
    };
    let (loss, g) = step_grad(InstaHide { k: 1, upper: 1.0, mask: false, center: 0.5 }, m.as_mut(), &mut w);
    let mut plain = w.zeros_like();
    let want = m.loss_grad(&mut w, &b, &mut plain, &mut RngStream::new(5)).unwrap();
    assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
    let gap = g.sub(&plain).l2() / plain.l2();
    assert!(gap < 1e-4, "relative gradient gap {gap}");
    let (_, masked) = step_grad(InstaHide::default(), m.as_mut(), &mut w);
    assert!(masked.sub(&plain).l2() / plain.l2() > 0.1, "the encoded step trains on other inputs");
}
