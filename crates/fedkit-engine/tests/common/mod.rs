//! Shared by the engine's integration tests.

use fedkit_engine::RunConfig;

/// The embedded-data config of a test file's `base` settings, then `sets` (later keys win).
pub fn config(base: &[&str], sets: &[&str]) -> fedkit_core::Result<RunConfig> {
    let all: Vec<String> = base.iter().chain(sets).map(|s| s.to_string()).collect();
    RunConfig::load(None, &all)
}
