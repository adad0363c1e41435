//! End-to-end tests of the `fedkit` binary: the demo, determinism across RAYON_NUM_THREADS,
//! resume, list/explain/data stats, every bad-input case (clear message, non-zero exit, never a
//! panic), and a short Fashion-MNIST run when the dataset is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fedkit(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fedkit"));
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("fedkit runs")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fedkit-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failing command: non-zero exit, no panic, and every expected fragment in its message.
fn fails_with(o: Output, fragments: &[&str]) {
    let e = stderr(&o);
    assert!(!o.status.success(), "expected failure, got success: {e}");
    assert!(!e.contains("panicked"), "panic instead of an error: {e}");
    for f in fragments {
        assert!(e.contains(f), "message lacks `{f}`:\n{e}");
    }
}

const SMALL: &str = "rounds = 3\n[data.synthetic]\nusers = 8\n[sampling]\nper_round = 4\n[client]\nepochs = 2\n";

#[test]
fn demo_runs_and_prints_a_table() {
    let d = tmp("demo");
    let out = d.join("demo");
    let o = fedkit(&["run", "--out", out.to_str().unwrap(), "--set", "rounds=5", "--quiet"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("fedavg") && table.contains("fedprox") && table.contains("test_acc"), "{table}");
    for algo in ["fedavg", "fedprox"] {
        for f in ["metrics.jsonl", "metrics.csv", "timings.jsonl", "resolved.toml"] {
            assert!(out.join(algo).join(f).exists(), "{algo}/{f}");
        }
    }
}

#[test]
fn metrics_are_byte_identical_across_thread_counts() {
    let d = tmp("threads");
    let cfg = write(&d, "c.toml", &format!("{SMALL}[model]\nuse = \"mlp\"\nhidden = [8]\n"));
    let mut files = Vec::new();
    for t in ["1", "2"] {
        let out = d.join(format!("t{t}"));
        let o = fedkit(&["run", &cfg, "--out", out.to_str().unwrap(), "--quiet"], &[("RAYON_NUM_THREADS", t)]);
        assert!(o.status.success(), "{}", stderr(&o));
        files.push(std::fs::read(out.join("metrics.jsonl")).unwrap());
    }
    assert_eq!(files[0], files[1]);
}

#[test]
fn stop_and_resume_match_an_uninterrupted_run() {
    let d = tmp("resume");
    let cfg = write(&d, "c.toml", &format!("checkpoint_every = 1\n{SMALL}"));
    let (full, part) = (d.join("full"), d.join("part"));
    assert!(fedkit(&["run", &cfg, "--out", full.to_str().unwrap(), "-q"], &[]).status.success());
    assert!(fedkit(&["run", &cfg, "--out", part.to_str().unwrap(), "-q", "--stop-after", "1"], &[]).status.success());
    let o = fedkit(&["run", "--resume", part.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(full.join("metrics.jsonl")).unwrap(), std::fs::read(part.join("metrics.jsonl")).unwrap());
    assert_eq!(
        std::fs::read_to_string(part.join("timings.jsonl")).unwrap().lines().count(),
        3,
        "timings survive resume"
    );
    // Extending a finished run, but never below its checkpoint.
    fails_with(fedkit(&["run", "--resume", part.to_str().unwrap(), "--rounds", "2"], &[]), &["--rounds", "round 3"]);
    let o = fedkit(&["run", "--resume", part.to_str().unwrap(), "--rounds", "4", "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(part.join("metrics.jsonl")).unwrap().lines().count(), 5);
    // The finished directory is not overwritten by a new run.
    fails_with(fedkit(&["run", &cfg, "--out", full.to_str().unwrap()], &[]), &["already holds a run", "--resume"]);
}

#[test]
fn list_explain_and_data_stats() {
    let o = fedkit(&["list"], &[]);
    let s = String::from_utf8_lossy(&o.stdout);
    for name in ["fedavg", "fedprox", "mean", "clip", "cnn", "lenet", "dirichlet_label", "synthetic"] {
        assert!(s.contains(name), "list lacks {name}");
    }
    let o = fedkit(&["explain", "fedprox"], &[]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("Federated Optimization in Heterogeneous Networks") && s.contains("mu"), "{s}");
    fails_with(fedkit(&["explain", "fedfoo"], &[]), &["fedfoo", "fedprox"]);
    let d = tmp("stats");
    let cfg =
        write(&d, "c.toml", "[data]\nname = \"fcube\"\nclients = 4\npartition = { use = \"synthetic_feature\" }\n");
    let o = fedkit(&["data", "stats", &cfg], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1000"));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let d = tmp("bad");
    let run = |text: &str| {
        let cfg = write(&d, "bad.toml", text);
        fedkit(&["run", &cfg, "--out", d.join("never").to_str().unwrap()], &[])
    };
    fails_with(run("rounds = [\n"), &["bad.toml", "line"]);
    fails_with(run("roundz = 3\n"), &["bad.toml", "roundz", "rounds"]);
    fails_with(run("[client]\nlr = \"fast\"\n"), &["bad.toml", "client.lr"]);
    fails_with(run("[algorithm]\nuse = \"fedfoo\"\n"), &["algorithm.use", "fedfoo", "fedavg", "fedprox"]);
    fails_with(run("[algorithm]\nuse = \"fedprox\"\nmu = -1.0\n"), &["algorithm.mu"]);
    fails_with(run("[algorithm]\nuse = \"fedprox\"\nmux = 1.0\n"), &["algorithm", "mux", "mu"]);
    fails_with(run("[data]\npartition = { use = \"dirichlet\" }\n"), &["data.partition.use", "dirichlet_label"]);
    fails_with(run("[model]\nuse = \"cnn\"\n"), &["cnn", "mlp"]);
    fails_with(run("[sampling]\ndrop_percent = 2.0\n"), &["sampling.drop_percent", "[0, 1]"]);
    fails_with(
        run("[sampling]\nper_round = 1\ndrop_percent = 0.9\n"),
        &["sampling.drop_percent", "nothing would train"],
    );
    fails_with(run("[[pipeline]]\nuse = \"clip\"\nmax_norm = -1.0\n"), &["bad.toml", "pipeline.0.max_norm"]);
    fails_with(run("[client]\noptimizer = \"adam\"\nbetas = [1.0, 0.9]\n"), &["client.betas"]);
    fails_with(fedkit(&["run", "/nonexistent/c.toml"], &[]), &["/nonexistent/c.toml"]);
    fails_with(fedkit(&["run", "--set", "rounds"], &[]), &["--set", "key=value"]);
    // The demo compares two fixed arms: choosing an algorithm is refused before anything runs,
    // with the commands that do it; a key FedProx does not have fails before the FedAvg arm runs.
    let demo_out = d.join("demo");
    let out = fedkit(&["run", "--set", "algorithm.use=\"scaffold\"", "--out", demo_out.to_str().unwrap()], &[]);
    fails_with(out, &["two fixed arms", "fedkit run configs/", "fedkit compare"]);
    let out = fedkit(&["run", "--set", "algorithm.server_lr=2", "--out", demo_out.to_str().unwrap()], &[]);
    fails_with(out, &["algorithm", "server_lr"]);
    assert!(!demo_out.exists(), "nothing ran");

    // Missing, truncated and wrong-magic dataset files.
    let fm = |dir: &Path| run(&format!("[data]\nname = \"fashion_mnist\"\ndata_dir = \"{}\"\n", dir.display()));
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(fm(&empty), &["train-images-idx3-ubyte", "apt-get install dataset-fashion-mnist", "data_dir"]);
    let broken = d.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let mut header = vec![0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    header.extend(vec![0u8; 100]); // far fewer than 2 * 784 pixels
    std::fs::write(broken.join("train-images-idx3-ubyte"), &header).unwrap();
    std::fs::write(broken.join("train-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 2, 1, 2]).unwrap();
    for f in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::write(broken.join(f), &header).unwrap();
    }
    fails_with(fm(&broken), &["train-images-idx3-ubyte"]);
    header[3] = 7; // wrong magic
    std::fs::write(broken.join("train-images-idx3-ubyte"), &header).unwrap();
    fails_with(fm(&broken), &["train-images-idx3-ubyte", "magic"]);
}

#[test]
fn fashion_mnist_end_to_end_when_installed() {
    if !Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let d = tmp("fmnist");
    let cfg = write(
        &d,
        "f.toml",
        "rounds = 2\n[data]\nname = \"fashion_mnist\"\nclients = 20\npartition = { use = \"dirichlet_label\", alpha = 0.5 }\n\
         [model]\nuse = \"mlp\"\nhidden = [32]\n[client]\nlr = 0.05\nbatch_size = 32\nmax_steps = 20\n[sampling]\nper_round = 4\n\
         [eval]\ntest_samples = 2000\ntrain_loss = false\n",
    );
    let out = d.join("run");
    let o = fedkit(&["run", &cfg, "--out", out.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last = metrics.lines().last().unwrap();
    let acc: f64 = last.split("\"test_acc\":").nth(1).unwrap().split([',', '}']).next().unwrap().parse().unwrap();
    assert!(acc > 0.4, "2 short rounds of an MLP should beat chance clearly: {last}");
}

// The transformer as a language model on the fortune files, federated by topic: the run
// completes, every topic is a client, and training lowers the next-token loss below the
// uniform guess's ln(vocab). A per-sample model is refused with the model to use.
#[test]
fn a_transformer_language_model_trains_on_the_fortune_files_when_installed() {
    if !Path::new("/usr/share/games/fortunes/computers").exists() {
        eprintln!("skipped: the fortune files are not installed (apt-get install fortunes)");
        return;
    }
    let d = tmp("fortunes");
    let cfg = write(
        &d,
        "lm.toml",
        "rounds = 3\n[data]\nname = \"fortunes\"\nsubsample = 0.2\nfortunes = { seq_len = 8, vocab = 300 }\n\
         [model]\nuse = \"transformer\"\ndim = 16\nlayers = 1\nheads = 2\n\
         [client]\noptimizer = \"adam\"\nlr = 0.005\nbatch_size = 16\n[sampling]\nper_round = 4\n\
         [eval]\ntest_samples = 500\ntrain_loss = false\n",
    );
    let out = d.join("run");
    let o = fedkit(&["run", &cfg, "--out", out.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last = metrics.lines().last().unwrap();
    let loss: f64 = last.split("\"test_loss\":").nth(1).unwrap().split([',', '}']).next().unwrap().parse().unwrap();
    assert!(loss < (300f64).ln() - 1.0, "three rounds should beat the uniform guess clearly: {last}");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("use = \"transformer\"\ndim = 16\nlayers = 1\nheads = 2", "use = \"mlp\"");
    let mlp = write(&d, "mlp.toml", &text);
    let o = fedkit(&["run", &mlp, "--out", d.join("mlp").to_str().unwrap(), "-q"], &[]);
    fails_with(o, &["per position", "transformer", "model.use"]);
}

#[test]
fn compare_writes_one_table_and_resumes() {
    let d = tmp("compare");
    let out = d.join("cmp");
    let args = [
        "compare",
        "configs/smoke/synthetic.toml",
        "--algorithms",
        "fedavg,fedprox",
        "--variant",
        "prox1=algorithm.use=fedprox;algorithm.mu=1",
        "--at",
        "1,3",
        "--target",
        "0.01",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    let cwd = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = || Command::new(env!("CARGO_BIN_EXE_fedkit")).args(args).current_dir(cwd).output().unwrap();
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(md.starts_with("| variant | acc@1 | acc@3 | final_acc | best_acc | rounds_to_0.01 |"), "{md}");
    for v in ["fedavg", "fedprox", "prox1"] {
        assert!(md.contains(&format!("| {v} |")), "{md}");
        assert!(out.join(v).join("metrics.jsonl").exists());
    }
    assert_eq!(md.lines().count(), 5);
    let csv = std::fs::read_to_string(out.join("comparison.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    // A second call finds every variant finished and rebuilds the same table.
    let o = run();
    assert!(stderr(&o).contains("already finished"), "{}", stderr(&o));
    let md2 = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    let strip = |t: &str| t.lines().map(|l| l.rsplitn(4, '|').nth(3).unwrap_or("").to_string()).collect::<Vec<_>>();
    assert_eq!(strip(&md), strip(&md2), "same numbers (wall time aside)");
    // A changed experiment in the same output folder is refused, not silently reused.
    let changed = Command::new(env!("CARGO_BIN_EXE_fedkit"))
        .args(args)
        .args(["--set", "client.lr=0.5"])
        .current_dir(cwd)
        .output()
        .unwrap();
    fails_with(changed, &["fedavg", "different `client`", "another --out"]);
    // A bad variant is caught before anything runs.
    fails_with(
        fedkit(
            &["compare", &format!("{cwd}/configs/smoke/synthetic.toml"), "--variant", "x=algorithm.use=fedfoo"],
            &[],
        ),
        &["variant `x`", "fedfoo"],
    );
}

#[test]
fn data_export_writes_the_federation_and_the_initial_model() {
    let d = tmp("export");
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/smoke/synthetic.toml");
    let o = fedkit(&["data", "export", cfg, "--out", d.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("meta.json")).unwrap()).unwrap();
    let (n, t, dim) = (
        meta["train_samples"].as_u64().unwrap() as usize,
        meta["test_samples"].as_u64().unwrap() as usize,
        meta["feature_shape"][0].as_u64().unwrap() as usize,
    );
    let size = |f: &str| std::fs::metadata(d.join(f)).unwrap().len() as usize;
    assert_eq!((size("train_x.f32"), size("train_y.u32")), (4 * n * dim, 4 * n));
    assert_eq!((size("test_x.f32"), size("test_y.u32")), (4 * t * dim, 4 * t));
    assert_eq!(size("init.f32"), 4 * meta["params"].as_u64().unwrap() as usize);
    let clients: Vec<Vec<u32>> = serde_json::from_slice(&std::fs::read(d.join("clients.json")).unwrap()).unwrap();
    assert_eq!(clients.len(), meta["clients"].as_u64().unwrap() as usize);
    let mut all: Vec<u32> = clients.concat();
    all.sort_unstable();
    assert_eq!(all, (0..n as u32).collect::<Vec<_>>(), "the clients partition the training set");
    assert_eq!(meta["layout"][0]["name"], "linear.weight");
    assert_eq!(meta["layout"][0]["shape"], serde_json::json!([dim, 10]));
    // The cohorts: one per round, per_round distinct sorted ids, drawn afresh each round.
    let cohorts: Vec<Vec<u32>> = serde_json::from_slice(&std::fs::read(d.join("cohorts.json")).unwrap()).unwrap();
    assert_eq!(cohorts.len(), 3, "rounds = 3 in the smoke config");
    for c in &cohorts {
        assert_eq!(c.len(), 5, "per_round = 5");
        assert!(c.windows(2).all(|w| w[0] < w[1]) && (*c.last().unwrap() as usize) < clients.len());
    }
    assert!(cohorts[0] != cohorts[1] || cohorts[1] != cohorts[2], "the draws differ between rounds");
}

// The README's "What exists today" block is the registry: it must equal `fedkit list --markdown`
// (regenerate it with that command when a method is added).
#[test]
fn the_readme_lists_exactly_the_registry() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let (begin, end) = ("<!-- registry:begin -->\n", "<!-- registry:end -->");
    let a = readme.find(begin).expect("README has the registry block") + begin.len();
    let b = readme[a..].find(end).expect("the block ends") + a;
    let listed = String::from_utf8(fedkit(&["list", "--markdown"], &[]).stdout).unwrap();
    assert_eq!(
        &readme[a..b],
        listed,
        "README.md's registry block differs from `fedkit list --markdown`: paste that command's output between the markers"
    );
}

// `compare --seeds 3` runs every variant with seeds s, s + 1, s + 2 into <label>/seed<k>/ and
// reports mean ± std; the seed-k run is the plain run with seed = s + k, bit for bit.
#[test]
fn compare_over_seeds_reports_mean_and_spread() {
    let d = tmp("seeds");
    let out = d.join("cmp");
    let cwd = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let o = Command::new(env!("CARGO_BIN_EXE_fedkit"))
        .args(["compare", "configs/smoke/synthetic.toml", "--algorithms", "fedavg", "--seeds", "3", "--last", "2"])
        .args(["--at", "2", "--out", out.to_str().unwrap(), "-q"])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(md.contains("| variant | seeds | acc@2 | final_acc | best_acc | mean_last2 |"), "{md}");
    assert!(md.contains("| fedavg | 1 2 3 | ") && md.contains(" ± "), "{md}");
    let plain = d.join("plain");
    let o = Command::new(env!("CARGO_BIN_EXE_fedkit"))
        .args(["run", "configs/smoke/synthetic.toml", "--set", "seed=3", "--out", plain.to_str().unwrap(), "-q"])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let a = std::fs::read(plain.join("metrics.jsonl")).unwrap();
    assert_eq!(a, std::fs::read(out.join("fedavg").join("seed2").join("metrics.jsonl")).unwrap());
}

// `sweep` runs the grid's points, selects on the validation split it adds, and writes the table
// and the selected point's config.
#[test]
fn sweep_selects_on_validation() {
    let d = tmp("sweep");
    let out = d.join("sw");
    // `fedkit sweep configs/smoke/synthetic.toml ARGS`, run from the repository root.
    let sweep = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fedkit"))
            .args(["sweep", "configs/smoke/synthetic.toml"])
            .args(args)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .output()
            .unwrap()
    };
    let o = sweep(&["--grid", "client.lr=0.001,0.05", "--seeds", "2", "--out", out.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(md.contains("| p0 | `client.lr=0.001` |") && md.contains("| p1 | `client.lr=0.05` |"), "{md}");
    assert_eq!(md.matches("**best**").count(), 1, "{md}");
    let best = std::fs::read_to_string(out.join("best.toml")).unwrap();
    assert!(best.contains("validation = 0.1"), "the held-out validation split is in the config");
    let rows = std::fs::read_to_string(out.join("p0").join("seed0").join("metrics.jsonl")).unwrap();
    assert!(rows.contains("\"val_acc\""), "evaluation rounds record val_acc");
    let bad = sweep(&["--grid", "client.lr", "--out", out.to_str().unwrap()]);
    fails_with(bad, &["--grid", "KEY=V1,V2"]);
    // A point whose run diverges is marked failed and never selected.
    let out = d.join("sw2");
    let o = sweep(&["--grid", "client.lr=0.001,0.01,1e38", "--out", out.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(md.contains("| p2 | `client.lr=1e38` | - |") && md.contains("failed: seed 1 (not selectable)"), "{md}");
    assert!(md.contains("selected: p1") && !md.contains("warning"), "0.01 is inside the grid: {md}");
}

// `matrix` runs every attack x defence cell on the same federation and writes the grids, the CSV
// and the heat maps; a strong sign-flip attack hurts the mean and not the median.
#[test]
fn matrix_runs_every_cell_and_writes_heat_maps() {
    let d = tmp("matrix");
    let cfg = write(
        &d,
        "m.toml",
        "rounds = 10\n[model]\nuse = \"logreg\"\n[client]\nlr = 0.01\nepochs = 2\n[sampling]\nper_round = 10\n[threat]\nmalicious_fraction = 0.3\nper_round_min = 3\n",
    );
    let out = d.join("m");
    let args = [
        "matrix",
        &cfg,
        "--attacks",
        "none",
        "--attack",
        "flip4=[{ use = \"sign_flip\", on = \"malicious\", scale = 4.0 }]",
        "--defenses",
        "mean,median",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    let o = fedkit(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("matrix.md")).unwrap();
    assert!(md.contains("| attack \\ defence | mean | median |") && md.contains("### test_acc"), "{md}");
    let csv = std::fs::read_to_string(out.join("matrix.csv")).unwrap();
    let acc = |a: &str, d: &str| -> f64 {
        let line = csv.lines().find(|l| l.starts_with(&format!("{a},{d},"))).unwrap();
        line.split(',').nth(4).unwrap().parse().unwrap()
    };
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(acc("flip4", "mean") < acc("none", "mean") - 0.05, "{csv}");
    assert!(acc("flip4", "median") > acc("flip4", "mean") + 0.05, "{csv}");
    for f in ["heat_test_acc.png", "heat_backdoor_acc.png"] {
        assert!(std::fs::read(out.join(f)).unwrap().starts_with(b"\x89PNG"), "{f}");
    }
    assert!(std::fs::read_to_string(out.join("heat_test_acc.svg")).unwrap().contains("<svg"));
    // Rerunning resumes: every cell is already finished.
    let again = fedkit(&args, &[]);
    assert!(again.status.success() && stderr(&again).matches("already finished").count() == 4, "{}", stderr(&again));
    fails_with(fedkit(&["matrix", &cfg, "--attacks", "nope", "--defenses", "mean"], &[]), &["unknown attack `nope`"]);
}

// `certify` smooths a finished run's model: the certified accuracy falls with the radius and is
// zero beyond the largest radius M votes can certify (sigma Phi^-1(alpha^(1/M))).
#[test]
fn certify_reports_certified_accuracy_against_radius() {
    let d = tmp("certify");
    let cfg = write(&d, "c.toml", SMALL);
    let run = d.join("run");
    let o = fedkit(&["run", &cfg, "--set", "aggregator.use=\"crfl\"", "--out", run.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fedkit(
        &["certify", run.to_str().unwrap(), "--sigma", "0.01", "--samples", "20", "--radii", "0,0.005,0.02"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(run.join("certify.csv")).unwrap();
    let acc: Vec<f64> = csv.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(acc.len(), 3, "{csv}");
    assert!(acc[0] > 0.0 && acc[0] >= acc[1], "{csv}");
    // 20 unanimous votes at alpha 0.001 certify at most 0.01 * Phi^-1(0.001^(1/20)) = 0.0087.
    assert_eq!(acc[2], 0.0, "{csv}");
    fails_with(fedkit(&["certify", run.to_str().unwrap(), "--sigma", "0"], &[]), &["--sigma", "> 0"]);
}

#[test]
fn privacy_epsilon_and_noise_with_json_and_clear_errors() {
    let base = ["--sampling-rate", "0.04", "--steps", "2250", "--delta", "1e-5"];
    let args = |head: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
        head.iter().chain(base.iter()).chain(tail).copied().collect()
    };
    // Opacus's published value on its own grid and series.
    let o = fedkit(&args(&["privacy", "epsilon", "--noise-multiplier", "1.5"], &["--like", "opacus", "--json"]), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    assert!((v["epsilon"].as_f64().unwrap() - 7.32911117143).abs() < 1e-9, "{v}");
    assert_eq!((v["order"].as_f64(), v["accountant"].as_str()), (Some(3.9), Some("rdp")));
    assert_eq!(v["neighbours"], "add/remove one");
    // The noise for that epsilon gives it back.
    let o = fedkit(&args(&["privacy", "noise", "--epsilon", "7.32911117143"], &["--like", "opacus", "--json"]), &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let sigma = v["noise_multiplier"].as_f64().unwrap();
    assert!((sigma - 1.5).abs() < 1e-6 && v["epsilon"].as_f64().unwrap() <= 7.32911117143, "{v}");
    // The PLD accountant: dp-accounting's PLDAccountant value, no order; its noise gives it back.
    let pld = ["--sampling-rate", "0.01", "--steps", "1000", "--delta", "1e-6", "--accountant", "pld", "--json"];
    let mut a = vec!["privacy", "epsilon", "--noise-multiplier", "1"];
    a.extend(pld);
    let v: serde_json::Value = serde_json::from_slice(&fedkit(&a, &[]).stdout).expect("JSON");
    assert!((v["epsilon"].as_f64().unwrap() / 2.1245225256749363 - 1.0).abs() < 1e-6, "{v}");
    assert_eq!((v["order"].is_null(), v["accountant"].as_str()), (true, Some("pld")));
    let mut a = vec!["privacy", "noise", "--epsilon", "2.1245225256749363"];
    a.extend(pld);
    let v: serde_json::Value = serde_json::from_slice(&fedkit(&a, &[]).stdout).expect("JSON");
    assert!((v["noise_multiplier"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{v}");
    let mut a = vec!["privacy", "epsilon", "--noise-multiplier", "1", "--sampling", "without-replacement"];
    a.extend(pld);
    fails_with(fedkit(&a, &[]), &["--accountant pld", "poisson"]);
    // Plain text names the neighbouring relation.
    let o =
        fedkit(&args(&["privacy", "epsilon", "--noise-multiplier", "1"], &["--sampling", "without-replacement"]), &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("replace one neighbours"));
    // Every bad input: one line naming the flag, non-zero exit. Arguments after the first 8
    // complete a valid call.
    let call = |cmd: &'static str, flag: &'static str, value: &'static str| -> Vec<&'static str> {
        let mut a = vec!["privacy", cmd, flag, value];
        let rest = [
            ("--noise-multiplier", "1"),
            ("--epsilon", "1"),
            ("--sampling-rate", "0.1"),
            ("--steps", "10"),
            ("--delta", "1e-5"),
        ];
        for (f, v) in rest {
            let other_command = (cmd == "epsilon" && f == "--epsilon") || (cmd == "noise" && f == "--noise-multiplier");
            if f != flag && !other_command {
                a.extend([f, v]);
            }
        }
        a
    };
    for (a, msg) in [
        (call("epsilon", "--noise-multiplier", "0"), "--noise-multiplier: must be a finite number > 0"),
        (call("epsilon", "--delta", "1.5"), "--delta: must be in (0, 1)"),
        (call("epsilon", "--sampling-rate", "2"), "--sampling-rate: must be in (0, 1]"),
        (call("epsilon", "--steps", "0"), "--steps: must be at least 1"),
        (call("epsilon", "--orders", "0.5,2"), "--orders: every order must be"),
        (call("epsilon", "--accountant", "moments"), "possible values: rdp, pld"),
        (call("noise", "--epsilon", "-1"), "--epsilon: must be a finite number > 0"),
        (call("noise", "--sampling-rate", "0"), "--sampling-rate: must be in (0, 1]"),
    ] {
        fails_with(fedkit(&a, &[]), &[msg]);
    }
}

#[test]
fn plot_draws_a_curve_per_variant_with_a_seed_band_as_svg_and_png() {
    let d = tmp("plot");
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/smoke/synthetic.toml");
    let out = d.join("cmp");
    let o = fedkit(
        &[
            "compare",
            cfg,
            "--variant",
            "plain=rounds=4",
            "--variant",
            "fp16=rounds=4;pipeline=[{ use = \"fp16\" }]",
            "--seeds",
            "2",
            "--out",
            out.to_str().unwrap(),
            "-q",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // compare draws its own accuracy curves next to its tables.
    assert!(out.join("comparison.png").is_file() && out.join("comparison.svg").is_file());
    let svg = d.join("p.svg");
    let o = fedkit(&["plot", out.to_str().unwrap(), "--x", "bytes-up", "--out", svg.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("plain") && text.contains("fp16"), "legend labels");
    assert!(text.matches("<polyline").count() >= 2, "a line per curve");
    assert!(text.contains("MB sent"), "the x axis is labelled");
    let png = d.join("p.png");
    let o = fedkit(&["plot", out.join("plain").to_str().unwrap(), "--out", png.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    assert!(bytes.len() > 5000, "{} bytes: nothing drawn?", bytes.len());
    fails_with(
        fedkit(&["plot", out.to_str().unwrap(), "--out", d.join("p.gif").to_str().unwrap()], &[]),
        &[".png or .svg"],
    );
    fails_with(
        fedkit(&["plot", out.to_str().unwrap(), "--metric", "nope", "--out", svg.to_str().unwrap()], &[]),
        &["no `nope`"],
    );
    fails_with(
        fedkit(&["plot", d.to_str().unwrap(), "--out", svg.to_str().unwrap()], &[]),
        &["neither a run directory"],
    );
}

// `fedkit train`: one client holding every training sample, the config's model and [compress].
#[test]
fn train_runs_centrally_with_the_compression_method() {
    let d = tmp("train");
    let cfg = d.join("lt.toml");
    std::fs::write(
        &cfg,
        "rounds = 3\n[data.synthetic]\nusers = 6\n[model]\nuse = \"mlp\"\nhidden = [8]\n[compress]\nuse = \"lottery_ticket\"\nevery = 1\n",
    )
    .unwrap();
    let out = d.join("run");
    let o = fedkit(&["train", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resolved = std::fs::read_to_string(out.join("resolved.toml")).unwrap();
    assert!(resolved.contains("clients = 1") && resolved.contains("lottery_ticket"), "{resolved}");
    let last = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().last().unwrap().to_string();
    assert!(last.contains("\"participants\":1"), "{last}");
    // Two pruning steps of 20% per tensor: 0.8^2 up to rounding.
    let density: f64 = last.split("\"density\":").nth(1).unwrap().split([',', '}']).next().unwrap().parse().unwrap();
    assert!((density - 0.64).abs() < 0.005, "{last}");
}

// `fedkit attack invert` on a kept FedSGD update writes its report and picture; bad inputs (no
// run directory, a round or client the run lacks, an update not kept, mini-batch training, an
// attack for another kind of data) are clear errors.
#[test]
fn attack_invert_reports_and_refuses_what_it_cannot_attack() {
    let d = tmp("attack");
    let base = "rounds = 1\n[data.synthetic]\nusers = 8\n[model]\nuse = \"mlp\"\nhidden = [16]\n[sampling]\nper_round = 8\n\
                [output]\nkeep_models = \"every:1\"\nkeep_clients = [0]\n";
    let cfg = write(&d, "fedsgd.toml", &format!("{base}[client]\nbatch_size = 100000\n"));
    let run = d.join("run");
    let run_s = run.to_str().unwrap();
    let o = fedkit(&["run", &cfg, "--out", run_s, "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.join("attack");
    let o = fedkit(
        &[
            "attack",
            "invert",
            "--run",
            run_s,
            "--round",
            "1",
            "--client",
            "0",
            "--iterations",
            "50",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["attack"], "invert_gradients");
    assert!(report["mean_psnr"].as_f64().unwrap().is_finite() && report["baseline_psnr"].as_f64().is_some());
    assert!(report["label_accuracy"].as_f64().unwrap() > 0.0);
    assert!(out.join("reconstructions.png").metadata().unwrap().len() > 100);
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("mean-image baseline"));
    let attack = |extra: &[&str]| {
        let mut a = vec!["attack", "invert", "--iterations", "5"];
        a.extend_from_slice(extra);
        fedkit(&a, &[])
    };
    let unrolled =
        attack(&["--run", run_s, "--round", "1", "--client", "0", "--unrolled", "--out", out.to_str().unwrap()]);
    assert!(unrolled.status.success(), "{}", stderr(&unrolled));
    fails_with(
        attack(&["--run", d.to_str().unwrap(), "--round", "1", "--client", "0"]),
        &["not a fedkit run directory"],
    );
    fails_with(attack(&["--run", run_s, "--round", "2", "--client", "0"]), &["--round 2", "1..=1"]);
    fails_with(attack(&["--run", run_s, "--round", "1", "--client", "99"]), &["--client 99", "0..8"]);
    fails_with(attack(&["--run", run_s, "--round", "1", "--client", "3"]), &["no update of client 3", "keep_clients"]);
    fails_with(
        fedkit(&["attack", "film", "--run", run_s, "--round", "1", "--client", "0"], &[]),
        &["film", "one label per sample", "fortunes"],
    );
    // The aggregate (what the server sees under secure aggregation): every client's samples
    // are behind it.
    let sum = d.join("sum");
    let o = attack(&["--run", run_s, "--round", "1", "--aggregate", "--out", sum.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sum.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["aggregate"], true);
    let total = r["samples"].as_u64().unwrap();
    assert!(total > report["samples"].as_u64().unwrap(), "the sum covers more samples than client 0 holds: {r}");
    fails_with(attack(&["--run", run_s, "--round", "1", "--aggregate", "--client", "0"]), &["--client"]);
    let part = write(
        &d,
        "partial.toml",
        &format!("{base}[client]\nbatch_size = 100000\n").replace("per_round = 8", "per_round = 3"),
    );
    let run_p = d.join("part");
    assert!(fedkit(&["run", &part, "--out", run_p.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(
        attack(&["--run", run_p.to_str().unwrap(), "--round", "1", "--aggregate"]),
        &["needs every client", "summed 3 of 8"],
    );
    // Under secure aggregation each update counts once: unequal clients are refused.
    let sa = write(
        &d,
        "sa.toml",
        &format!("{base}[client]\nbatch_size = 100000\n[secure_aggregation]\nuse = \"secagg\"\n")
            .replace("keep_clients = [0]\n", ""),
    );
    let run_sa = d.join("sa");
    let o = fedkit(&["run", &sa, "--out", run_sa.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(
        attack(&["--run", run_sa.to_str().unwrap(), "--round", "1", "--aggregate"]),
        &["counts every client once", "client sizes"],
    );
    let mini = write(&d, "minibatch.toml", &format!("{base}[client]\nbatch_size = 2\n"));
    let run2 = d.join("mini");
    assert!(fedkit(&["run", &mini, "--out", run2.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(
        attack(&["--run", run2.to_str().unwrap(), "--round", "1", "--client", "0"]),
        &["mini-batches of 2", "client.batch_size >="],
    );
}

// `fedkit attack film` on a kept one-step update of the transformer recovers the batch's input
// tokens exactly (bag precision and recall 1) and writes beams as words.
#[test]
fn attack_film_recovers_the_bag_of_words_when_the_fortunes_are_installed() {
    if !Path::new("/usr/share/games/fortunes/computers").exists() {
        eprintln!("skipped: the fortune files are not installed (apt-get install fortunes)");
        return;
    }
    let d = tmp("film");
    let cfg = write(
        &d,
        "lm.toml",
        "rounds = 1\n[data]\nname = \"fortunes\"\nclients = 200\npartition = { use = \"iid\" }\nsubsample = 0.02\n\
         fortunes = { seq_len = 8, vocab = 300 }\n[model]\nuse = \"transformer\"\ndim = 16\nlayers = 1\nheads = 2\n\
         [client]\noptimizer = \"adam\"\nlr = 0.005\nbatch_size = 1000\n[sampling]\nper_round = 200\n\
         [eval]\ntest_samples = 100\ntrain_loss = false\n[output]\nkeep_models = \"every:1\"\nkeep_clients = [0]\n",
    );
    let run = d.join("run");
    let o = fedkit(&["run", &cfg, "--out", run.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.join("film");
    let o = fedkit(
        &[
            "attack",
            "film",
            "--run",
            run.to_str().unwrap(),
            "--round",
            "1",
            "--client",
            "0",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!((r["bag_precision"].as_f64(), r["bag_recall"].as_f64()), (Some(1.0), Some(1.0)), "{r}");
    let beams = r["beams"].as_array().unwrap();
    assert_eq!(beams.len(), 16);
    assert_eq!(beams[0]["text"].as_str().unwrap().split(' ').count(), 8, "a beam is one window of words");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("ROUGE-L"));
}

// `fedkit attack membership` writes its report and ROC; a run where every sample is a member (no
// non-members left) and too few shadows are clear errors. On Fashion-MNIST (when installed) the
// overfitted FedAvg mlp of configs/papers/membership_fmnist.toml: members lose less than
// non-members, and LiRA separates them clearly better than the loss threshold does.
#[test]
fn attack_membership_reports_roc_and_lira_beats_the_loss_threshold() {
    let d = tmp("membership");
    let base = "rounds = 3\n[data]\nclients = 4\nsubsample = 0.2\n[data.synthetic]\nusers = 4\n[model]\nuse = \"mlp\"\nhidden = [16]\n\
                [sampling]\nper_round = 4\n[eval]\nevery = 3\n";
    let cfg = write(&d, "mia.toml", base);
    let run = d.join("run");
    assert!(fedkit(&["run", &cfg, "--out", run.to_str().unwrap(), "-q"], &[]).status.success());
    let attack_with = |run: &Path, shadows: &str, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "attack",
            "membership",
            "--run",
            run.to_str().unwrap(),
            "--shadows",
            shadows,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        fedkit(&args, &[])
    };
    let attack = |run: &Path, shadows: &str, out: &Path| attack_with(run, shadows, out, &[]);
    let report = |out: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
    };
    let o = attack(&run, "2", &d.join("mia"));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&d.join("mia"));
    assert_eq!(
        (r["results"][0]["attack"].as_str(), r["results"][1]["attack"].as_str()),
        (Some("loss threshold"), Some("LiRA (online)"))
    );
    assert!(d.join("mia/roc.png").metadata().unwrap().len() > 1000);
    let all = write(&d, "all.toml", &base.replace("subsample = 0.2\n", ""));
    let run2 = d.join("all");
    assert!(fedkit(&["run", &all, "--out", run2.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(attack(&run2, "2", &d.join("x")), &["data.subsample < 1", "non-members"]);
    fails_with(attack(&run, "1", &d.join("x")), &["at least 2"]);
    // --personalised on FedAvg scores every sample on the global model again: the same numbers.
    let pers = |run: &Path, out: &Path| attack_with(run, "2", out, &["--personalised"]);
    let o = pers(&run, &d.join("mia-pers"));
    assert!(o.status.success(), "{}", stderr(&o));
    let p = report(&d.join("mia-pers"));
    assert_eq!((p["model"].as_str(), r["model"].as_str()), (Some("personalised"), Some("global")));
    assert_eq!(p["results"], r["results"], "FedAvg's personalised model is the global one");
    let last: serde_json::Value = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("test_acc").is_some())
        .last()
        .unwrap();
    let acc = r["scored_models_test_acc"].as_f64().unwrap();
    assert!((acc - last["test_acc"].as_f64().unwrap()).abs() < 1e-9, "the scored model's accuracy: {acc} vs {last}");
    // Standalone training keeps a model per client: refused without --personalised, attacked with.
    let local = write(&d, "local.toml", &format!("{base}[algorithm]\nuse = \"local\"\n"));
    let run5 = d.join("local");
    assert!(fedkit(&["run", &local, "--out", run5.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(attack(&run5, "2", &d.join("x")), &["keeps a model per client", "--personalised"]);
    let o = pers(&run5, &d.join("local-mia"));
    assert!(o.status.success(), "{}", stderr(&o));
    let l = report(&d.join("local-mia"));
    assert_eq!(l["results"][1]["attack"], "LiRA (online)", "{l}");
    // A FedDF student: the server's unlabeled pool is neither member nor non-member (the
    // shadows distil on the same pool); with all of the unheld samples its pool, none is left.
    let feddf = format!("{base}[algorithm]\nuse = \"feddf\"\nsteps = 2\n");
    let half = write(&d, "feddf.toml", &feddf.replace("subsample = 0.2\n", "subsample = 0.2\nunlabeled_share = 0.5\n"));
    let run3 = d.join("feddf");
    assert!(fedkit(&["run", &half, "--out", run3.to_str().unwrap(), "-q"], &[]).status.success());
    let o = attack(&run3, "2", &d.join("feddf-mia"));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&d.join("feddf-mia"));
    let (pool, server) = (r["non_member_pool"].as_i64().unwrap(), r["server_unlabeled"].as_i64().unwrap());
    assert!(server > 0 && (pool - server).abs() <= 1, "half of the unheld samples each: {r}");
    let whole = write(&d, "feddf-all.toml", &feddf);
    let run4 = d.join("feddf-all");
    assert!(fedkit(&["run", &whole, "--out", run4.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(attack(&run4, "2", &d.join("x")), &["none is left as a non-member", "lower data.unlabeled_share"]);
    if !Path::new("/usr/share/datasets/fashion-mnist").exists() {
        eprintln!("skipped the Fashion-MNIST part: apt-get install dataset-fashion-mnist");
        return;
    }
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/papers/membership_fmnist.toml");
    let fm = d.join("fmnist");
    let o = fedkit(&["run", cfg, "--set", "rounds=20", "--out", fm.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = attack(&fm, "8", &d.join("fm-mia"));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&d.join("fm-mia"));
    assert!(r["mean_loss_members"].as_f64() < r["mean_loss_non_members"].as_f64(), "{r}");
    let (loss, lira) = (&r["results"][0], &r["results"][1]);
    let at = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(at(lira, "auc") > 0.55 && at(lira, "auc") > at(loss, "auc") + 0.03, "{r}");
    assert!(at(lira, "tpr_at_1%_fpr") > 2.0 * at(loss, "tpr_at_1%_fpr"), "{r}");
}

// `fedkit attack audit`: canaries that send nothing give a lower bound of 0; under DP-FedAvg the
// bound stays below the accountant's epsilon; a run without canaries is a clear error.
#[test]
fn attack_audit_bounds_epsilon_below_the_accountant() {
    let d = tmp("audit");
    let base = "rounds = 10\n[data.synthetic]\nusers = 200\n[model]\nuse = \"logreg\"\n[sampling]\nscheme = \"poisson\"\nrate = 0.2\n\
                [eval]\nevery = 10\n[threat]\nmalicious_fraction = 0.5\n\
                [[pipeline]]\nuse = \"audit_canary\"\non = \"malicious\"\nnorm = NORM\n\
                [[pipeline]]\nuse = \"dp_fixed_clip\"\nclip = 1.0\nnoise_multiplier = 0.5\ndelta = 1e-5\n\
                [output]\nkeep_models = \"every:1\"\n";
    let bound = |norm: &str, score: &str| -> serde_json::Value {
        let run = d.join(format!("run{norm}"));
        if !run.join("checkpoint.bin").exists() {
            let cfg = write(&d, &format!("{norm}.toml"), &base.replace("NORM", norm));
            let o = fedkit(&["run", &cfg, "--out", run.to_str().unwrap(), "-q"], &[]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = fedkit(&["attack", "audit", "--run", run.to_str().unwrap(), "--score", score], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&std::fs::read_to_string(run.join("attack-audit/report.json")).unwrap()).unwrap()
    };
    let null = bound("0.0", "final");
    assert_eq!(null["epsilon_lower_bound"].as_f64(), Some(0.0), "{null}");
    let dp = bound("1.0", "final");
    let (lb, acc) = (dp["epsilon_lower_bound"].as_f64().unwrap(), dp["accountant_epsilon"].as_f64().unwrap());
    assert!(lb > 0.0 && lb < acc, "{dp}");
    assert_eq!(dp["canaries"].as_u64(), Some(100));
    // Scored on every intermediate model: still 0 without canaries, still below the accountant.
    let null = bound("0.0", "rounds");
    assert_eq!((null["score"].as_str(), null["epsilon_lower_bound"].as_f64()), (Some("rounds"), Some(0.0)), "{null}");
    let dp = bound("1.0", "rounds");
    let lb = dp["epsilon_lower_bound"].as_f64().unwrap();
    assert!(lb > 0.0 && lb < acc, "{dp}");
    let nodp = write(
        &d,
        "nodp.toml",
        &base
            .replace("NORM", "1.0")
            .replace("[[pipeline]]\nuse = \"dp_fixed_clip\"\nclip = 1.0\nnoise_multiplier = 0.5\ndelta = 1e-5\n", ""),
    );
    let run_n = d.join("nodp");
    let o = fedkit(&["run", &nodp, "--out", run_n.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(
        fedkit(&["attack", "audit", "--run", run_n.to_str().unwrap(), "--score", "rounds"], &[]),
        &["noise_multiplier > 0"],
    );
    let unkept = write(
        &d,
        "unkept.toml",
        &base.replace("NORM", "1.0").replace("keep_models = \"every:1\"", "keep_models = \"last\""),
    );
    let run_u = d.join("unkept");
    assert!(fedkit(&["run", &unkept, "--out", run_u.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(
        fedkit(&["attack", "audit", "--run", run_u.to_str().unwrap(), "--score", "rounds"], &[]),
        &["keep_models = \"every:1\""],
    );
    let plain = write(&d, "plain.toml", "rounds = 2\n[data.synthetic]\nusers = 8\n[sampling]\nper_round = 4\n");
    let run = d.join("plain");
    assert!(fedkit(&["run", &plain, "--out", run.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(fedkit(&["attack", "audit", "--run", run.to_str().unwrap()], &[]), &["no canaries", "audit_canary"]);
    // DP before the canaries would let them replace the privatised update.
    let (canary, dp) = base.split_at(base.find("[[pipeline]]\nuse = \"dp_fixed_clip\"").unwrap());
    let swapped = canary
        .replace("[[pipeline]]\nuse = \"audit_canary\"", &format!("{dp}[[pipeline]]\nuse = \"audit_canary\""))
        .replace("NORM", "1.0");
    let cfg = write(&d, "swapped.toml", &swapped);
    let run = d.join("swapped");
    assert!(fedkit(&["run", &cfg, "--out", run.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(fedkit(&["attack", "audit", "--run", run.to_str().unwrap()], &[]), &["runs before audit_canary"]);
}

// `fedkit attack instahide` recovers a client's images from their encodings: without the key
// (k = 2) far better than the mean image, with the mixing known almost exactly; for k = 4 only
// the known-mixing attack runs; a run without the stage and bad counts are clear errors.
#[test]
fn attack_instahide_recovers_images_from_encodings_when_fashion_mnist_is_installed() {
    if !Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let d = tmp("attack-instahide");
    let base = "rounds = 1\n[data]\nname = \"fashion_mnist\"\nclients = 4\nsubsample = 0.01\n[model]\nuse = \"logreg\"\n\
                [sampling]\nper_round = 4\n[eval]\nevery = 1\n";
    let stage = |k: usize| format!("[[pipeline]]\nuse = \"instahide\"\nk = {k}\nupper = 0.65\ncenter = 0.286\n");
    let report = |k: usize| -> serde_json::Value {
        let cfg = write(&d, &format!("k{k}.toml"), &format!("{base}{}", stage(k)));
        let run = d.join(format!("run{k}"));
        if !run.join("resolved.toml").exists() {
            let o = fedkit(&["run", &cfg, "--out", run.to_str().unwrap(), "-q"], &[]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let out = d.join(format!("attack{k}"));
        let o = fedkit(
            &[
                "attack",
                "instahide",
                "--run",
                run.to_str().unwrap(),
                "--images",
                "20",
                "--epochs",
                "15",
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(out.join("reconstructions.png").metadata().unwrap().len() > 100);
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
    };
    let ssim = |r: &serde_json::Value, name: &str| {
        r["rows"].as_array().unwrap().iter().find(|row| row["attack"] == name).map(|row| row["ssim"].as_f64().unwrap())
    };
    let two = report(2);
    assert_eq!((two["encodings"].as_u64(), two["scheme"].as_str()), (Some(300), Some("InstaHide")), "{two}");
    let (keyless, known, mean) =
        (ssim(&two, "key-less").unwrap(), ssim(&two, "known mixing").unwrap(), ssim(&two, "mean image").unwrap());
    assert!(keyless > mean + 0.3 && known > 0.9, "{two}");
    assert!(two["rows"][0]["mixing_right"].as_f64().unwrap() > 0.5, "{two}");
    // The same run attacked again gives the same report (apart from the timings).
    let strip = |mut r: serde_json::Value| {
        r.as_object_mut().unwrap().remove("seconds");
        r["rows"].as_array_mut().unwrap().iter_mut().for_each(|row| {
            row.as_object_mut().unwrap().remove("seconds");
        });
        r
    };
    assert_eq!(strip(report(2)), strip(two.clone()), "the attack is deterministic");
    let four = report(4);
    assert!(ssim(&four, "key-less").is_none() && ssim(&four, "known mixing").unwrap() > 0.9, "{four}");
    let plain = write(&d, "plain.toml", base);
    let run = d.join("plain");
    assert!(fedkit(&["run", &plain, "--out", run.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(fedkit(&["attack", "instahide", "--run", run.to_str().unwrap()], &[]), &["has no instahide stage"]);
    let run2 = d.join("run2");
    let r2 = run2.to_str().unwrap();
    fails_with(fedkit(&["attack", "instahide", "--run", r2, "--images", "1"], &[]), &["--images 1", "must be in 2..="]);
    fails_with(fedkit(&["attack", "instahide", "--run", r2, "--client", "9"], &[]), &["--client 9", "clients 0..4"]);
    fails_with(fedkit(&["attack", "instahide", "--run", d.to_str().unwrap()], &[]), &["not a fedkit run directory"]);
}

// `fedkit attack gan` replays the insider's generator from the stored global models: the
// report says the replay equals the generator in the checkpoint, with a row per shown round and
// the PNG; runs without an insider, a benign --client and an insider whose updates were not
// kept are clear errors.
#[test]
fn attack_gan_replays_the_insiders_generator_when_fashion_mnist_is_installed() {
    if !Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let d = tmp("attack-gan");
    let base = "rounds = 3\n[data]\nname = \"fashion_mnist\"\nclients = 4\nsubsample = 0.005\n[model]\nuse = \"lenet\"\n\
                [sampling]\nper_round = 4\n[eval]\nevery = 3\n[threat]\nids = [1]\n";
    let stage = "[[pipeline]]\nuse = \"gan_leakage\"\non = \"malicious\"\nsteps = 4\nbatch = 8\ninject = 6\n";
    let keep = "[output]\nkeep_models = \"every:1\"\nkeep_clients = [1]\n";
    let cfg = write(&d, "gan.toml", &format!("{base}{stage}{keep}"));
    let run = d.join("run");
    let run_s = run.to_str().unwrap();
    let o = fedkit(&["run", &cfg, "--out", run_s, "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.join("gan");
    let o = fedkit(&["attack", "gan", "--run", run_s, "--samples", "3", "--out", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["attack"], "gan_leakage");
    assert_eq!(report["client"], 1);
    assert_eq!(report["replay_matches_insider"], true, "{report}");
    assert_eq!(report["rows"].as_array().unwrap().len(), 4, "round 0 and the 3 rounds: {report}");
    assert!(out.join("samples.png").metadata().unwrap().len() > 100);
    let attack = |extra: &[&str]| {
        let mut a = vec!["attack", "gan"];
        a.extend_from_slice(extra);
        fedkit(&a, &[])
    };
    fails_with(attack(&["--run", run_s, "--client", "0"]), &["--client 0 is not an insider"]);
    let plain = write(&d, "plain.toml", &format!("{base}{keep}"));
    let run2 = d.join("plain");
    assert!(fedkit(&["run", &plain, "--out", run2.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(attack(&["--run", run2.to_str().unwrap()]), &["has no insider", "gan_leakage"]);
    let unkept = write(&d, "unkept.toml", &format!("{base}{stage}[output]\nkeep_models = \"last\"\n"));
    let run3 = d.join("unkept");
    assert!(fedkit(&["run", &unkept, "--out", run3.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(attack(&["--run", run3.to_str().unwrap()]), &["keep_models = \"every:1\""]);
    // Partial participation and a threat active from round 3 on: the replay follows the rounds
    // the stage ran (from the insider's memory), not every round with a kept update.
    let partial = base
        .replace("per_round = 4", "per_round = 2")
        .replace("rounds = 3", "rounds = 6")
        .replace("ids = [1]", "ids = [1]\nstart_round = 3");
    let cfg4 = write(&d, "partial.toml", &format!("{partial}{stage}{keep}"));
    let run4 = d.join("partial");
    assert!(fedkit(&["run", &cfg4, "--out", run4.to_str().unwrap(), "-q"], &[]).status.success());
    let o = attack(&["--run", run4.to_str().unwrap(), "--out", d.join("gan4").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("gan4/report.json")).unwrap()).unwrap();
    assert_eq!(r["replay_matches_insider"], true, "{r}");
    let shown: Vec<u64> = r["rows"].as_array().unwrap().iter().map(|row| row["round"].as_u64().unwrap()).collect();
    assert!(shown[0] == 0 && shown[1..].iter().all(|&k| k >= 3), "{shown:?}");
    assert!(r["rounds_taken_part"].as_u64().unwrap() < 4, "sampled in fewer than the 4 active rounds: {r}");
    let pruned =
        write(&d, "pruned.toml", &format!("{base}{stage}{keep}[compress]\nuse = \"lottery_ticket\"\nevery = 1\n"));
    let run5 = d.join("pruned");
    let o = fedkit(&["run", &pruned, "--out", run5.to_str().unwrap(), "-q"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(attack(&["--run", run5.to_str().unwrap()]), &["[compress]"]);
}

#[test]
fn analyze_cka_compares_layers_across_runs_and_clients() {
    let d = tmp("cka");
    let base = "rounds = 3\n[data]\nclients = 4\n[data.synthetic]\nusers = 4\n[model]\nuse = \"mlp\"\nhidden = [16, 12, 8]\n[sampling]\nper_round = 4\n\
                [eval]\nevery = 3\n[output]\nkeep_models = \"every:1\"\nkeep_clients = [0, 1]\n";
    let cfg = write(&d, "cka.toml", base);
    // synthetic data comes from the run's seed: the two models differ in their learning rate
    let runs: Vec<PathBuf> = (0..2).map(|s| d.join(format!("lr{s}"))).collect();
    for (lr, run) in ["client.lr=0.05", "client.lr=0.2"].iter().zip(&runs) {
        assert!(fedkit(&["run", &cfg, "--set", lr, "--out", run.to_str().unwrap(), "-q"], &[]).status.success());
    }
    let (a, b) = (runs[0].to_str().unwrap(), runs[1].to_str().unwrap());
    let analyze = |extra: &[&str], out: &Path| {
        let mut args = vec!["analyze", "cka", "--samples", "200", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        fedkit(&args, &[])
    };
    let report = |out: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
    };
    let out = d.join("seeds");
    let o = analyze(&["--run", a, "--run", b], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&out);
    let layers: Vec<&str> = r["models"][0]["layers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(layers, ["fc1", "fc2", "features", "logits"]);
    for m in ["cka", "rbf_cka", "cca", "cca_r2", "svcca", "pwcca", "procrustes"] {
        let mm = &r["model_matrix"][m];
        assert!((mm[0][0].as_f64().unwrap() - 1.0).abs() < 1e-6, "{m}: a model's features match themselves");
        assert_eq!(r["layer_identification"][m]["of"], 8, "{m}: 4 layers x 2 ordered pairs");
        assert!(out.join(format!("layers-{m}.png")).metadata().unwrap().len() > 500);
    }
    assert!(r["grounding"]["metrics"].as_array().unwrap().len() == 7);
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("Layer identification"));
    // deterministic: the same numbers again
    let again = d.join("again");
    assert!(analyze(&["--run", a, "--run", b], &again).status.success());
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(strip(report(&again)), strip(r));
    // a model against itself: linear CKA finds every layer (its diagonal is 1, the rest less)
    let own = d.join("own");
    assert!(analyze(&["--run", a, "--run", a, "--metric", "cka,procrustes"], &own).status.success());
    let r = report(&own);
    assert_eq!(r["layer_identification"]["cka"]["share"], 1.0);
    assert_eq!(r["metrics"].as_array().unwrap().len(), 2);
    // two clients' models of round 3 at the first hidden layer
    let cl = d.join("clients");
    let o = analyze(&["--run", a, "--clients", "0,1", "--round", "3", "--layer", "fc1"], &cl);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&cl);
    assert_eq!((r["models"][1]["label"].as_str(), r["models"][1]["client"].as_u64()), (Some("client 1"), Some(1)));
    assert!(r["grounding"].is_null(), "the grounding test reads the features only");
    // errors name the flag and what is allowed
    let x = d.join("x");
    fails_with(analyze(&["--run", a, "--run", b, "--metric", "ckaa"], &x), &["--metric", "rbf_cka"]);
    fails_with(
        analyze(&["--run", a, "--run", b, "--layer", "fc9"], &x),
        &["--layer fc9", "fc1, fc2, features, logits"],
    );
    fails_with(analyze(&["--run", a], &x), &["at least two"]);
    fails_with(analyze(&["--run", a, "--clients", "0,1"], &x), &["--round"]);
    fails_with(analyze(&["--run", a, "--clients", "0,9", "--round", "3"], &x), &["--clients 9"]);
    fails_with(analyze(&["--run", a, "--run", b, "--round", "7"], &x), &["--round 7", "keeps"]);
    let bare = d.join("bare");
    let plain = write(&d, "plain.toml", &base.replace("keep_models = \"every:1\"\nkeep_clients = [0, 1]\n", ""));
    assert!(fedkit(&["run", &plain, "--out", bare.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(analyze(&["--run", bare.to_str().unwrap(), "--run", a], &x), &["keep_models"]);
    let other = d.join("other");
    assert!(fedkit(&["run", &cfg, "--set", "seed=5", "--out", other.to_str().unwrap(), "-q"], &[]).status.success());
    fails_with(analyze(&["--run", a, "--run", other.to_str().unwrap()], &x), &["different test sets", "seed"]);
}

#[test]
fn analyze_hessian_reports_eigenvalues_trace_and_density() {
    let d = tmp("hessian");
    let cfg = write(
        &d,
        "h.toml",
        "rounds = 2\n[data]\nclients = 4\n[data.synthetic]\nusers = 4\n[model]\nuse = \"mlp\"\nhidden = [8]\n\
         [sampling]\nper_round = 4\n[eval]\nevery = 2\n[output]\nkeep_models = \"last\"\n",
    );
    let run = d.join("run");
    assert!(fedkit(&["run", &cfg, "--out", run.to_str().unwrap(), "-q"], &[]).status.success());
    let r = run.to_str().unwrap();
    let analyze = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "analyze",
            "hessian",
            "--run",
            r,
            "--samples",
            "60",
            "--slq-steps",
            "8",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        fedkit(&args, &[])
    };
    let out = d.join("h");
    let o = analyze(&["--top", "2"], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let m = &rep["models"][0];
    let top: Vec<f64> = m["top_eigenvalues"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(top.len(), 2);
    assert!(top.iter().all(|v| v.is_finite() && *v != 0.0), "{top:?}");
    assert!(m["trace"].as_f64().unwrap().is_finite());
    let w: f64 = m["spectrum"]["weights"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((w - 1.0).abs() < 1e-9, "SLQ weights sum to 1: {w}");
    assert!(out.join("density.png").metadata().unwrap().len() > 1000);
    let again = d.join("again");
    assert!(analyze(&["--top", "2"], &again).status.success());
    let rep2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(again.join("report.json")).unwrap()).unwrap();
    assert_eq!(rep2["models"], rep["models"], "deterministic");
    fails_with(analyze(&["--top", "0"], &d.join("x")), &["--top"]);
    // sparsity over the kept rounds: a share in [0, 1] per round and layer
    let sp = d.join("sparsity");
    let o = fedkit(&["analyze", "sparsity", "--run", r, "--samples", "40", "--out", sp.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sp.join("report.json")).unwrap()).unwrap();
    assert_eq!(s["layers"], serde_json::json!(["features"]));
    assert_eq!(s["rounds"], serde_json::json!([2]));
    let z = s["zero_share"][0][0].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&z) && s["dead_share"][0][0].as_f64().unwrap() <= z);
    assert!(sp.join("sparsity.png").is_file());
    // linear regions: one hidden layer of 8 units has at most 9 on a line
    let lr = d.join("regions");
    let o = fedkit(&["analyze", "linear_regions", "--run", r, "--lines", "5", "--out", lr.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lr.join("report.json")).unwrap()).unwrap();
    for c in g["regions"][0].as_array().unwrap() {
        assert!((1.0..=9.0).contains(&c.as_f64().unwrap()), "{c}");
    }
    let lg = d.join("logreg");
    let cfg_lr = write(
        &d,
        "lr.toml",
        "rounds = 1\n[data]\nclients = 4\n[data.synthetic]\nusers = 4\n[model]\nuse = \"logreg\"\n[output]\nkeep_models = \"last\"\n",
    );
    assert!(fedkit(&["run", &cfg_lr, "--out", lg.to_str().unwrap(), "-q"], &[]).status.success());
    let o = fedkit(
        &["analyze", "linear_regions", "--run", lg.to_str().unwrap(), "--out", d.join("y").to_str().unwrap()],
        &[],
    );
    fails_with(o, &["mlp without normalisation"]);
    fails_with(analyze(&["--round", "1"], &d.join("x")), &["--round 1", "keeps"]);
}
