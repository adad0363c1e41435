//! A run on disk: the run directory with `resolved.toml`, `metrics.jsonl`, `metrics.csv`,
//! `timings.jsonl` and `checkpoint.bin`; fresh runs and `--resume`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fedkit_core::{Error, Result};

use crate::config::RunConfig;
use crate::engine::{Engine, Timings};
use crate::record::{Record, to_csv};

/// What the caller sees after each round (for progress display).
pub struct Progress<'a> {
    pub record: &'a Record,
    pub timings: &'a Timings,
    pub rounds: u32,
    /// Clients that failed this round (their updates were left out).
    pub failures: &'a [fedkit_core::ClientFailure],
}

/// The end of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    pub dir: PathBuf,
    pub rounds: u32,
    pub last: Record,
    pub best_test_acc: Option<f64>,
    pub seconds: f64,
}

fn io<T>(p: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(p, e))
}

/// The git commit the binary was built from; the binary sets it at start-up (its build script
/// knows it), and `provenance.json` records it.
static BUILD_COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Record the binary's git commit for the run directories it writes.
pub fn set_build_commit(commit: &str) {
    let _ = BUILD_COMMIT.set(commit.to_string());
}

/// `provenance.json`: what produced the run (fedkit version, git commit, host, threads, the
/// command line, the start time). Not part of the reproducible files: it differs per machine.
fn write_provenance(dir: &Path, cfg: &RunConfig) -> Result<()> {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let v = serde_json::json!({
        "fedkit_version": env!("CARGO_PKG_VERSION"),
        "git_commit": BUILD_COMMIT.get().map(String::as_str).unwrap_or("unknown"),
        "host": host,
        "os": format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        "threads": crate::workers::thread_count(cfg.threads),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "started_unix": started,
    });
    let p = dir.join("provenance.json");
    io(&p, std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap_or_default()))
}

/// A run directory being written.
pub struct RunDir {
    pub dir: PathBuf,
    metrics: File,
    timings: File,
    /// `[output] tensorboard`'s event file.
    tb: Option<crate::tensorboard::TbWriter>,
}

impl RunDir {
    /// Create `dir` for a new run; refuses a directory that already holds a run.
    pub fn create(dir: &Path, cfg: &RunConfig) -> Result<RunDir> {
        if dir.join("metrics.jsonl").exists() {
            return Err(Error::config(
                "--out",
                format!(
                    "{} already holds a run; choose another --out, or continue it with --resume {}",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        io(dir, std::fs::create_dir_all(dir))?;
        let resolved = dir.join("resolved.toml");
        io(&resolved, std::fs::write(&resolved, cfg.to_toml()?))?;
        write_provenance(dir, cfg)?;
        Self::open(dir, false, cfg)
    }

    fn open(dir: &Path, append: bool, cfg: &RunConfig) -> Result<RunDir> {
        let open = |name: &str| {
            let p = dir.join(name);
            io(&p, OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(&p))
        };
        let tb = cfg.output.tensorboard.then(|| crate::tensorboard::TbWriter::create(dir)).transpose()?;
        Ok(RunDir { dir: dir.to_path_buf(), metrics: open("metrics.jsonl")?, timings: open("timings.jsonl")?, tb })
    }

    fn write_record(&mut self, r: &Record) -> Result<()> {
        let p = self.dir.join("metrics.jsonl");
        io(&p, writeln!(self.metrics, "{}", r.to_json()).and_then(|_| self.metrics.flush()))?;
        match &mut self.tb {
            Some(tb) => tb.record(r),
            None => Ok(()),
        }
    }

    /// Append the engine's per-client local evaluation, if it made one this round.
    fn write_local_eval(&mut self, engine: &mut Engine) -> Result<()> {
        let Some(e) = engine.local_eval.take() else { return Ok(()) };
        let p = self.dir.join("local_eval.jsonl");
        let mut f = io(&p, OpenOptions::new().create(true).append(true).open(&p))?;
        io(&p, writeln!(f, "{}", serde_json::to_string(&e).unwrap_or_default()))
    }

    fn write_csv(&self, records: &[Record]) -> Result<()> {
        let p = self.dir.join("metrics.csv");
        io(&p, std::fs::write(&p, to_csv(records)))
    }
}

/// Load the resolved config of an existing run directory.
pub fn resolved_config(dir: &Path) -> Result<RunConfig> {
    let p = dir.join("resolved.toml");
    if !p.exists() {
        return Err(Error::config(
            "--resume",
            format!("{} is not a fedkit run directory (no resolved.toml)", dir.display()),
        ));
    }
    RunConfig::load(Some(&p), &[])
}

/// Start a fresh run of `cfg` in `dir`.
pub fn start(cfg: RunConfig, dir: &Path) -> Result<(Engine, RunDir)> {
    let engine = Engine::new(cfg)?;
    let out = RunDir::create(dir, &engine.cfg)?;
    Ok((engine, out))
}

/// Reopen the run in `dir` at its last checkpoint; the metrics files are rewritten to match it.
/// `rounds` extends (or shortens) the run: its resolved.toml is updated.
pub fn resume(dir: &Path, rounds: Option<u32>) -> Result<(Engine, RunDir)> {
    let mut cfg = resolved_config(dir)?;
    if !dir.join(crate::checkpoint::CHECKPOINT_FILE).exists() {
        return Err(Error::config(
            "--resume",
            format!("{} has no checkpoint yet; start it again instead", dir.display()),
        ));
    }
    if let Some(r) = rounds {
        cfg.rounds = r;
    }
    // The checkpoint holds the model: the starting point (`init_from`, `[model] init`) is not
    // read again, so a moved or changed file cannot stop or alter the continuation.
    let (init_from, init) = (cfg.init_from.take(), cfg.model.remove("init"));
    let mut engine = Engine::new(cfg)?;
    engine.cfg.init_from = init_from;
    if let Some(v) = init {
        engine.cfg.model.insert("init".into(), v);
    }
    engine.load_checkpoint(dir)?;
    if let Some(r) = rounds {
        if r < engine.round {
            let msg = format!("the checkpoint is at round {}; ask for at least that many", engine.round);
            return Err(Error::config("--rounds", msg));
        }
        let p = dir.join("resolved.toml");
        io(&p, std::fs::write(&p, engine.cfg.to_toml()?))?;
    }
    // Keep the timings of the rounds the checkpoint covers; rewrite the metrics to match it.
    let tp = dir.join("timings.jsonl");
    let kept: String = std::fs::read_to_string(&tp)
        .unwrap_or_default()
        .lines()
        .take(engine.round as usize)
        .map(|l| format!("{l}\n"))
        .collect();
    let lp = dir.join("local_eval.jsonl");
    if let Ok(text) = std::fs::read_to_string(&lp) {
        let round = engine.round as u64;
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["round"].as_u64())
                    .is_some_and(|r| r <= round)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        io(&lp, std::fs::write(&lp, kept))?;
    }
    let mut out = RunDir::open(dir, false, &engine.cfg)?;
    io(&tp, out.timings.write_all(kept.as_bytes()))?;
    for r in engine.records.clone() {
        out.write_record(&r)?;
    }
    out.write_csv(&engine.records)?;
    Ok((engine, out))
}

/// Run the remaining rounds, writing every file, checkpointing every `checkpoint_every` rounds
/// and at the end. `stop_after` ends early (for tests and interrupted runs).
pub fn drive(
    engine: &mut Engine,
    out: &mut RunDir,
    stop_after: Option<u32>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    let t0 = std::time::Instant::now();
    let rounds = engine.cfg.rounds;
    if let Some(r) = engine.evaluate_initial()? {
        out.write_record(&r)?;
        progress(Progress { record: &r, timings: &Timings::default(), rounds, failures: &[] });
    }
    if engine.round == 0 {
        crate::model_store::keep(engine, &out.dir)?;
        out.write_local_eval(engine)?;
    }
    let every = engine.cfg.checkpoint_every;
    while engine.round < rounds && stop_after.is_none_or(|s| engine.round < s) {
        let (rec, t) = engine.run_round()?;
        out.write_record(&rec)?;
        let p = out.dir.join("timings.jsonl");
        io(&p, writeln!(out.timings, "{}", t.to_json()))?;
        crate::model_store::keep(engine, &out.dir)?;
        out.write_local_eval(engine)?;
        if (every > 0 && engine.round % every == 0) || engine.round == rounds || stop_after == Some(engine.round) {
            engine.save_checkpoint(&out.dir)?;
            out.write_csv(&engine.records)?;
        }
        progress(Progress { record: &rec, timings: &t, rounds, failures: &engine.last_failures });
    }
    out.write_csv(&engine.records)?;
    let best = engine
        .records
        .iter()
        .filter_map(|r| r.get("test_acc"))
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
    let last = engine
        .records
        .iter()
        .rev()
        .find(|r| r.get("test_acc").is_some())
        .or(engine.records.last())
        .cloned()
        .unwrap_or_default();
    Ok(Summary {
        dir: out.dir.clone(),
        rounds: engine.round,
        last,
        best_test_acc: best,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
