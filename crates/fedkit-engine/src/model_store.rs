//! The model store: `[output] keep_models` keeps past global models (and `keep_clients`'
//! updates) in the run directory's `models/` folder, one safetensors file each in PyTorch's
//! tensor names ([`fedkit_core::tensor_file`]). It is the one place `fedkit model export
//! --round`, the privacy attacks and the analyses read a run's models from.
//!
//! Files: `models/global-r<round>.safetensors` (the global model after that round; round 0 is
//! the initial model) and `models/client<id>-r<round>.update.safetensors` (the update the
//! server received from client `id` in that round: the client's model minus the model it started
//! from, the global model of the round before, or for IFCA the cluster model it chose). Rounds are zero-padded to 5 digits. Each file's metadata holds
//! `round`, `holds` (`global` or `update`), `client`, the `[model]` table and the dataset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedkit_core::{Error, Params, Result, tensor_file};

use crate::engine::Engine;

/// The store's folder inside a run directory.
pub const MODELS_DIR: &str = "models";

/// The global model of `round` in the run directory `dir`.
pub fn global_path(dir: &Path, round: u32) -> PathBuf {
    dir.join(MODELS_DIR).join(format!("global-r{round:05}.safetensors"))
}

/// Client `client`'s update of `round` in the run directory `dir`.
pub fn update_path(dir: &Path, client: u32, round: u32) -> PathBuf {
    dir.join(MODELS_DIR).join(format!("client{client}-r{round:05}.update.safetensors"))
}

/// The rounds of the store's files named `<prefix><round><suffix>`, ascending.
fn rounds_of(dir: &Path, prefix: &str, suffix: &str) -> Vec<u32> {
    let mut r: Vec<u32> = std::fs::read_dir(dir.join(MODELS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok()?.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
        .collect();
    r.sort_unstable();
    r
}

/// The rounds whose global model `dir`'s store holds, ascending.
pub fn stored_rounds(dir: &Path) -> Vec<u32> {
    rounds_of(dir, "global-r", ".safetensors")
}

/// The rounds whose update of `client` `dir`'s store holds, ascending.
pub fn stored_updates(dir: &Path, client: u32) -> Vec<u32> {
    rounds_of(dir, &format!("client{client}-r"), ".update.safetensors")
}

fn meta(engine: &Engine, holds: &str, client: Option<u32>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([
        ("round".to_string(), engine.round.to_string()),
        ("holds".to_string(), holds.to_string()),
        ("model".to_string(), toml::to_string(&engine.cfg.model).unwrap_or_default()),
        ("dataset".to_string(), engine.cfg.data.name.clone()),
        ("seed".to_string(), engine.cfg.seed.to_string()),
    ]);
    if let Some(c) = client {
        m.insert("client".into(), c.to_string());
    }
    m
}

/// Keep what `[output]` asks for after the engine's current round.
pub fn keep(engine: &Engine, dir: &Path) -> Result<()> {
    let out = &engine.cfg.output;
    if !out.keep_models.keeps(engine.round, engine.cfg.rounds) {
        return Ok(());
    }
    tensor_file::write(&global_path(dir, engine.round), &engine.global, &meta(engine, "global", None))?;
    if engine.round > 0 {
        for u in &engine.kept_updates {
            tensor_file::write(
                &update_path(dir, u.client, engine.round),
                &u.delta,
                &meta(engine, "update", Some(u.client)),
            )?;
        }
    }
    Ok(())
}

/// Read client `client`'s update of `round` from `dir`'s store; the error says which updates
/// of that client it has and how to keep them.
pub fn read_update(
    dir: &Path,
    client: u32,
    round: u32,
    layout: &std::sync::Arc<fedkit_core::Layout>,
) -> Result<Params> {
    let p = update_path(dir, client, round);
    if !p.exists() {
        let have = stored_updates(dir, client);
        let msg = if have.is_empty() {
            format!(
                "{} keeps no update of client {client}; run it with [output] keep_models = \"every:1\" and keep_clients = [{client}]",
                dir.display()
            )
        } else {
            format!(
                "{} has no update of client {client} in round {round} (not sampled that round, or it failed); it has rounds {have:?}",
                dir.display()
            )
        };
        return Err(Error::config("--round", msg));
    }
    tensor_file::read(&p, layout)
}

/// Read the global model of `round` from `dir`'s store; the error lists the rounds it has.
pub fn read_global(dir: &Path, round: u32, layout: &std::sync::Arc<fedkit_core::Layout>) -> Result<Params> {
    let p = global_path(dir, round);
    if !p.exists() {
        let have = stored_rounds(dir);
        let msg = if have.is_empty() {
            format!(
                "{} keeps no models; run it with [output] keep_models = \"every:1\" (or \"every:k\")",
                dir.display()
            )
        } else {
            format!("{} keeps no model of round {round}; it has rounds {have:?}", dir.display())
        };
        return Err(Error::config("--round", msg));
    }
    tensor_file::read(&p, layout)
}
