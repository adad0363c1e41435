//! `[compress]` (issue 14): a pruned coordinate stays exactly zero through local training, the
//! server rule and aggregation; a method whose steps never fall due changes nothing; the
//! method's state survives checkpoint and resume.

use fedkit_engine::{Engine, RunConfig, drive, resume, start};

mod common;

const BASE: &[&str] = &[
    "rounds=4",
    "data.synthetic.users=8",
    "sampling.per_round=4",
    "client.batch_size=10",
    "client.lr=0.05",
    "model.use=\"mlp\"",
    "model.hidden=[16]",
];

fn cfg(sets: &[&str]) -> RunConfig {
    common::config(BASE, sets).unwrap()
}

fn bits(e: &Engine) -> (String, Vec<u32>) {
    let json = e.records.iter().map(|r| r.to_json() + "\n").collect();
    (json, e.global.as_slice().iter().map(|v| v.to_bits()).collect())
}

// Server momentum (FedAvgM) would move a coordinate whose deltas are zero; the mask holds it.
#[test]
fn pruned_weights_stay_zero_through_training_and_aggregation() {
    let sets = [
        "algorithm.use=\"fedavgm\"",
        "compress={use=\"lottery_ticket\", every=1, fraction=0.5}",
        "output.keep_clients=[0, 1, 2, 3, 4, 5, 6, 7]",
    ];
    let mut e = Engine::new(cfg(&sets)).unwrap();
    for _ in 0..4 {
        e.run_round().unwrap();
        let Some(mask) = e.compress.as_ref().and_then(|c| c.mask()).cloned() else {
            assert_eq!(e.round, 1, "the first pruning step comes before round 2");
            continue;
        };
        let pruned: Vec<usize> = (0..e.global.len()).filter(|&i| !mask.keeps(i)).collect();
        if e.round > 1 {
            // Round 2 on trains under the mask: every kept update is zero where it prunes.
            assert!(!e.kept_updates.is_empty());
            for u in &e.kept_updates {
                assert!(pruned.iter().all(|&i| u.delta.as_slice()[i] == 0.0), "client {}", u.client);
            }
        }
        let g = e.global.as_slice();
        assert!(pruned.iter().all(|&i| g[i] == 0.0), "round {}", e.round);
        let rec = e.records.last().unwrap();
        assert_eq!(rec.get("density"), Some(0.5f64.powi(e.round as i32 - 1)), "round {}", e.round);
    }
}

#[test]
fn a_method_that_never_prunes_changes_nothing() {
    let plain = common::run(cfg(&[]));
    let idle = common::run(cfg(&["compress={use=\"lottery_ticket\", every=100}"]));
    let (a, b) = (bits(&plain), bits(&idle));
    assert_eq!(a.1, b.1);
    assert_eq!(a.0.replace(",\"density\":1", ""), b.0.replace(",\"density\":1", ""));
}

#[test]
fn the_mask_and_rewind_weights_survive_resume_bit_for_bit() {
    let sets = ["checkpoint_every=1", "compress={use=\"lottery_ticket\", every=1, rewind_round=0}"];
    let dir = |n: &str| {
        let d = std::env::temp_dir().join(format!("fedkit-compress-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    };
    let (a, b) = (dir("full"), dir("split"));
    let (mut e, mut out) = start(cfg(&sets), &a).unwrap();
    drive(&mut e, &mut out, None, &mut |_| {}).unwrap();
    let (mut e1, mut out1) = start(cfg(&sets), &b).unwrap();
    drive(&mut e1, &mut out1, Some(2), &mut |_| {}).unwrap();
    drop((e1, out1));
    let (mut e2, mut out2) = resume(&b, None).unwrap();
    drive(&mut e2, &mut out2, None, &mut |_| {}).unwrap();
    assert_eq!(bits(&e), bits(&e2));
    assert_eq!(std::fs::read(a.join("metrics.jsonl")).unwrap(), std::fs::read(b.join("metrics.jsonl")).unwrap());
}

#[test]
fn a_wrong_compress_table_names_the_key() {
    let e = common::config(BASE, &["compress={use=\"lottery\"}"]).and_then(Engine::new).err().unwrap().to_string();
    assert!(e.contains("compress.use") && e.contains("lottery_ticket"), "{e}");
    let e = common::config(BASE, &["compress={use=\"lottery_ticket\", every=2, rewind_round=3}"])
        .and_then(Engine::new)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("compress.rewind_round"), "{e}");
}

// SynFlow's scores obey the paper's conservation law: with zero biases, the synaptic flow
// through every weight layer of a ReLU network sums to the same R (the sum of the logits at
// the absolute weights on an input of ones).
#[test]
fn synflow_scores_conserve_the_flow_layer_by_layer() {
    use fedkit_core::{Batch, Mask, Mode, Outputs, ParamKind, RngStream};
    let entry = fedkit_models::models().iter().find(|e| e.name == "mlp").unwrap();
    let mut t = toml::Table::new();
    t.insert("hidden".into(), toml::Value::Array(vec![toml::Value::Integer(16), toml::Value::Integer(8)]));
    let mut m = (entry.build)(&t, &mut toml::Table::new()).unwrap().instantiate(&[12], 3).unwrap();
    let mut w = m.init(&mut RngStream::new(4));
    let layout = w.layout().clone();
    for e in layout.entries().iter().filter(|e| e.kind == ParamKind::Bias) {
        w.as_mut_slice()[e.range()].fill(0.0);
    }
    let scores =
        fedkit_methods::model_compression::synflow::synaptic_flow(m.as_mut(), &w, &Mask::dense(w.len()), &[12], 3)
            .unwrap();
    let mut abs = w.clone();
    abs.as_mut_slice().iter_mut().for_each(|v| *v = v.abs());
    let mut out = Outputs::default();
    let batch = Batch { x: vec![1.0; 12], y: vec![0], feature_shape: vec![12], classes: 3, targets: Vec::new() };
    m.forward(&abs, &batch, Mode::Eval, &mut out).unwrap();
    let r: f64 = out.logits.iter().map(|&v| v as f64).sum();
    let weights: Vec<_> = layout.entries().iter().filter(|e| e.kind == ParamKind::Weight).collect();
    assert_eq!(weights.len(), 3);
    for e in weights {
        let flow: f64 = scores[e.range()].iter().sum();
        assert!((flow - r).abs() <= 1e-4 * r, "{}: flow {flow} vs R {r}", e.name);
    }
}

// Iterative SynFlow keeps every layer alive at a density where one-shot magnitude pruning at
// initialisation removes a whole layer (layer collapse).
#[test]
fn synflow_avoids_the_layer_collapse_of_magnitude_pruning() {
    let alive = |compress: &str| -> Vec<usize> {
        let mut e = Engine::new(cfg(&["model.hidden=[64]", "rounds=1", compress])).unwrap();
        e.run_round().unwrap();
        let mask = e.compress.as_ref().and_then(|c| c.mask()).unwrap().clone();
        let layout = e.global.layout().clone();
        layout
            .entries()
            .iter()
            .filter(|en| en.kind == fedkit_core::ParamKind::Weight)
            .map(|en| en.range().filter(|&i| mask.keeps(i)).count())
            .collect()
    };
    let flow = alive("compress={use=\"synflow\", density=0.01, iterations=50}");
    let magnitude = alive("compress={use=\"synflow\", density=0.01, iterations=1, score=\"magnitude\"}");
    assert!(flow.iter().all(|&k| k > 0), "synflow keeps every layer: {flow:?}");
    assert!(magnitude.contains(&0), "magnitude at init collapses a layer: {magnitude:?}");
}

#[test]
fn what_cannot_train_under_a_mask_is_refused() {
    let refused = |sets: &[&str]| common::config(BASE, sets).and_then(Engine::new).err().unwrap().to_string();
    let lt = "compress={use=\"lottery_ticket\"}";
    let e = refused(&[lt, "algorithm.use=\"fedmid\""]);
    assert!(e.contains("compress") && e.contains("fedmid"), "{e}");
    let e = refused(&[lt, "downlink.use=\"fp16\""]);
    assert!(e.contains("compress") && e.contains("downlink"), "{e}");
}

// A pruned model and its updates travel as sparse messages: at a quarter of the weights both
// byte counts fall well below the dense round's, and the decoded updates are the same values.
#[test]
fn pruned_models_travel_sparse() {
    let e = common::run(cfg(&["compress={use=\"lottery_ticket\", every=1, fraction=0.5}", "rounds=3"]));
    let (r1, r3) = (&e.records[0], &e.records[2]);
    assert_eq!(r3.get("density"), Some(0.25));
    for key in ["bytes_up", "bytes_down"] {
        let (dense, sparse) = (r1.get(key).unwrap(), r3.get(key).unwrap());
        assert!(sparse < 0.6 * dense, "{key}: {sparse} vs {dense}");
    }
    let plain = common::run(cfg(&["rounds=1"]));
    assert_eq!(plain.records[0].get("bytes_up"), r1.get("bytes_up"), "round 1 is dense");
}
