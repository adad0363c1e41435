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

/// A checkpoint file starts with these 4 bytes, then the format as a little-endian u32, then
/// the postcard encoding ([`fedkit_core::codec`]) of [`Checkpoint`].
const MAGIC: &[u8; 4] = b"FKCK";
/// Format 4: postcard. Formats 1-3 were bincode 1.x, before fedkit moved off it; they are
/// refused with a message that says so.
const FORMAT: u32 = 4;

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    round: u32,
    global: Params,
    server: Vec<u8>,
    clients: Vec<(u32, Option<Vec<u8>>, Vec<Extras>)>,
    aggregator: Vec<u8>,
    stages: Vec<Vec<u8>>,
    records: Vec<Record>,
    /// `[downlink]`'s state: the shadow model w^ and who holds it.
    downlink: Option<crate::downlink::DownlinkState>,
}

/// What [`Engine::save_checkpoint`] writes: [`Checkpoint`]'s fields in its order and encoding,
/// borrowed from the engine.
#[derive(Serialize)]
struct CheckpointOut<'a> {
    round: u32,
    global: &'a Params,
    server: Vec<u8>,
    clients: ClientsOut<'a>,
    aggregator: Vec<u8>,
    stages: Vec<Vec<u8>>,
    records: &'a [Record],
    downlink: &'a Option<crate::downlink::DownlinkState>,
}

/// The clients with a state or stage memory, as `(id, Option<state bytes>, stage memory)` in id
/// order (the encoding of [`Checkpoint::clients`]), each state encoded when it is written.
struct ClientsOut<'a>(&'a [ClientSlot]);

impl Serialize for ClientsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq};
        let kept = || self.0.iter().enumerate().filter(|(_, c)| c.state.is_some() || !c.stage_mem.is_empty());
        let mut seq = s.serialize_seq(Some(kept().count()))?;
        for (i, c) in kept() {
            let state = c.state.as_ref().map(|st| st.to_bytes()).transpose().map_err(S::Error::custom)?;
            seq.serialize_element(&(i as u32, state, &c.stage_mem))?;
        }
        seq.end()
    }
}

/// Write `ck` to `path`, streamed: a checkpoint of many clients' states is never held twice.
fn write(ck: &CheckpointOut, path: &Path) -> Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    w.write_all(MAGIC).and_then(|_| w.write_all(&FORMAT.to_le_bytes())).map_err(|e| Error::io(path, e))?;
    fedkit_core::codec::to_writer(ck, &mut w, "checkpoint")?;
    w.into_inner().map_err(|e| Error::io(path, e.into_error()))?.sync_all().map_err(|e| Error::io(path, e))
}

/// Decode a checkpoint file's bytes; every foreign, old, truncated or damaged file is an error
/// that names `path` and says which.
fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    let bad = |why: String| Error::Data(format!("{}: {why}", path.display()));
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        // bincode formats 1-3 began with their format number as a u32.
        let old = bytes.len() >= 4 && matches!(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]), 1..=3);
        return Err(bad(if old {
            "a checkpoint of an older fedkit (bincode format, before 0.1's move to postcard); \
             this version cannot read it: run the experiment again (same config, same seed: same numbers)"
                .into()
        } else {
            "not a fedkit checkpoint (no FKCK header)".into()
        }));
    }
    let format = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if format != FORMAT {
        return Err(bad(format!("checkpoint format {format}; this fedkit reads format {FORMAT}")));
    }
    fedkit_core::codec::from_bytes(&bytes[8..], "checkpoint").map_err(|e| bad(e.to_string()))
}

/// The round and global model saved in `dir`'s checkpoint (a finished run's final model): what
/// `init_from` starts a new run from and `fedkit model export` writes.
pub fn checkpoint_global(dir: &Path) -> Result<(u32, Params)> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    decode(&bytes, &path).map(|ck| (ck.round, ck.global))
}

impl Engine {
    /// Save the engine's state to `dir/checkpoint.bin`. Client states are encoded one at a time
    /// as the file is written ([`ClientsOut`]), so a checkpoint of many personal models costs
    /// one state's bytes of memory on top of the states, not a second copy of all of them.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let ck = CheckpointOut {
            round: self.round,
            global: &self.global,
            server: self.server.to_bytes()?,
            clients: ClientsOut(&self.clients),
            aggregator: self.aggregator.state()?,
            // `[compress]`'s state rides after the stages' (older checkpoints have none).
            stages: self
                .stages
                .iter()
                .map(|s| s.stage.state())
                .chain(self.compress.iter().map(|c| c.state()))
                .collect::<Result<_>>()?,
            records: &self.records,
            downlink: &self.downlink,
        };
        let path = dir.join(CHECKPOINT_FILE);
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        write(&ck, &tmp)?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Restore the state saved by [`Engine::save_checkpoint`] into an engine built from the same
    /// resolved config.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(CHECKPOINT_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let ck = decode(&bytes, &path)?;
        let slots = self.stages.len() + self.compress.is_some() as usize;
        if ck.global.len() != self.global.len() || ck.stages.len() != slots {
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
        if let (Some(c), Some(b)) = (self.compress.as_mut(), ck.stages.get(self.stages.len())) {
            c.load_state(b)?;
        }
        self.records = ck.records;
        self.downlink = ck.downlink;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> String {
        match decode(bytes, Path::new("run/checkpoint.bin")) {
            Ok(_) => panic!("decoded {bytes:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn foreign_old_and_damaged_files_are_refused_by_name() {
        let mut old = 3u32.to_le_bytes().to_vec();
        old.extend_from_slice(&[0; 40]);
        assert!(err(&old).contains("older fedkit (bincode"), "{}", err(&old));
        assert!(err(b"PK\x03\x04 a zip file").contains("not a fedkit checkpoint"));
        assert!(err(b"FKCK\x09\0\0\0").contains("format 9"));
        let mut cut = b"FKCK".to_vec();
        cut.extend_from_slice(&FORMAT.to_le_bytes());
        cut.extend_from_slice(&[5, 1]);
        let e = err(&cut);
        assert!(e.starts_with("run/checkpoint.bin") && e.contains("truncated"), "{e}");
    }
}
