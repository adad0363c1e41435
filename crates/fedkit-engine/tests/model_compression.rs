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
