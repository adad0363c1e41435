//! The threat model, attacks and defences inside the engine: attacks change only the attacking
//! clients' updates, the attack schedule holds, filtering defences log detection rates, and a
//! boosted backdoor enters the global model in one round (Fashion-MNIST, when installed).

use fedkit_engine::{Engine, RunConfig};

mod common;

const BASE: &[&str] = &[
    "rounds=4",
    "data.synthetic.users=12",
    "sampling.per_round=12",
    "client.epochs=1",
    "client.batch_size=10",
    "client.lr=0.05",
    "eval.every=1000",
    "eval.initial=false",
];

fn cfg(sets: &[&str]) -> RunConfig {
    common::config(BASE, sets).unwrap()
}

/// Each round's updates (by client) as sent, with the engine's attacking flags.
fn updates(c: RunConfig) -> Vec<Vec<(u32, Vec<f32>, bool)>> {
    let mut e = Engine::new(c).unwrap();
    let mut rounds = Vec::new();
    // A stage that records what reaches the server.
    struct Tap(std::sync::Arc<std::sync::Mutex<Vec<Vec<(u32, Vec<f32>, bool)>>>>);
    impl fedkit_core::Stage for Tap {
        fn on_cohort(
            &mut self,
            r: &fedkit_core::RoundCtx,
            us: &mut Vec<fedkit_core::Update>,
        ) -> fedkit_core::Result<()> {
            let mut v: Vec<(u32, Vec<f32>, bool)> =
                us.iter().map(|u| (u.client, u.delta.as_slice().to_vec(), r.malicious[u.client as usize])).collect();
            v.sort_by_key(|x| x.0);
            self.0.lock().unwrap().push(v);
            Ok(())
        }
    }
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    e.stages.push(fedkit_engine::config::StageSlot {
        stage: Box::new(Tap(log.clone())),
        on: fedkit_engine::config::Scope::All,
    });
    while e.round < e.cfg.rounds {
        e.run_round().unwrap();
    }
    rounds.extend(log.lock().unwrap().drain(..));
    rounds
}

// An attack scoped to the malicious clients changes their updates and nothing else (compared in
// the first attack round, from the same global model); outside the attack rounds (start/stop,
// single shots) nobody attacks.
#[test]
fn attacks_touch_only_attacking_clients_and_follow_the_schedule() {
    let base = ["threat.malicious_fraction=0.25"];
    let clean = updates(cfg(&base));
    for attack in
        ["sign_flip", "gaussian", "model_replacement", "alie", "ipm", "min_max", "min_sum", "fang", "label_flip"]
    {
        let pipeline = format!("pipeline=[{{ use = \"{attack}\", on = \"malicious\" }}]");
        let attacked = updates(cfg(&[base[0], &pipeline, "threat.start_round=2", "threat.stop_round=3"]));
        for (round, (a, c)) in attacked.iter().zip(&clean).enumerate() {
            let round = round + 1;
            let active = (2..=3).contains(&round);
            for ((ca, da, bad), (cc, dc, _)) in a.iter().zip(c) {
                assert_eq!(ca, cc);
                assert_eq!(*bad, active && *bad, "round {round}: attacking flags follow the schedule");
                if round > 2 {
                    continue; // the global models differ from round 3 on
                }
                if *bad {
                    assert_ne!(da, dc, "`{attack}` round {round}: client {ca} attacks");
                } else {
                    assert_eq!(da, dc, "`{attack}` round {round}: benign client {ca} is unchanged");
                }
            }
            assert_eq!(a.iter().any(|x| x.2), active, "`{attack}` round {round}");
        }
    }
    // single_shot: only the listed rounds.
    let shot =
        updates(cfg(&[base[0], "pipeline=[{ use = \"sign_flip\", on = \"malicious\" }]", "threat.single_shot=[3]"]));
    let rounds: Vec<bool> = shot.iter().map(|r| r.iter().any(|x| x.2)).collect();
    assert_eq!(rounds, vec![false, false, true, false]);
}

// per_round_min forces attackers into every attack round's cohort.
#[test]
fn per_round_min_puts_attackers_into_the_cohort() {
    let c = cfg(&["sampling.per_round=4", "threat.malicious_fraction=0.1", "threat.per_round_min=1", "rounds=8"]);
    let rounds = updates(c);
    assert!(
        rounds.iter().all(|r| r.len() == 4 && r.iter().filter(|x| x.2).count() >= 1),
        "every cohort has an attacker"
    );
}

// A filtering defence logs its detection rates: Krum keeps one benign update against large
// sign-flipped ones (TPR 1, FPR (n_benign - 1) / n_benign); coordinate-wise rules log none.
#[test]
fn filtering_defences_log_detection_rates() {
    let attack = "pipeline=[{ use = \"sign_flip\", on = \"malicious\", scale = 50.0 }]";
    let mut e =
        Engine::new(cfg(&["threat.malicious_fraction=0.25", attack, "aggregator.use=\"krum\"", "aggregator.f=3"]))
            .unwrap();
    e.run_round().unwrap();
    let r = &e.records[0];
    assert_eq!(r.get("detect_tpr"), Some(1.0), "{r:?}");
    assert!((r.get("detect_fpr").unwrap() - 8.0 / 9.0).abs() < 1e-12);
    let mut e = Engine::new(cfg(&["threat.malicious_fraction=0.25", attack, "aggregator.use=\"median\""])).unwrap();
    e.run_round().unwrap();
    assert!(e.records[0].get("detect_tpr").is_none(), "the median rejects no one");
    // Bad configs get one clear error naming the key.
    for (sets, key) in [
        (vec!["aggregator.use=\"krum\"", "aggregator.f=5"], "aggregator.f"),
        (vec!["aggregator.use=\"bulyan\"", "aggregator.f=3"], "aggregator.f"),
        (vec!["aggregator.use=\"rlr\"", "aggregator.theta=13"], "aggregator.theta"),
        (vec!["pipeline=[{ use = \"sign_flip\", on = \"malicious\" }]"], "pipeline.0.on"),
        (vec!["threat.ids=[40]"], "threat.ids"),
    ] {
        let err = Engine::new(cfg(&sets)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(key), "{sets:?}: {err}");
    }
}

// Bagdasaryan et al.'s model replacement in one shot: one attacker poisons half of its data with
// a plus trigger and boosts its update by n; with the mean, the backdoor is in the global model
// after that round; the run goes on after the attack, so its decay is measured.
#[test]
fn a_boosted_backdoor_enters_the_model_in_one_round() {
    if !std::path::Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let sets = [
        "data.name=\"fashion_mnist\"",
        "data.clients=10",
        "data.subsample=0.1",
        "model.use=\"logreg\"",
        "rounds=6",
        "client.lr=0.05",
        "client.epochs=2",
        "client.batch_size=32",
        "sampling.per_round=10",
        "eval.every=1",
        "eval.test_samples=2000",
        "threat.ids=[0]",
        "threat.single_shot=[5]",
        "pipeline=[{ use = \"backdoor\", on = \"malicious\", target = 7, poison_fraction = 0.5 }, { use = \"model_replacement\", on = \"malicious\", boost = 10.0 }]",
    ];
    let mut all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    all.push("eval.initial=true".into());
    let mut e = Engine::new(RunConfig::load(None, &all).unwrap()).unwrap();
    e.evaluate_initial().unwrap();
    while e.round < e.cfg.rounds {
        e.run_round().unwrap();
    }
    let acc = |r: usize| e.records[r].get("backdoor_acc").unwrap();
    assert!(acc(4) < 0.2, "before the attack the trigger does little: {}", acc(4));
    assert!(acc(5) > 0.8, "after the boosted round the backdoor is in: {}", acc(5));
    assert!(e.records[5].get("test_acc").unwrap() > 0.3);
}

// Every aggregation rule composes with FedAvg, FedProx and SCAFFOLD and a client-side `clip`
// stage, under a sign-flipping attack: every run finishes with a finite model.
#[test]
fn every_defence_composes_with_algorithms_and_stages() {
    for e in fedkit_methods::aggregators() {
        for algo in ["fedavg", "fedprox", "scaffold"] {
            let sets = [
                &format!("aggregator.use=\"{}\"", e.name)[..],
                &format!("algorithm.use=\"{algo}\""),
                "threat.malicious_fraction=0.25",
                "pipeline=[{ use = \"clip\", max_norm = 5.0 }, { use = \"sign_flip\", on = \"malicious\" }]",
                "rounds=2",
            ];
            let mut eng = Engine::new(cfg(&sets)).unwrap_or_else(|err| panic!("{} + {algo}: {err}", e.name));
            while eng.round < eng.cfg.rounds {
                eng.run_round().unwrap_or_else(|err| panic!("{} + {algo}: {err}", e.name));
            }
            assert!(eng.global.is_finite(), "{} + {algo}", e.name);
        }
    }
}

// FoolsGold rejects sybils that send the same update; FLTrust trusts the updates that agree
// with its root-set update and rejects the flipped ones.
#[test]
fn foolsgold_and_fltrust_reject_the_attackers() {
    let sybils = "pipeline=[{ use = \"gaussian\", on = \"malicious\" }, { use = \"ipm\", epsilon = 2.0 }]";
    let mut e =
        Engine::new(cfg(&["threat.malicious_fraction=0.25", sybils, "aggregator.use=\"foolsgold\"", "rounds=1"]))
            .unwrap();
    e.run_round().unwrap();
    assert_eq!(e.records[0].get("detect_tpr"), Some(1.0), "{:?}", e.records[0]);
    let flip = "pipeline=[{ use = \"sign_flip\", on = \"malicious\", scale = 3.0 }]";
    let mut e =
        Engine::new(cfg(&["threat.malicious_fraction=0.25", flip, "aggregator.use=\"fltrust\"", "rounds=1"])).unwrap();
    e.run_round().unwrap();
    assert_eq!(e.records[0].get("detect_tpr"), Some(1.0), "{:?}", e.records[0]);
    assert!(e.records[0].get("detect_fpr").unwrap() < 0.5);
}

// The blind backdoor (the loss computation compromised, clean data) plants the backdoor: with
// attackers training the two-task MGDA loss, backdoor accuracy ends far above the clean run's
// (Fashion-MNIST, when installed).
#[test]
fn the_blind_backdoor_is_learned_from_clean_data() {
    if !std::path::Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let run = |start: &str| {
        let sets = [
            "data.name=\"fashion_mnist\"",
            "data.clients=10",
            "data.subsample=0.1",
            "model.use=\"logreg\"",
            "rounds=8",
            "client.lr=0.05",
            "client.epochs=2",
            "client.batch_size=32",
            "sampling.per_round=10",
            "eval.every=8",
            "eval.test_samples=2000",
            "threat.ids=[0,1,2]",
            start,
            "pipeline=[{ use = \"blind\", on = \"malicious\", target = 7 }]",
        ];
        let mut e = Engine::new(RunConfig::load(None, &sets.map(String::from)).unwrap()).unwrap();
        while e.round < e.cfg.rounds {
            e.run_round().unwrap();
        }
        let last = e.records.last().unwrap();
        (last.get("backdoor_acc").unwrap(), last.get("test_acc").unwrap())
    };
    // The clean run: the same stage, with the attack scheduled after the last round.
    let (clean_bd, clean_acc) = run("threat.start_round=100");
    let (bd, acc) = run("threat.start_round=1");
    eprintln!("blind: backdoor_acc {bd:.3} (clean {clean_bd:.3}), test_acc {acc:.3} (clean {clean_acc:.3})");
    assert!(bd > clean_bd + 0.3 && bd > 0.5, "backdoor accuracy {bd} vs {clean_bd} without the attack");
    assert!(acc > clean_acc - 0.1, "main accuracy kept: {acc} vs {clean_acc}");
}
