//! Engine properties: determinism across thread counts, exact resume, FedProx(mu=0) == FedAvg,
//! straggler handling, and a pipeline stage acting on every update.

use std::path::PathBuf;

use fedkit_engine::{Engine, RunConfig, drive, resume, start};

mod common;

const BASE: &[&str] = &[
    "rounds=4",
    "data.synthetic.users=12",
    "sampling.per_round=5",
    "client.epochs=2",
    "client.batch_size=10",
    "client.lr=0.05",
];

fn cfg(sets: &[&str]) -> RunConfig {
    common::config(BASE, sets).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fedkit-engine-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// All records as JSON lines plus the final parameters' bits.
fn run_all(c: RunConfig) -> (String, Vec<u32>) {
    let mut e = Engine::new(c).unwrap();
    e.evaluate_initial().unwrap();
    while e.round < e.cfg.rounds {
        e.run_round().unwrap();
    }
    let json = e.records.iter().map(|r| r.to_json() + "\n").collect();
    (json, e.global.as_slice().iter().map(|v| v.to_bits()).collect())
}

#[test]
fn thread_count_does_not_change_a_bit() {
    for model in [&["model.use=\"logreg\""][..], &["model.use=\"mlp\"", "model.hidden=[16]"][..]] {
        let with = |threads: &str| run_all(cfg(&[model, &[threads]].concat()));
        let one = with("threads=1");
        assert_eq!(one, with("threads=2"), "{model:?}: 1 vs 2 threads");
        assert_eq!(one, with("threads=3"), "{model:?}: 1 vs 3 threads");
        assert!(one.0.contains("test_acc"));
    }
}

#[test]
fn fedprox_with_mu_zero_is_fedavg_bit_for_bit() {
    let avg = run_all(cfg(&["algorithm.use=\"fedavg\""]));
    let prox0 = run_all(cfg(&["algorithm.use=\"fedprox\"", "algorithm.mu=0.0"]));
    assert_eq!(avg, prox0);
    let prox = run_all(cfg(&["algorithm.use=\"fedprox\"", "algorithm.mu=1.0"]));
    assert_ne!(avg.1, prox.1, "mu > 0 must change the model");
}

#[test]
fn resume_continues_bit_identically() {
    let (a, b) = (tmp("full"), tmp("split"));
    let c = cfg(&["rounds=6", "checkpoint_every=2", "algorithm.use=\"fedprox\"", "sampling.drop_percent=0.4"]);
    let (mut e, mut out) = start(c.clone(), &a).unwrap();
    drive(&mut e, &mut out, None, &mut |_| {}).unwrap();
    let full = e.global.clone();

    let (mut e1, mut out1) = start(c, &b).unwrap();
    drive(&mut e1, &mut out1, Some(3), &mut |_| {}).unwrap();
    drop((e1, out1));
    let (mut e2, mut out2) = resume(&b, None).unwrap();
    assert_eq!(e2.round, 3);
    drive(&mut e2, &mut out2, None, &mut |_| {}).unwrap();
    assert_eq!(e2.global, full);
    for f in ["metrics.jsonl", "metrics.csv", "resolved.toml"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    // A finished run can be extended: 6 + 2 rounds equal an 8-round run.
    let (mut e3, mut out3) = resume(&b, Some(8)).unwrap();
    drive(&mut e3, &mut out3, None, &mut |_| {}).unwrap();
    let c8 = cfg(&["rounds=8", "checkpoint_every=2", "algorithm.use=\"fedprox\"", "sampling.drop_percent=0.4"]);
    let (mut e8, mut out8) = start(c8, &tmp("eight")).unwrap();
    drive(&mut e8, &mut out8, None, &mut |_| {}).unwrap();
    assert_eq!(e3.global, e8.global);
    // A used run directory is never overwritten.
    assert!(start(cfg(&[]), &a).is_err());
}

// The personalised algorithms' states (pFedMe's personal models, IFCA's cluster models) survive a
// checkpoint: stopping after round 2 and resuming ends bit for bit where an uninterrupted run
// ends, local evaluation (which reads them) included, with the model store and TensorBoard on.
#[test]
fn personalised_states_survive_resume_bit_for_bit() {
    const GROUP: &str = "model.per_client=[{use=\"mlp\", hidden=[8], share=0.5}]";
    for algo in [
        &["algorithm.use=\"pfedme\""][..],
        &["algorithm.use=\"ifca\""],
        &["algorithm.use=\"perfedavg\""],
        &["algorithm.use=\"rffl\""],
        &["algorithm.use=\"fedfomo\""],
        &["algorithm.use=\"local\""],
        &["algorithm.use=\"local\"", GROUP],
        &["algorithm.use=\"feddf\""],
        &["algorithm.use=\"feddf\"", "algorithm.steps=20", GROUP],
        &["algorithm.use=\"fedbe\""],
        &["algorithm.use=\"fedgen\""],
        &["algorithm.use=\"fedhenn\"", "algorithm.proxy_samples=16", "model.use=\"mlp\"", "model.hidden=[16]", GROUP],
    ] {
        let base = [
            "rounds=4",
            "checkpoint_every=1",
            "data.subsample=0.8",
            "eval.clients=true",
            "output.keep_models=\"every:1\"",
            "output.tensorboard=true",
        ];
        let sets = [&base[..], algo].concat();
        let (a, b) = (tmp("pers-full"), tmp("pers-split"));
        let (mut e, mut out) = start(cfg(&sets), &a).unwrap();
        drive(&mut e, &mut out, None, &mut |_| {}).unwrap();
        let (mut e1, mut out1) = start(cfg(&sets), &b).unwrap();
        drive(&mut e1, &mut out1, Some(2), &mut |_| {}).unwrap();
        drop((e1, out1));
        let (mut e2, mut out2) = resume(&b, None).unwrap();
        drive(&mut e2, &mut out2, None, &mut |_| {}).unwrap();
        assert_eq!(e2.global, e.global, "{algo:?}");
        for f in ["metrics.jsonl", "local_eval.jsonl", "models/global-r00004.safetensors"] {
            assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{algo:?}: {f}");
        }
    }
}

// Personal downlinks are counted per client: standalone clients download the model once, RFFL
// clients get sparse rewards instead of the model, FedFomo clients get M peer models.
#[test]
fn bytes_down_counts_each_clients_own_downlink() {
    let down = |algo: &[&str]| -> Vec<f64> {
        let sets: Vec<&str> = ["rounds=3", "sampling.per_round=1000"].into_iter().chain(algo.iter().copied()).collect();
        let mut e = Engine::new(cfg(&sets)).unwrap();
        (0..3).map(|_| e.run_round().unwrap().0.get("bytes_down").unwrap()).collect()
    };
    let fedavg = down(&["algorithm.use=\"fedavg\""]);
    assert!(fedavg.iter().all(|&b| b == fedavg[0]), "{fedavg:?}");
    let local = down(&["algorithm.use=\"local\""]);
    assert_eq!(local, vec![fedavg[0], 0.0, 0.0], "standalone clients download the initial model only");
    let rffl = down(&["algorithm.use=\"rffl\""]);
    assert_eq!(rffl[0], fedavg[0]);
    assert!(rffl[1] > 0.0 && rffl[1] < fedavg[1], "sparse rewards: {rffl:?} vs {fedavg:?}");
    let fomo = down(&["algorithm.use=\"fedfomo\"", "algorithm.models=2"]);
    assert_eq!(fomo[0], fedavg[0], "no peers yet: the initial model");
    assert!(fomo[1] > 1.9 * fedavg[1] && fomo[1] < 2.1 * fedavg[1], "two peer models each: {fomo:?} vs {fedavg:?}");
}

// HeteroFL on the mlp: at every rate 1 (no mask) it is FedAvg bit for bit; at mixed widths each
// sub-model client downloads and uploads only its sub-model, so both byte counts fall below
// FedAvg's; models without hidden widths or with running statistics are refused by name.
#[test]
fn heterofl_moves_sub_models_over_the_wire() {
    let mlp = ["model.use=\"mlp\"", "model.hidden=[16, 16]", "sampling.per_round=1000", "rounds=3"];
    let with = |extra: &[&str]| cfg(&[&mlp[..], extra].concat());
    let fedavg = run_all(with(&["algorithm.use=\"fedavg\""]));
    let full = ["algorithm.use=\"heterofl\"", "algorithm.rates=[1.0]", "algorithm.masked_labels=false"];
    assert!(run_all(with(&full)).1 == fedavg.1, "rate 1 without the mask is FedAvg");
    let bytes = |extra: &[&str]| -> (f64, f64, f64) {
        let mut e = Engine::new(with(extra)).unwrap();
        let (rec, _) = e.run_round().unwrap();
        (rec.get("bytes_up").unwrap(), rec.get("bytes_down").unwrap(), rec.get("heterofl_rate_mean").unwrap_or(1.0))
    };
    let (up0, down0, _) = bytes(&["algorithm.use=\"fedavg\""]);
    let mixed = ["algorithm.use=\"heterofl\"", "algorithm.rates=[1.0, 0.25]", "algorithm.shares=[0.5, 0.5]"];
    let (up, down, rate) = bytes(&mixed);
    assert!(rate > 0.25 && rate < 1.0, "both levels in the cohort: mean rate {rate}");
    // A quarter-width sub-model of 60-16-16-10 has well under half the parameters.
    let small_share = (1.0 - rate) / 0.75;
    assert!(
        up < up0 * (1.0 - 0.5 * small_share) && down < down0 * (1.0 - 0.5 * small_share),
        "{up} {down} vs {up0} {down0}"
    );
    assert!(up > up0 * (1.0 - small_share) && down > down0 * (1.0 - small_share), "{up} {down} vs {up0} {down0}");
    let refused = |sets: &[&str]| Engine::new(cfg(sets)).err().expect("refused when the config is read").to_string();
    let e = refused(&["algorithm.use=\"heterofl\""]);
    assert!(e.contains("model.use") && e.contains("no hidden widths") && e.contains("mlp"), "{e}");
    // Static batch norm: the global model's running statistics are the batch statistics of
    // the server's pass, whatever the clients' sub-models recorded.
    let bn = ["algorithm.use=\"heterofl\"", "algorithm.rates=[1.0, 0.5]", "model.norm=\"batch\""];
    let mut e = Engine::new(with(&bn)).unwrap();
    e.run_round().unwrap();
    let layout = e.global.layout().clone();
    let mean = layout.get("bn1.running_mean").unwrap().range();
    let var = layout.get("bn1.running_var").unwrap().range();
    let g = e.global.as_slice();
    assert!(g[var.clone()].iter().all(|&v| v > 0.0 && v.is_finite()) && g[mean.clone()].iter().any(|&m| m != 0.0));
    // The pass's mean over its samples is what a fresh-statistics training forward records:
    // 0.1 of it from zero (PyTorch's momentum), here recovered without knowing 0.1.
    let mut model = e.architecture();
    let d = e.fed.clients[0].clone();
    let mut batch = fedkit_core::Batch::default();
    batch.fill(&d, &(0..d.len()).collect::<Vec<_>>(), &mut fedkit_core::RngStream::new(0));
    let mut w = e.global.clone();
    fedkit_methods::personalization::heterofl::static_batch_norm(model.as_mut(), &mut w, &batch).unwrap();
    let mut zero = e.global.clone();
    zero.as_mut_slice()[mean.clone()].fill(0.0);
    zero.as_mut_slice()[var.clone()].fill(0.0);
    let mut none = |out: &fedkit_core::Outputs, _: &fedkit_core::Batch, g: &mut fedkit_core::OutputGrads| {
        g.logits.clear();
        g.logits.resize(out.logits.len(), 0.0);
        g.features.clear();
        Ok(0.0f32)
    };
    let mut rng = fedkit_core::RngStream::new(0);
    model.vjp(&mut zero, &batch, fedkit_core::Mode::Train, &mut none, None, None, &mut rng).unwrap();
    for j in mean.chain(var) {
        let want = zero.as_slice()[j] / 0.1;
        assert!((w.as_slice()[j] - want).abs() <= 1e-4 * want.abs().max(1.0), "{j}: {} vs {want}", w.as_slice()[j]);
    }
    let e = refused(&["algorithm.use=\"fedaws\"", "loss.use=\"focal\""]);
    assert!(e.contains("loss.use") && e.contains("cross_entropy"), "{e}");
    // Its server rule re-combines the updates, so a DP stage's noise would be lost: refused.
    let dp = r#"pipeline=[{ use = "dp_fixed_clip" }]"#;
    for algo in ["heterofl", "ifca", "rffl", "feddf", "fedbe", "fedgen"] {
        let algo = format!("algorithm.use=\"{algo}\"");
        let algo = algo.as_str();
        let e = Engine::new(cfg(&[&mlp[..], &[algo, dp, "data.subsample=0.8"]].concat()))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("pipeline") && e.contains("noise"), "{e}");
    }
}

// A run started from a file resumes from its checkpoint even after the file is gone.
#[test]
fn resume_does_not_read_the_initial_model_again() {
    let (src, run) = (tmp("init-src"), tmp("init-run"));
    let (mut e, mut out) = start(cfg(&["rounds=2"]), &src).unwrap();
    drive(&mut e, &mut out, None, &mut |_| {}).unwrap();
    let file = src.join("model.safetensors");
    fedkit_core::tensor_file::write(&file, &e.global, &Default::default()).unwrap();
    let init = format!("model.init=\"{}\"", file.display());
    let (mut e1, mut out1) = start(cfg(&["rounds=4", "checkpoint_every=1", &init]), &run).unwrap();
    assert_eq!(e1.global, e.global, "the run starts from the file");
    drive(&mut e1, &mut out1, Some(2), &mut |_| {}).unwrap();
    drop((e1, out1));
    std::fs::remove_file(&file).unwrap();
    let (mut e2, mut out2) = resume(&run, Some(5)).unwrap();
    drive(&mut e2, &mut out2, None, &mut |_| {}).unwrap();
    assert_eq!(e2.round, 5);
    let resolved = std::fs::read_to_string(run.join("resolved.toml")).unwrap();
    assert!(resolved.contains("model.safetensors"), "resolved.toml keeps model.init");
}

#[test]
fn stragglers_are_dropped_by_fedavg_and_do_partial_work_in_fedprox() {
    let (avg, _) = run_all(cfg(&["sampling.drop_percent=0.6", "algorithm.use=\"fedavg\""]));
    let (prox, _) = run_all(cfg(&["sampling.drop_percent=0.6", "algorithm.use=\"fedprox\""]));
    // 5 sampled, round(5 * 0.4) = 2 active.
    assert!(avg.lines().skip(1).all(|l| l.contains("\"participants\":2,\"stragglers\":3")), "{avg}");
    assert!(prox.lines().skip(1).all(|l| l.contains("\"participants\":5,\"stragglers\":3")), "{prox}");
    // Python's round, half to even, as the FedProx code: 5 x (1 - 0.5) = 2.5 -> 2 active.
    let (half, _) = run_all(cfg(&["sampling.drop_percent=0.5", "algorithm.use=\"fedavg\""]));
    assert!(half.lines().skip(1).all(|l| l.contains("\"participants\":2,")), "{half}");
}

#[test]
fn cohorts_depend_only_on_seed_and_round() {
    let a = Engine::new(cfg(&["algorithm.use=\"fedavg\""])).unwrap();
    let b = Engine::new(cfg(&["algorithm.use=\"fedprox\"", "client.lr=0.3"])).unwrap();
    for r in 1..20 {
        assert_eq!(a.sample(r).unwrap(), b.sample(r).unwrap());
        assert_eq!(a.sample(r).unwrap().0.len(), 5);
        assert!(a.sample(r).unwrap().1.iter().all(|&d| d == 1), "uniform draws are without replacement");
    }
    assert_ne!(a.sample(1).unwrap(), a.sample(2).unwrap());
}

#[test]
fn clip_stage_bounds_every_update() {
    let mut e = Engine::new(cfg(&["pipeline=[{use=\"clip\", max_norm=0.01}]", "client.lr=0.1"])).unwrap();
    for _ in 0..3 {
        let before = e.global.clone();
        let (rec, _) = e.run_round().unwrap();
        let moved = e.global.sub(&before).l2();
        assert!(moved <= 0.01 + 1e-6, "the mean of clipped deltas moved {moved}");
        assert!(moved > 0.0);
        assert_eq!(rec.get("participants"), Some(5.0));
    }
}

#[test]
fn per_client_evaluation_holds_out_a_disjoint_local_split() {
    let c = cfg(&["eval.clients=true", "eval.client_test_fraction=0.25"]);
    let plain = Engine::new(cfg(&[])).unwrap();
    let mut e = Engine::new(c).unwrap();
    assert_eq!(e.local_test.len(), e.population());
    for (i, (train, test)) in e.fed.clients.iter().zip(&e.local_test).enumerate() {
        let all = plain.fed.clients[i].idx.len();
        assert_eq!(train.idx.len() + test.idx.len(), all, "client {i}: the split covers its data");
        assert_eq!(test.idx.len(), ((all as f64 * 0.25).round() as usize).clamp(1, all - 1));
        assert!(test.idx.iter().all(|s| !train.idx.contains(s)), "client {i}: train and test are disjoint");
    }
    e.run_round().unwrap();
    let r = e.records.last().unwrap();
    let (min, p10, mean) =
        (r.get("local_acc_min").unwrap(), r.get("local_acc_p10").unwrap(), r.get("local_acc_mean").unwrap());
    assert!(min <= p10 && p10 <= mean && mean <= 1.0, "{min} {p10} {mean}");
    assert!(r.get("local_loss_max").unwrap() >= r.get("local_loss_mean").unwrap());
}

#[test]
fn model_zeros_counts_exact_zeros() {
    let mut e = Engine::new(cfg(&[])).unwrap();
    let n = e.global.len();
    e.global.as_mut_slice()[..n / 2].fill(0.0);
    let mut rec = fedkit_engine::Record::new(0);
    e.evaluate_into(&mut rec).unwrap();
    let z = rec.get("model_zeros").unwrap();
    assert!(z >= (n / 2) as f64 / n as f64 && z < 0.6, "{z}");
}

#[test]
fn a_cohort_of_1200_clients_runs_and_is_deterministic() {
    let c = || {
        cfg(&[
            "rounds=2",
            "data.synthetic.users=1500",
            "sampling.per_round=1200",
            "client.epochs=1",
            "eval.train_loss=false",
        ])
    };
    let mut e = Engine::new(c()).unwrap();
    e.run_round().unwrap();
    let r = e.records.last().unwrap();
    assert_eq!(
        (r.get("sampled"), r.get("participants"), r.get("accepted")),
        (Some(1200.0), Some(1200.0), Some(1200.0))
    );
    let (a, b) = (run_all(c()), run_all(RunConfig { threads: 1, ..c() }));
    assert_eq!(a, b, "a large cohort is reduced in client-id order whatever the thread count");
}

// Label noise relabels about the configured fraction of the clients' samples, training sees the
// noisy labels, and evaluation rounds record the memorisation metrics: accuracy on the clean
// samples, agreement with the noisy labels and with the true labels of the relabelled samples.
#[test]
fn label_noise_is_trained_on_and_memorisation_is_measured() {
    let c = cfg(&["data.label_noise.fraction=0.4", "eval.critical_samples=50", "rounds=3"]);
    let mut e = Engine::new(c).unwrap();
    let flipped: usize =
        e.fed.clients.iter().map(|c| (0..c.len()).filter(|&p| c.label(p) != c.data.y[c.idx[p] as usize]).count()).sum();
    let total: usize = e.fed.clients.iter().map(|c| c.len()).sum();
    let f = flipped as f64 / total as f64;
    assert!((f - 0.4).abs() < 0.05, "relabelled fraction {f}");
    e.evaluate_initial().unwrap();
    while e.round < e.cfg.rounds {
        e.run_round().unwrap();
    }
    for r in &e.records {
        let (clean, memo, truth) =
            (r.get("train_acc_clean").unwrap(), r.get("noisy_memorized").unwrap(), r.get("noisy_true").unwrap());
        assert!((0.0..=1.0).contains(&clean) && memo + truth <= 1.0 + 1e-12, "{clean} {memo} {truth}");
        assert!((0.0..=1.0).contains(&r.get("critical_ratio").unwrap()));
    }
    // Without noise none of these columns appear.
    let mut e = Engine::new(cfg(&["rounds=1"])).unwrap();
    e.run_round().unwrap();
    assert!(e.records[0].get("noisy_memorized").is_none());
}

// `init_from` starts from another run's final model (a pre-trained one); a different model is
// refused with an error naming the key. `data.subsample` keeps that fraction of each client.
#[test]
fn a_run_can_start_from_another_runs_model() {
    let dir = tmp("init-from");
    let (mut e, mut out) = start(cfg(&["rounds=2"]), &dir).unwrap();
    drive(&mut e, &mut out, None, &mut |_| {}).unwrap();
    let last = e.global.clone();
    let from = format!("init_from=\"{}\"", dir.display());
    let f = Engine::new(cfg(&[&from, "data.subsample=0.5"])).unwrap();
    assert_eq!(f.global, last, "the new run starts from the saved model");
    let full = Engine::new(cfg(&[])).unwrap();
    for (a, b) in f.fed.clients.iter().zip(&full.fed.clients) {
        assert_eq!(a.len(), ((b.len() as f64 * 0.5).round() as usize).max(1));
    }
    let err = Engine::new(cfg(&[&from, "model.use=\"mlp\""])).err().unwrap().to_string();
    assert!(err.contains("init_from") && err.contains("entries"), "{err}");
    let err = Engine::new(cfg(&["init_from=\"/nonexistent\""])).err().unwrap().to_string();
    assert!(err.contains("init_from") && err.contains("/nonexistent"), "{err}");
}

// `[data] unlabeled_share`: the server's unlabeled pool is that share of the samples no client
// holds (a seeded subset, so the same for every run of the config); share 1 is all of them, and
// a share outside (0, 1] is refused naming the key.
#[test]
fn the_unlabeled_pool_is_the_share_of_the_samples_no_client_holds() {
    let held = |e: &Engine| {
        let mut h = vec![false; e.fed.train.len()];
        e.fed.clients.iter().flat_map(|c| c.idx.iter()).for_each(|&i| h[i as usize] = true);
        h
    };
    let base = ["data.subsample=0.2", "algorithm.use=\"feddf\"", "algorithm.steps=2"];
    let all = Engine::new(cfg(&base)).unwrap();
    let h = held(&all);
    let unheld: Vec<u32> = (0..h.len() as u32).filter(|&i| !h[i as usize]).collect();
    assert_eq!(&all.unlabeled().idx[..], &unheld[..], "share 1: every sample no client holds");
    let half = Engine::new(cfg(&[&base[..], &["data.unlabeled_share=0.5"]].concat())).unwrap();
    let pool = &half.unlabeled().idx;
    assert_eq!(pool.len(), (unheld.len() as f64 * 0.5).round() as usize);
    assert!(pool.windows(2).all(|w| w[0] < w[1]) && pool.iter().all(|&i| !h[i as usize]), "a subset, in order");
    let again = Engine::new(cfg(&[&base[..], &["data.unlabeled_share=0.5"]].concat())).unwrap();
    assert_eq!(pool, &again.unlabeled().idx, "seeded");
    let err = Engine::new(cfg(&[&base[..], &["data.unlabeled_share=0"]].concat())).err().unwrap().to_string();
    assert!(err.contains("data.unlabeled_share"), "{err}");
}
