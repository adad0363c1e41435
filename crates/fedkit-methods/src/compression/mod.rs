//! Compression of client updates (issue 11): each stage turns the update into the wire
//! message a client would send (`fedkit_core::wire`), puts the bytes in the update's `wire`
//! extra, and sets the update to exactly what the server decodes from them. The engine decodes
//! the message on receipt, checks it, and counts its length as `bytes_up`. Extras (control
//! variates) travel dense in the message's `Extras` block.
//!
//! A compressor should be the last client-side stage: a stage that changes the update
//! afterwards sends it uncompressed (the engine then counts a dense message). DP stages refuse
//! to follow a compressor. Error feedback keeps each client's residual in its stage memory, so
//! it survives checkpoints.

pub mod cast;
pub mod dadaquant;
pub mod qsgd;
pub mod randk;
pub mod signsgd;
pub mod topk;

#[cfg(test)]
mod tests;

use fedkit_core::wire::{self, Block, Kind, Message};
use fedkit_core::{Error, Extra, Extras, Result, Update};

/// Encode `blocks` (the update's values) and the update's extras as its wire message; the
/// update becomes what the server decodes.
pub fn send(u: &mut Update, mut blocks: Vec<Block>) -> Result<()> {
    if u.extras.0.contains_key(wire::EXTRA_KEY) {
        return Err(Error::config("pipeline", "two compressors on one update: keep one"));
    }
    if !u.extras.0.is_empty() {
        blocks.push(Block::Extras(u.extras.clone()));
    }
    let m = Message { kind: Kind::Update, layout_id: wire::layout_id(u.delta.layout()), blocks };
    let bytes = wire::encode(&m)?;
    let (values, _) = m.values();
    if values.len() != u.delta.len() {
        return Err(Error::Method(format!("compressor: {} values for a {}-value update", values.len(), u.delta.len())));
    }
    u.delta.as_mut_slice().copy_from_slice(&values);
    u.extras.0.insert(wire::EXTRA_KEY.into(), Extra::Bytes(bytes));
    Ok(())
}

/// A client's update that carries only `blocks` (algorithms that compress inside their client
/// rule: EF21-SGDM, DIANA), weight 1, as the server will decode it.
pub fn compressed_update(cx: &fedkit_core::ClientCtx, blocks: Vec<Block>) -> Result<Update> {
    let mut u = Update {
        client: cx.client,
        delta: cx.global.zeros_like(),
        weight: 1.0,
        extras: Extras::default(),
        metrics: fedkit_core::Metrics::new(),
    };
    send(&mut u, blocks)?;
    Ok(u)
}

/// Error feedback (Seide et al. 2014; Karimireddy et al. 2019): the vector to compress is the
/// update plus the residual kept under `key` in the client's memory.
pub fn with_residual(mem: &Extras, key: &str, x: &[f32]) -> Vec<f32> {
    match mem.0.get(key) {
        Some(Extra::Vector(e)) if e.len() == x.len() => x.iter().zip(e).map(|(a, b)| a + b).collect(),
        _ => x.to_vec(),
    }
}

/// Keep what was not sent: residual = compressed input - sent.
pub fn keep_residual(mem: &mut Extras, key: &str, input: &[f32], sent: &[f32]) {
    mem.0.insert(key.into(), Extra::Vector(input.iter().zip(sent).map(|(a, b)| a - b).collect()));
}

/// `fraction` must be in (0, 1].
pub fn check_fraction(f: f64) -> Result<()> {
    if !(f > 0.0 && f <= 1.0) {
        return Err(Error::config("fraction", format!("must be in (0, 1], got {f}")));
    }
    Ok(())
}

/// The k of a fraction of d coordinates (at least 1).
pub fn k_of(fraction: f64, d: usize) -> usize {
    ((fraction * d as f64).round() as usize).clamp(1.min(d), d)
}
