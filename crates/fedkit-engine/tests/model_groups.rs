//! Clients of several architectures (`[[model.per_client]]`): how clients are assigned, what the
//! engine refuses, and the defining properties of the algorithms that support them (`local`,
//! FedHeNN, FedDF across architectures).

use fedkit_engine::{Engine, RunConfig};

mod common;

const BASE: &[&str] = &[
    "rounds=3",
    "data.synthetic.users=10",
    "data.subsample=0.8",
    "sampling.per_round=1000",
    "client.batch_size=10",
    "client.lr=0.05",
    "eval.clients=true",
];
const GROUP: &str = "model.per_client=[{use=\"mlp\", hidden=[8], share=0.5}]";

fn cfg(sets: &[&str]) -> RunConfig {
    common::config(BASE, sets).unwrap()
}

fn refused(sets: &[&str]) -> String {
    match common::config(BASE, sets).and_then(Engine::new) {
        Ok(_) => panic!("{sets:?} must be refused"),
        Err(e) => e.to_string(),
    }
}

fn records(e: &Engine) -> String {
    e.records.iter().map(|r| r.to_json() + "\n").collect()
}

#[test]
fn groups_take_their_share_or_their_listed_clients() {
    let e = Engine::new(cfg(&["algorithm.use=\"local\"", GROUP])).unwrap();
    let archs: Vec<usize> = (0..10).map(|c| e.architecture_of(c)).collect();
    assert_eq!(archs.iter().filter(|&&a| a == 1).count(), 5, "{archs:?}");
    let listed = "model.per_client=[{use=\"mlp\", hidden=[8], clients=[0, 3]}, {use=\"mlp\", hidden=[4], share=0.2}]";
    let e = Engine::new(cfg(&["algorithm.use=\"local\"", listed])).unwrap();
    let archs: Vec<usize> = (0..10).map(|c| e.architecture_of(c)).collect();
    assert_eq!((archs[0], archs[3]), (1, 1), "{archs:?}");
    assert_eq!(archs.iter().filter(|&&a| a == 1).count(), 2, "{archs:?}");
    assert_eq!(archs.iter().filter(|&&a| a == 2).count(), 2, "{archs:?}");
}

#[test]
fn what_cannot_mix_architectures_is_refused_by_key() {
    let e = refused(&["algorithm.use=\"fedavg\"", GROUP]);
    assert!(
        e.contains("model.per_client") && e.contains("fedhenn") && e.contains("feddf") && e.contains("local"),
        "{e}"
    );
    let e =
        refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"mlp\", share=0.7}, {use=\"mlp\", share=0.5}]"]);
    assert!(e.contains("model.per_client") && e.contains("more than 1"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"mlp\", share=0.5, clients=[1]}]"]);
    assert!(e.contains("model.per_client.0") && e.contains("exactly one"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"mlp\", clients=[99]}]"]);
    assert!(e.contains("model.per_client.0.clients") && e.contains("99"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"mlp\", share=1.5}]"]);
    assert!(e.contains("model.per_client.0.share"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"mlpp\", share=0.5}]"]);
    assert!(e.contains("model.per_client.0.use") && e.contains("mlp"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"mlp\", hidden=[8], share=0.5, depth=3}]"]);
    assert!(e.contains("model.per_client.0") && e.contains("depth"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", GROUP, "secure_aggregation.use=\"secagg\""]);
    assert!(e.contains("model.per_client") && e.contains("secure aggregation"), "{e}");
}

// Each client trains its own architecture, and the thread count changes nothing.
#[test]
fn local_clients_train_their_own_architecture_on_any_thread_count() {
    let run = |threads: &str| common::run(cfg(&["algorithm.use=\"local\"", GROUP, threads]));
    let one = run("threads=1");
    assert_eq!(records(&one), records(&run("threads=2")));
    for c in 0..10u32 {
        let want = if one.architecture_of(c) == 1 { 60 * 8 + 8 + 8 * 10 + 10 } else { one.global.len() };
        let st = one.clients[c as usize].state.as_ref().unwrap();
        let own: &fedkit_methods::personalization::Personal = st.as_any().downcast_ref().unwrap();
        assert_eq!(own.0.as_ref().unwrap().len(), want, "client {c}");
    }
}

// FedHeNN without its alignment term (eta = 0) is standalone training, bit for bit; with it the
// clients' representations of the proxy set agree more than without.
#[test]
fn fedhenn_aligns_representations_and_without_eta_is_standalone_training() {
    let rounds = ["rounds=6", "algorithm.proxy_samples=16", "model.use=\"mlp\"", "model.hidden=[16]"];
    let local =
        common::run(cfg(&["algorithm.use=\"local\"", GROUP, "rounds=6", "model.use=\"mlp\"", "model.hidden=[16]"]));
    let none = common::run(cfg(&[&rounds[..], &["algorithm.use=\"fedhenn\"", "algorithm.eta=0.0", GROUP]].concat()));
    let personal = |e: &Engine, c: usize| -> Vec<u32> {
        let st = e.clients[c].state.as_ref().unwrap();
        let p = e.algorithm.personalize(&e.global, st.as_ref()).unwrap().unwrap();
        p.as_slice().iter().map(|v| v.to_bits()).collect()
    };
    for c in 0..10 {
        assert_eq!(personal(&local, c), personal(&none, c), "client {c}");
    }
    let aligned = common::run(cfg(&[&rounds[..], &["algorithm.use=\"fedhenn\"", "algorithm.eta=5.0", GROUP]].concat()));
    let cka = |e: &Engine| e.records.last().unwrap().get("fedhenn_cka_to_mean").unwrap();
    assert!(cka(&aligned) > cka(&none) + 0.01, "CKA {} with eta vs {} without", cka(&aligned), cka(&none));
    // Kernels up, the kernel and a one-off proxy set down: never a model.
    let last = aligned.records.last().unwrap();
    let kernel_bytes = 16.0 * 16.0 * 4.0 * 10.0;
    assert!(last.get("bytes_up").unwrap() < 1.5 * kernel_bytes, "{:?}", last.get("bytes_up"));
    assert!(last.get("bytes_down").unwrap() < 1.5 * kernel_bytes, "{:?}", last.get("bytes_down"));
}

// FedDF across architectures with no distillation is FedAvg within each architecture: the
// group's prototype is the sample-weighted mean of its clients' models (those standalone
// training gives after one round from the same start), the global model the same over the
// `[model]` clients; distillation then moves both towards the ensemble.
#[test]
fn feddf_keeps_one_prototype_per_architecture() {
    let mut e = Engine::new(cfg(&["algorithm.use=\"feddf\"", "algorithm.steps=0", GROUP, "rounds=1"])).unwrap();
    let start = e.global.clone();
    e.run_round().unwrap();
    let alone = common::run(cfg(&["algorithm.use=\"local\"", GROUP, "rounds=1"]));
    let model_of = |c: usize| -> fedkit_core::Params {
        let st = alone.clients[c].state.as_ref().unwrap();
        alone.algorithm.personalize(&alone.global, st.as_ref()).unwrap().unwrap()
    };
    let mean_of = |arch: usize| -> Vec<f64> {
        let ids: Vec<usize> = (0..10).filter(|&c| e.architecture_of(c as u32) == arch).collect();
        let total: f64 = ids.iter().map(|&c| e.fed.clients[c].len() as f64).sum();
        let mut acc = vec![0.0f64; model_of(ids[0]).len()];
        for &c in &ids {
            let w = e.fed.clients[c].len() as f64 / total;
            acc.iter_mut().zip(model_of(c).as_slice()).for_each(|(a, &v)| *a += w * v as f64);
        }
        acc
    };
    let close = |got: &[f32], want: &[f64], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() < 1e-5, "{what}[{i}]: {g} vs {w}");
        }
    };
    close(e.global.as_slice(), &mean_of(0), "global model");
    let group = model_of((0..10).find(|&c| e.architecture_of(c as u32) == 1).unwrap());
    let proto = e.algorithm.architecture_model(e.server.as_ref(), group.layout()).unwrap().expect("a prototype");
    close(proto.as_slice(), &mean_of(1), "the group's prototype");
    assert!(e.records[0].get("test_acc_group0").is_some(), "the prototype is evaluated: {}", e.records[0].to_json());
    assert_ne!(e.global, start);
    let distilled = common::run(cfg(&["algorithm.use=\"feddf\"", "algorithm.steps=20", GROUP, "rounds=1"]));
    assert_ne!(distilled.global, e.global, "distillation changes the global model");
    let r = distilled.records.last().unwrap();
    assert!(r.get("feddf_kl_end_group0").unwrap() < r.get("feddf_kl_start_group0").unwrap(), "{}", r.to_json());
}

// `init` and `per_client` belong to `[model]`, `share` and `clients` to a group entry: no model
// may have a parameter of those names (ResNet's `groups`, group norm's group count, stays its own).
#[test]
fn no_model_parameter_uses_a_reserved_key() {
    for e in fedkit_models::models() {
        let mut resolved = toml::Table::new();
        (e.build)(&toml::Table::new(), &mut resolved).unwrap();
        for k in ["init", "per_client", "quant", "share", "clients"] {
            assert!(!resolved.contains_key(k), "model `{}` has a parameter `{k}`", e.name);
        }
    }
    let mut c = cfg(&["model.use=\"resnet\"", "model.norm=\"group\"", "model.groups=4"]);
    c.build().unwrap();
    assert_eq!(c.model["groups"].as_integer(), Some(4));
}

#[test]
fn groups_refuse_duplicates_robust_aggregators_and_name_their_own_keys() {
    let e = refused(&["algorithm.use=\"local\"", "model.use=\"mlp\"", "model.hidden=[8]", GROUP]);
    assert!(e.contains("model.per_client.0") && e.contains("[model]"), "{e}");
    let e =
        refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"mlp\", share=0.2}, {use=\"mlp\", share=0.2}]"]);
    assert!(e.contains("model.per_client.1") && e.contains("model.per_client.0"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", GROUP, "aggregator.use=\"median\""]);
    assert!(e.contains("model.per_client") && e.contains("mean"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"lenet\", share=0.5}]"]);
    assert!(e.contains("model.per_client.0"), "{e}");
    let e = refused(&["algorithm.use=\"local\"", "model.per_client=[{use=\"mlp\", clients=[1, 1]}]"]);
    assert!(e.contains("model.per_client.0.clients") && e.contains("twice"), "{e}");
    let e = refused(&["algorithm.use=\"fedhenn\"", "model.use=\"logreg\""]);
    assert!(e.contains("model.use") && e.contains("hidden layer"), "{e}");
    let e = refused(&["algorithm.use=\"fedhenn\"", GROUP, "pipeline=[{use=\"dp_fixed_clip\", noise_multiplier=1.0}]"]);
    assert!(e.contains("pipeline") && e.contains("DP"), "{e}");
}

// Stages compose with mixed architectures: a compressor on FedHeNN's kernel-only updates, and
// Neurotoxin's mask (in `[model]`'s layout) leaves other architectures' clients alone.
#[test]
fn stages_run_beside_mixed_architectures() {
    let topk = [
        "algorithm.use=\"fedhenn\"",
        "algorithm.proxy_samples=8",
        "model.use=\"mlp\"",
        "model.hidden=[16]",
        GROUP,
        "pipeline=[{use=\"topk\", fraction=0.1}]",
    ];
    let e = common::run(cfg(&topk));
    assert_eq!(e.records.len(), 3);
    let toxin = ["algorithm.use=\"local\"", GROUP, "pipeline=[{use=\"neurotoxin\", fraction=0.1}]"];
    let e = common::run(cfg(&toxin));
    assert_eq!(e.records.len(), 3);
}
