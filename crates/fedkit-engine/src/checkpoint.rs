//! Checkpoints: everything a run needs to continue bit-identically (global model, server state,
//! every client's algorithm state and stage memory, the metrics so far). Written atomically
//! (temporary file, then rename), so a crash never leaves a half-written checkpoint.

use std::path::Path;

use fedkit_core::{Error, Extras, Params, Result};
use serde::{Deserialize, Serialize};

use crate::engine::{ClientSlot, Engine};
use crate::record::Record;

/// The file name inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";

/// Format 1 (before server-side aggregator/stage state was saved); still readable.
#[derive(Deserialize)]
struct CheckpointV1 {
    format: u32,
    round: u32,
    global: Params,
    server: Vec<u8>,
    clients: Vec<(u32, Option<Vec<u8>>, Vec<Extras>)>,
    records: Vec<Record>,
}

/// Format 2 (before the downlink's state was saved); still readable.
#[derive(Deserialize)]
struct CheckpointV2 {
    format: u32,
    round: u32,
    global: Params,
    server: Vec<u8>,
    clients: Vec<(u32, Option<Vec<u8>>, Vec<Extras>)>,
    aggregator: Vec<u8>,
    stages: Vec<Vec<u8>>,
    records: Vec<Record>,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    format: u32,
    round: u32,
    global: Params,
    server: Vec<u8>,
    clients: Vec<(u32, Option<Vec<u8>>, Vec<Extras>)>,
    aggregator: Vec<u8>,
    stages: Vec<Vec<u8>>,
    records: Vec<Record>,
    /// `[downlink]`'s state: the shadow model w^ and who holds it (format 3).
    downlink: Option<crate::downlink::DownlinkState>,
}

/// Decode any checkpoint format into the current one (`stages` empty ones for format 1).
fn decode(bytes: &[u8], stages: usize) -> Option<Checkpoint> {
    if let Ok(ck) = bincode::deserialize::<Checkpoint>(bytes) {
        if ck.format == 3 {
            return Some(ck);
        }
    }
    if let Ok(v2) = bincode::deserialize::<CheckpointV2>(bytes) {
        if v2.format == 2 {
            return Some(Checkpoint {
                format: 3,
                round: v2.round,
                global: v2.global,
                server: v2.server,
                clients: v2.clients,
                aggregator: v2.aggregator,
                stages: v2.stages,
                records: v2.records,
                downlink: None,
            });
        }
    }
    match bincode::deserialize::<CheckpointV1>(bytes) {
        Ok(v1) if v1.format == 1 => Some(Checkpoint {
            format: 3,
            round: v1.round,
            global: v1.global,
            server: v1.server,
            clients: v1.clients,
            aggregator: Vec::new(),
            stages: vec![Vec::new(); stages],
            records: v1.records,
            downlink: None,
        }),
        _ => None,
    }
}

/// The global model saved in `dir`'s checkpoint (a finished run's final model): what
/// `init_from` starts a new run from.
pub fn checkpoint_global(dir: &Path) -> Result<Params> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    decode(&bytes, 0)
        .map(|ck| ck.global)
        .ok_or_else(|| Error::Data(format!("{}: not a fedkit checkpoint, or damaged", path.display())))
}

impl Engine {
    /// Save the engine's state to `dir/checkpoint.bin`.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let mut clients = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            if c.state.is_some() || !c.stage_mem.is_empty() {
                let state = c.state.as_ref().map(|s| s.to_bytes()).transpose()?;
                clients.push((i as u32, state, c.stage_mem.clone()));
            }
        }
        let ck = Checkpoint {
            format: 3,
            round: self.round,
            global: self.global.clone(),
            server: self.server.to_bytes()?,
            clients,
            aggregator: self.aggregator.state()?,
            stages: self.stages.iter().map(|s| s.stage.state()).collect::<Result<_>>()?,
            records: self.records.clone(),
            downlink: self.downlink.clone(),
        };
        let bytes = bincode::serialize(&ck).map_err(|e| Error::Method(format!("cannot encode checkpoint: {e}")))?;
        let path = dir.join(CHECKPOINT_FILE);
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Restore the state saved by [`Engine::save_checkpoint`] into an engine built from the same
    /// resolved config.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(CHECKPOINT_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let ck = decode(&bytes, self.stages.len())
            .ok_or_else(|| Error::Data(format!("{}: not a fedkit checkpoint, or damaged", path.display())))?;
        if ck.global.len() != self.global.len() || ck.stages.len() != self.stages.len() {
            return Err(Error::Data(format!("{}: checkpoint does not match this run's model", path.display())));
        }
        self.round = ck.round;
        self.global = ck.global;
        self.server = self.algorithm.server_state_from_bytes(&ck.server)?;
        for (i, state, mem) in ck.clients {
            let slot = self
                .clients
                .get_mut(i as usize)
                .ok_or_else(|| Error::Data(format!("{}: client {i} is not in this federation", path.display())))?;
            *slot = ClientSlot {
                state: state.map(|b| self.algorithm.client_state_from_bytes(&b)).transpose()?,
                stage_mem: mem,
            };
        }
        self.aggregator.load_state(&ck.aggregator)?;
        for (s, b) in self.stages.iter_mut().zip(&ck.stages) {
            s.stage.load_state(b)?;
        }
        self.records = ck.records;
        self.downlink = ck.downlink;
        Ok(())
    }
}
