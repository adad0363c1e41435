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
//!
//! Traffic: a sampled client must first catch up on every broadcast since it last took part,
//! or take the dense shadow when that is cheaper; `bytes_down` counts exactly that.

use std::collections::BTreeMap;

use fedkit_core::wire::{self, Block, Half, Kind, Message};
use fedkit_core::{ClientId, Error, Params, Result, RngStream};
use fedkit_methods::compression::{cast::half_block, qsgd::quantize_buckets, topk::top_k_block};
use serde::{Deserialize, Serialize};

use crate::config::{Downlink, DownlinkKind};

/// The downlink's state, saved in checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DownlinkState {
    /// w^, the model every up-to-date client holds.
    pub shadow: Params,
    /// sent[r]: the bytes of broadcasts 1..=r (sent[0] = 0).
    sent: Vec<u64>,
    /// The round up to which each client holds the shadow (absent: the initial model).
    synced: BTreeMap<ClientId, u32>,
}

impl DownlinkState {
    pub fn new(initial: &Params) -> Self {
        DownlinkState { shadow: initial.clone(), sent: vec![0], synced: BTreeMap::new() }
    }

    /// Round `round`'s broadcast: compress w - w^ and move w^.
    pub fn broadcast(&mut self, cfg: &Downlink, seed: u64, round: u32, w: &Params) -> Result<()> {
        let bytes = step(cfg, seed, round, w, &mut self.shadow)? as u64;
        let total = self.sent.last().copied().unwrap_or(0) + bytes;
        self.sent.resize(round as usize, total - bytes);
        self.sent.push(total);
        Ok(())
    }

    /// The bytes that bring `client` up to round `round`: the broadcasts it missed, or `dense`
    /// (the whole shadow) when that is fewer. The client is then up to date.
    pub fn catch_up(&mut self, client: ClientId, round: u32, dense: usize) -> usize {
        let since = self.synced.get(&client).copied().unwrap_or(0) as usize;
        let at = (round as usize).min(self.sent.len() - 1);
        let missed = (self.sent[at] - self.sent[since.min(at)]) as usize;
        self.synced.insert(client, round);
        missed.min(dense)
    }
}

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
