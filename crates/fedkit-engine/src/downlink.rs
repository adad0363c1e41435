//! Downlink compression (issue 11): the server broadcasts a compressed change of the model,
//! and every client trains from the same shadow model w^ that those changes build. With
//! error feedback on the primal side (EF21-P: Gruntkowska, Tyurin, Richtárik, "EF21-P and
//! Friends: Improved Theoretical Communication Complexity for Distributed Optimization with
//! Bidirectional Compression", ICML 2023):
//! - each round, c = C(w - w^) and w^ = w^ + c, where w is the server's model;
//! - the clients receive c (its wire message is what `bytes_down` counts) and train from w^;
//! - the server applies their deltas to w, so what the compressor left out is sent later.
//!
//! `[downlink] use = "none" | "fp16" | "bf16" | "topk" | "qsgd"`, with `fraction` (topk),
//! `levels` and `bucket` (qsgd). The shadow starts as the initial model, which every client
//! derives from the run seed, and is saved in checkpoints.

use fedkit_core::wire::{self, Block, Half, Kind, Message};
use fedkit_core::{Error, Params, Result, RngStream};
use fedkit_methods::compression::{cast::half_block, qsgd::quantize_buckets, topk::top_k_block};

use crate::config::{Downlink, DownlinkKind};

/// Compress `w - shadow`, add the decoded change to `shadow`, and return the message's bytes.
pub(crate) fn step(cfg: &Downlink, seed: u64, round: u32, w: &Params, shadow: &mut Params) -> Result<usize> {
    let diff: Vec<f32> = w.as_slice().iter().zip(shadow.as_slice()).map(|(a, b)| a - b).collect();
    let block = match cfg.kind {
        DownlinkKind::None => Block::Dense(diff),
        DownlinkKind::Fp16 => half_block(&diff, Half::F16)?,
        DownlinkKind::Bf16 => half_block(&diff, Half::Bf16)?,
        DownlinkKind::Topk => {
            let k = ((cfg.fraction * diff.len() as f64).round() as usize).clamp(1.min(diff.len()), diff.len());
            top_k_block(&diff, k)
        }
        DownlinkKind::Qsgd => {
            let mut rng = RngStream::derive(seed, "downlink_qsgd", round as u64, 0);
            let blocks = quantize_buckets(&diff, cfg.levels, cfg.bucket, &mut rng);
            return apply(w, shadow, blocks);
        }
    };
    apply(w, shadow, vec![block])
}

fn apply(w: &Params, shadow: &mut Params, blocks: Vec<Block>) -> Result<usize> {
    let m = Message { kind: Kind::Broadcast, layout_id: wire::layout_id(w.layout()), blocks };
    let bytes = wire::encode(&m)?;
    // What a client decodes from the bytes, exactly.
    let (c, _) = wire::decode(&bytes, Some((m.layout_id, w.len())))?.values();
    if c.len() != shadow.len() {
        return Err(Error::Method(format!("downlink: {} values for a {}-value model", c.len(), shadow.len())));
    }
    shadow.as_mut_slice().iter_mut().zip(&c).for_each(|(s, d)| *s += d);
    Ok(bytes.len())
}
