//! `fedkit run` without a config: FedAvg vs FedProx (mu = 1) on the embedded Synthetic(1,1)
//! data with 90% stragglers, the FedProx paper's hardest systems-heterogeneity setting, at the
//! paper's scale (200 rounds; a few seconds on 2 cores). Prints a result table.

use std::path::PathBuf;

use anyhow::{Result, bail};
use fedkit_engine::RunConfig;

/// The demo's config: FedProx paper, Synthetic(1,1), 30 devices, 10 per round, E = 20, B = 10,
/// lr 0.01, drop 90%, 200 rounds: the paper's setting.
pub fn config(algorithm: &str, sets: &[String]) -> Result<RunConfig> {
    let mut all = vec![
        "rounds=200".to_string(),
        "client.lr=0.01".into(),
        "client.epochs=20".into(),
        "client.batch_size=10".into(),
        "sampling.per_round=10".into(),
        "sampling.drop_percent=0.9".into(),
        format!("algorithm.use=\"{algorithm}\""),
    ];
    if algorithm == "fedprox" {
        all.push("algorithm.mu=1.0".into());
    }
    // `--set algorithm.<key>` tunes FedProx only (FedAvg has no parameters).
    all.extend(sets.iter().filter(|s| algorithm == "fedprox" || !s.starts_with("algorithm.")).cloned());
    Ok(RunConfig::load(None, &all)?)
}

/// The demo's two arms with the user's overrides, each checked (built) before anything runs:
/// `--set` applies to both arms, except `algorithm.*` keys, which tune FedProx (FedAvg has no
/// parameters); choosing another algorithm is refused with the commands that do it.
pub fn arms(sets: &[String]) -> Result<Vec<(&'static str, RunConfig)>> {
    if let Some(s) = sets.iter().find(|s| s.split('=').next().is_some_and(|k| k.trim() == "algorithm.use")) {
        bail!(
            "`--set {s}`: the demo compares two fixed arms, FedAvg and FedProx (mu = 1), and `--set algorithm.<key>` tunes FedProx; \
             to run a chosen algorithm on the demo's data run a config, e.g.\n  fedkit run configs/papers/fedprox_synthetic_1_1.toml --set {s}\n\
             or compare several on the same federation:\n  fedkit compare configs/papers/fedprox_synthetic_1_1.toml --algorithms fedavg,fedprox,scaffold"
        );
    }
    let mut arms = Vec::new();
    for algo in ["fedavg", "fedprox"] {
        let cfg = config(algo, sets)?;
        cfg.clone().build()?;
        arms.push((algo, cfg));
    }
    Ok(arms)
}

pub fn run(sets: &[String], out: Option<PathBuf>, quiet: bool) -> Result<()> {
    let arms = arms(sets)?;
    let base = out.unwrap_or_else(|| PathBuf::from(format!("runs/demo-{}", crate::utc_stamp())));
    eprintln!(
        "demo: FedAvg vs FedProx (mu = 1 unless --set algorithm.mu) on Synthetic(1,1), 30 clients, 90% stragglers (FedProx, MLSys 2020)"
    );
    let mut rows = Vec::new();
    for (algo, cfg) in arms {
        let s = crate::run_config(cfg, &base.join(algo), None, quiet)?;
        rows.push((algo, s));
    }
    println!("\n{:<10} {:>9} {:>9} {:>11} {:>8}", "algorithm", "test_acc", "best_acc", "train_loss", "seconds");
    for (algo, s) in &rows {
        let f = |k: &str| s.last.get(k).map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let best = s.best_test_acc.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!("{:<10} {:>9} {:>9} {:>11} {:>8.1}", algo, f("test_acc"), best, f("train_loss"), s.seconds);
    }
    println!(
        "\nrun directories: {}/{{fedavg,fedprox}} (metrics.jsonl, metrics.csv, timings.jsonl, resolved.toml)",
        base.display()
    );
    Ok(())
}
