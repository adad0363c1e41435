//! Compression on the uplink (issue 11): the engine decodes every compressed update from its
//! wire message and counts the message's bytes; uncompressed updates count as their dense
//! message; compressors are deterministic, survive checkpoints, and refuse secure aggregation.

use fedkit_engine::{Engine, RunConfig};

mod common;
use common::run;

const BASE: &[&str] =
    &["rounds=3", "data.synthetic.users=20", "sampling.per_round=5", "eval.every=1000", "eval.initial=false"];

fn cfg(sets: &[&str]) -> fedkit_core::Result<RunConfig> {
    common::config(BASE, sets)
}

#[test]
fn bytes_up_are_the_encoded_messages_lengths() {
    let dense = run(cfg(&[]).unwrap());
    let d = dense.global.len();
    let per_client = fedkit_core::wire::dense_len(d, &Default::default()).unwrap() as f64;
    assert_eq!(dense.records[0].get("bytes_up"), Some(5.0 * per_client));
    for (stage, at_most) in
        [("fp16", 0.51), ("bf16", 0.51), ("topk", 0.03), ("randk", 0.03), ("qsgd", 0.2), ("signsgd", 0.05)]
    {
        let p = format!(r#"pipeline=[{{ use = "{stage}" }}]"#);
        let e = run(cfg(&[&p]).unwrap());
        let up = e.records[0].get("bytes_up").unwrap();
        assert!(up > 0.0 && up <= at_most * 5.0 * per_client, "{stage}: {up} bytes against {per_client} dense");
    }
}

#[test]
fn compressors_are_deterministic_and_resume_with_their_residuals() {
    let p = r#"pipeline=[{ use = "topk", fraction = 0.05, error_feedback = true }]"#;
    let a = run(cfg(&[p, "threads=1"]).unwrap());
    let b = run(cfg(&[p, "threads=2"]).unwrap());
    assert_eq!(a.global.as_slice(), b.global.as_slice());
    // Stopping after round 2 and resuming from the checkpoint gives the same model.
    let dir = tempfile_dir("fedkit-compress-resume");
    let mut c = cfg(&[p, "checkpoint_every=1"]).unwrap();
    c.rounds = 2;
    let mut e = Engine::new(c).unwrap();
    for _ in 0..2 {
        e.run_round().unwrap();
    }
    e.save_checkpoint(&dir).unwrap();
    let mut resumed = Engine::new(cfg(&[p]).unwrap()).unwrap();
    resumed.load_checkpoint(&dir).unwrap();
    resumed.run_round().unwrap();
    assert_eq!(resumed.global.as_slice(), a.global.as_slice());
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn secure_aggregation_is_refused_and_late_changes_go_dense() {
    let err = |sets: &[&str]| match cfg(sets).and_then(Engine::new) {
        Ok(mut e) => e.run_round().err().map(|e| e.to_string()).unwrap_or_else(|| format!("{sets:?} was accepted")),
        Err(e) => e.to_string(),
    };
    let e = err(&[r#"pipeline=[{ use = "qsgd" }]"#, "secure_aggregation.use=\"secagg\""]);
    assert!(e.contains("secure_aggregation.use") && e.contains("linear"), "{e}");
    // A stage after the compressor changes what is sent: it goes dense.
    let late = run(cfg(&[r#"pipeline=[{ use = "qsgd" }, { use = "clip", max_norm = 1e-6 }]"#]).unwrap());
    let dense = run(cfg(&[]).unwrap());
    assert_eq!(late.records[0].get("bytes_up"), dense.records[0].get("bytes_up"));
}

#[test]
fn compression_composes_with_dp_in_the_right_order() {
    let err = |sets: &[&str]| match cfg(sets).and_then(Engine::new) {
        Ok(mut e) => e.run_round().err().map(|e| e.to_string()).unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    let poisson = ["sampling.scheme=\"poisson\"", "sampling.rate=0.5"];
    // DP first, then the compressor: runs, logs epsilon, sends fewer bytes.
    let ok =
        r#"pipeline=[{ use = "dp_fixed_clip", clip = 0.5, noise_multiplier = 1.0 }, { use = "qsgd", levels = 4 }]"#;
    let e = run(cfg(&[poisson[0], poisson[1], ok]).unwrap());
    assert!(e.records[2].get("epsilon").is_some());
    // The majority vote replaces the noised mean: refused with central DP and robust rules.
    let vote = r#"pipeline=[{ use = "dp_fixed_clip" }, { use = "signsgd", vote = true }]"#;
    assert!(err(&[poisson[0], poisson[1], vote]).contains("majority vote"));
    let e = err(&[r#"pipeline=[{ use = "signsgd", vote = true }]"#, "aggregator.use=\"median\""]);
    assert!(e.contains("aggregator.use"), "{e}");
    // The other order: refused, naming the fix.
    let bad = r#"pipeline=[{ use = "qsgd" }, { use = "dp_fixed_clip" }]"#;
    let msg = err(&[poisson[0], poisson[1], bad]);
    assert!(msg.contains("put the compressor after"), "{msg}");
}

#[test]
fn dadaquant_starts_at_q_min_and_sends_fewer_bytes_than_static_qsgd_at_q_max() {
    let dq = run(cfg(&[r#"pipeline=[{ use = "dadaquant", q_min = 1, q_max = 64, bucket = 16 }]"#]).unwrap());
    let st = run(cfg(&[r#"pipeline=[{ use = "qsgd", levels = 64, bucket = 16 }]"#]).unwrap());
    assert_eq!(dq.records[0].get("dadaquant_q"), Some(1.0));
    let (a, b) = (dq.records[0].get("bytes_up").unwrap(), st.records[0].get("bytes_up").unwrap());
    assert!(a < b, "{a} vs {b}");
}

/// EF21 without compression and momentum, every client every round, is distributed SGD: the
/// first step is x - gamma mean_i grad_i, as FedAvg with one local SGD step of lr gamma and
/// the unweighted mean; later, EF21-PP keeps g the mean of all clients' g_i.
#[test]
fn ef21_without_compression_or_momentum_is_distributed_sgd() {
    let all = ["sampling.per_round=20", "rounds=1"];
    let ef = run(cfg(&[
        all[0],
        all[1],
        "algorithm.use=\"ef21_sgdm\"",
        "algorithm.lr=0.05",
        "algorithm.momentum=1.0",
        "algorithm.fraction=1.0",
    ])
    .unwrap());
    let sgd = run(cfg(&[
        all[0],
        all[1],
        "client.lr=0.05",
        "client.max_steps=1",
        "client.momentum=0.0",
        "aggregator.weighted=false",
    ])
    .unwrap());
    let d = ef.global.as_slice().iter().zip(sgd.global.as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d < 1e-6, "max difference {d}");
    // DIANA without compression (random-k of every coordinate) is the same first step.
    let di =
        run(cfg(&[all[0], all[1], "algorithm.use=\"diana\"", "algorithm.lr=0.05", "algorithm.fraction=1.0"]).unwrap());
    let d = di.global.as_slice().iter().zip(sgd.global.as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d < 1e-6, "diana: max difference {d}");
    // With top-k 5% the uplink is sparse.
    let k = run(cfg(&["algorithm.use=\"ef21_sgdm\"", "algorithm.fraction=0.05"]).unwrap());
    let dense = run(cfg(&[]).unwrap());
    assert!(k.records[0].get("bytes_up").unwrap() < 0.15 * dense.records[0].get("bytes_up").unwrap());
}

#[test]
fn downlink_compression_counts_its_bytes_tracks_the_model_and_resumes() {
    // Lossless top-k (every coordinate) is the plain broadcast, up to rounding of w^ + (w - w^).
    let plain = run(cfg(&[]).unwrap());
    let all = run(cfg(&["downlink.use=\"topk\"", "downlink.fraction=1.0"]).unwrap());
    let d = plain.global.as_slice().iter().zip(all.global.as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d < 1e-5, "max difference {d}");
    // With everyone every round, fp16 halves the broadcast.
    let full = ["sampling.per_round=20", "downlink.use=\"fp16\""];
    let half = run(cfg(&full).unwrap());
    let dense = run(cfg(&full[..1]).unwrap());
    let (h, p) = (half.records[1].get("bytes_down").unwrap(), dense.records[1].get("bytes_down").unwrap());
    assert!(h < 0.52 * p && h > 0.45 * p, "{h} vs {p}");
    // A client that missed rounds catches up on every message it missed, or takes the dense
    // model when that is cheaper: with 5 of 20 a round, round 2 costs more than 5 messages.
    let some = run(cfg(&["downlink.use=\"fp16\""]).unwrap());
    let (r1, r2) = (some.records[0].get("bytes_down").unwrap(), some.records[1].get("bytes_down").unwrap());
    assert!(r2 > r1 && r2 <= plain.records[1].get("bytes_down").unwrap(), "{r1} then {r2}");
    // Top-k 10% with primal error feedback: the shadow follows the model.
    let sets = ["downlink.use=\"topk\"", "downlink.fraction=0.1", "rounds=6"];
    let e = run(cfg(&sets).unwrap());
    let shadow = &e.downlink.as_ref().expect("a shadow model").shadow;
    let lag: f32 = e.global.as_slice().iter().zip(shadow.as_slice()).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
    let start = Engine::new(cfg(&sets).unwrap()).unwrap().global;
    let moved: f32 = e.global.as_slice().iter().zip(start.as_slice()).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
    assert!(lag < 0.5 * moved, "shadow lags by {lag}, the model moved {moved}");
    assert!(e.records[0].get("bytes_down").unwrap() < 0.2 * plain.records[0].get("bytes_down").unwrap());
    // Stop after round 3, resume: the same model, bit for bit.
    let dir = tempfile_dir("fedkit-downlink-resume");
    let mut c = cfg(&sets).unwrap();
    c.rounds = 3;
    let mut a = Engine::new(c).unwrap();
    for _ in 0..3 {
        a.run_round().unwrap();
    }
    a.save_checkpoint(&dir).unwrap();
    let mut b = Engine::new(cfg(&sets).unwrap()).unwrap();
    b.load_checkpoint(&dir).unwrap();
    for _ in 0..3 {
        b.run_round().unwrap();
    }
    assert_eq!(b.global.as_slice(), e.global.as_slice());
    let err = cfg(&["downlink.use=\"topk\"", "downlink.fraction=0"]).and_then(Engine::new).err().expect("refused");
    assert!(err.to_string().contains("downlink.fraction"), "{err}");
}
