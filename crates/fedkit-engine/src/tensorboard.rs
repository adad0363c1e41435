//! `[output] tensorboard = true`: the run's metrics as a TensorBoard event file,
//! `tb/events.out.tfevents.<seconds>.<host>`, one scalar per metric per round (step = round), so
//! `tensorboard --logdir runs/` shows every run's curves.
//!
//! The file is a TFRecord stream (each record: its length as u64 LE, the length's masked CRC32C,
//! the bytes, their masked CRC32C; CRC32C from the `crc32c` crate) of `tensorflow.Event`
//! protobufs (the messages below, encoded by `prost`): first `file_version = "brain.Event:2"`,
//! then one `Summary` with a `simple_value` per metric per round. Only these fields of
//! TensorFlow's `event.proto` and `summary.proto` are declared. The file is flushed every round;
//! `--resume` rewrites it from the checkpoint's records, as it does `metrics.jsonl`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use fedkit_core::{Error, Result};
use prost::Message;

use crate::record::Record;

/// The folder inside a run directory.
pub const TB_DIR: &str = "tb";

/// `tensorflow.Event` (the fields fedkit writes).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    /// In TensorFlow's `oneof value`, so a 0.0 is still written (a plain proto3 float field
    /// would drop it, and TensorBoard would skip the value).
    #[prost(oneof = "Value", tags = "2")]
    pub value: Option<Value>,
}

/// `Summary.Value.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

fn masked_crc(b: &[u8]) -> u32 {
    let c = crc32c::crc32c(b);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord frame around `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The events of a TFRecord stream `b`, each frame's CRCs checked.
pub fn read_frames(b: &[u8]) -> Result<Vec<Event>> {
    let bad = |why: &str| Error::Data(format!("tensorboard event file: {why}"));
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let head = b.get(at..at + 12).ok_or_else(|| bad("truncated frame header"))?;
        let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if masked_crc(&head[..8]) != u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) {
            return Err(bad("length CRC mismatch"));
        }
        let len = usize::try_from(len).map_err(|_| bad("frame too long"))?;
        let end = (at + 12)
            .checked_add(len)
            .filter(|&e| e.checked_add(4).is_some_and(|x| x <= b.len()))
            .ok_or_else(|| bad("truncated frame"))?;
        let data = &b[at + 12..end];
        if masked_crc(data) != u32::from_le_bytes(b[end..end + 4].try_into().expect("4 bytes")) {
            return Err(bad("data CRC mismatch"));
        }
        out.push(Event::decode(data).map_err(|e| bad(&e.to_string()))?);
        at = end + 4;
    }
    Ok(out)
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// An open event file.
pub struct TbWriter {
    path: PathBuf,
    file: File,
}

impl TbWriter {
    /// Start a fresh event file in `run/tb/`, removing earlier ones (a resumed run rewrites it).
    pub fn create(run: &Path) -> Result<TbWriter> {
        let dir = run.join(TB_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.flatten() {
            if e.file_name().to_string_lossy().starts_with("events.out.tfevents.") {
                std::fs::remove_file(e.path()).map_err(|x| Error::io(&e.path(), x))?;
            }
        }
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let host = if host.is_empty() { "fedkit".to_string() } else { host };
        let path = dir.join(format!("events.out.tfevents.{}.{host}", now() as u64));
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = TbWriter { path, file };
        w.write(&Event { wall_time: now(), step: 0, what: Some(What::FileVersion("brain.Event:2".into())) })?;
        Ok(w)
    }

    fn write(&mut self, e: &Event) -> Result<()> {
        let b = frame(&e.encode_to_vec());
        self.file.write_all(&b).and_then(|_| self.file.flush()).map_err(|x| Error::io(&self.path, x))
    }

    /// Every metric of `r` (but `round`) as a scalar at step `round`.
    pub fn record(&mut self, r: &Record) -> Result<()> {
        let value: Vec<SummaryValue> = r
            .values
            .iter()
            .filter(|(k, v)| k != "round" && v.is_finite())
            .map(|(k, v)| SummaryValue { tag: k.clone(), value: Some(Value::SimpleValue(*v as f32)) })
            .collect();
        let step = r.round() as i64;
        self.write(&Event { wall_time: now(), step, what: Some(What::Summary(Summary { value })) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        // The masked CRC32C of an empty string, as TensorFlow's masked_crc32c computes it.
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        let e = Event {
            wall_time: 1.0,
            step: 3,
            what: Some(What::Summary(Summary {
                value: vec![SummaryValue { tag: "stragglers".into(), value: Some(Value::SimpleValue(0.0)) }],
            })),
        };
        // A zero is on the wire: tag 2 as a fixed32 (0x15) follows the tag string.
        assert!(e.encode_to_vec().windows(5).any(|w| w == [0x15, 0, 0, 0, 0]));
        let mut b = frame(&e.encode_to_vec());
        assert_eq!(read_frames(&b).unwrap(), vec![e]);
        let n = b.len();
        b[n - 6] ^= 1;
        assert!(read_frames(&b).unwrap_err().to_string().contains("CRC"));
        assert!(read_frames(&b[..n - 3]).is_err());
    }
}
