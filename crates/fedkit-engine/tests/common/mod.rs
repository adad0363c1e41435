//! Shared by the engine's integration tests.

use fedkit_engine::{Engine, RunConfig};

/// The embedded-data config of a test file's `base` settings, then `sets` (later keys win).
pub fn config(base: &[&str], sets: &[&str]) -> fedkit_core::Result<RunConfig> {
    let all: Vec<String> = base.iter().chain(sets).map(|s| s.to_string()).collect();
    RunConfig::load(None, &all)
}

/// An engine built from `c` after all its rounds.
#[allow(dead_code)]
pub fn run(c: RunConfig) -> Engine {
    let mut e = Engine::new(c).unwrap();
    for _ in 0..e.cfg.rounds {
        e.run_round().unwrap();
    }
    e
}
