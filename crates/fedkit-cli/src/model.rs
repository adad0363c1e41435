//! `fedkit model export RUN_DIR [--round R] [--client C] --out FILE.safetensors`: a run's model
//! as a safetensors file in the tensor names and shapes of the equivalent PyTorch module
//! (docs/models.md), loadable with `safetensors.torch.load_file` + `load_state_dict`, or with
//! `safetensors.numpy.load_file`. Without `--round`: the final model (the checkpoint's). With
//! `--round`: that round's global model from the run's model store (`[output] keep_models`);
//! with `--client` too: that client's update of that round.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use fedkit_core::tensor_file;
use fedkit_engine::model_store;

/// Export the model of `run` to `out`; returns what was written.
pub fn export(run: &Path, round: Option<u32>, client: Option<u32>, out: &Path) -> Result<String> {
    if !run.join("resolved.toml").is_file() {
        bail!("{}: not a fedkit run directory (no resolved.toml)", run.display());
    }
    let cfg = fedkit_engine::run::resolved_config(run)?;
    let (round, params, holds) = match (round, client) {
        (None, Some(_)) => bail!("--client needs --round: the store keeps client updates per round"),
        (None, None) => {
            let (r, p) = fedkit_engine::checkpoint::checkpoint_global(run)?;
            (r, p, "global")
        }
        (Some(r), c) => {
            let path = match c {
                None => model_store::global_path(run, r),
                Some(c) => model_store::update_path(run, c, r),
            };
            if !path.exists() {
                let have = model_store::stored_rounds(run);
                if let Some(c) = c.filter(|_| have.contains(&r)) {
                    let sent = model_store::stored_updates(run, c);
                    bail!(
                        "the store has no update of client {c} in round {r}: it was not sampled or failed that round, \
                         or is not in [output] keep_clients; it has client {c}'s updates of rounds {sent:?}"
                    );
                }
                if c.is_some() || have.is_empty() {
                    bail!(
                        "{} is not in the model store{}; keep it with [output] keep_models = \"every:k\"{}",
                        path.display(),
                        if have.is_empty() { String::new() } else { format!(" (global models of rounds {have:?})") },
                        if c.is_some() { " and keep_clients = [ids]" } else { "" }
                    );
                }
                bail!("{} keeps no model of round {r}; it has rounds {have:?}", run.display());
            }
            let same =
                std::fs::canonicalize(out).ok().is_some_and(|o| std::fs::canonicalize(&path).is_ok_and(|p| p == o));
            if !same {
                std::fs::copy(&path, out).with_context(|| format!("cannot write {}", out.display()))?;
            }
            let meta = tensor_file::read_meta(out)?;
            return Ok(format!(
                "wrote {}: the {} of round {r}{} ({} bytes)",
                out.display(),
                match meta.get("holds").map(String::as_str) {
                    Some("update") => "update",
                    _ => "global model",
                },
                c.map(|c| format!(" of client {c}")).unwrap_or_default(),
                std::fs::metadata(out).map(|m| m.len()).unwrap_or(0)
            ));
        }
    };
    let meta = BTreeMap::from([
        ("round".to_string(), round.to_string()),
        ("holds".to_string(), holds.to_string()),
        ("model".to_string(), toml::to_string(&cfg.model)?),
        ("dataset".to_string(), cfg.data.name.clone()),
        ("seed".to_string(), cfg.seed.to_string()),
    ]);
    tensor_file::write(out, &params, &meta)?;
    let names: Vec<String> =
        params.layout().entries().iter().map(|e| format!("{}{:?}", e.name, tensor_file::torch_shape(e))).collect();
    Ok(format!(
        "wrote {}: the global model after round {round}, {} parameters: {}",
        out.display(),
        params.len(),
        names.join(", ")
    ))
}
