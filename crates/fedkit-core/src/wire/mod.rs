//! The wire form of updates and broadcasts (issue 11): the bytes a client sends and the server
//! decodes. Compressors build a message from typed blocks; the engine counts `bytes_up` /
//! `bytes_down` as these bytes' lengths, and the networked deployment sends them unchanged.
//! The layout is documented in docs/wire.md.
//!
//! A message is a header (magic `FKW`, version, kind, the model layout's id, the coordinate
//! count) followed by blocks. The value blocks, concatenated, give the vector: dense f32,
//! f16 or bf16; sparse (delta-coded indices, f32 values); b-bit quantised with a scale; sign
//! bits with a scale; QSGD levels in Elias-gamma code with the norm; the leading block of a
//! shaped tensor (a width-scaled sub-model's, zero elsewhere). An `Extras` block carries
//! the update's side payloads (control variates) dense, as postcard (fedkit_core::codec).
//!
//! Decoding validates everything (lengths, tags, ranges, index order, trailing bytes) and
//! returns an error for malformed input, never a panic; sizes are bounded before any
//! allocation.

mod bits;
#[cfg(test)]
mod tests;

use bits::{BitReader, BitWriter};
use half::{bf16, f16};

use crate::{Error, Extras, Layout, Result};

/// The update extra that carries a compressed update's encoded message (`Extra::Bytes`); the
/// engine decodes it on receipt and removes it.
pub const EXTRA_KEY: &str = "wire";

/// The format's version; a decoder refuses others.
pub const VERSION: u8 = 2;
const MAGIC: &[u8; 3] = b"FKW";
/// The most QSGD levels a block may have (levels travel as i32 with a sign).
pub const MAX_QSGD_LEVELS: u32 = 1 << 30;

/// The largest vector a message may describe.
pub const MAX_LEN: u64 = 1 << 31;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A client's update (the uplink).
    Update = 0,
    /// The server's broadcast (the downlink).
    Broadcast = 1,
}

/// Half-precision formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    F16 = 0,
    Bf16 = 1,
}

/// One typed block of a message.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// Values as f32.
    Dense(Vec<f32>),
    /// Values as 16-bit floats (bits).
    Half { format: Half, bits: Vec<u16> },
    /// `len` coordinates, zero but at `indices` (strictly increasing).
    Sparse { len: u32, indices: Vec<u32>, values: Vec<f32> },
    /// `levels[i]` in [-(2^(bits-1) - 1), 2^(bits-1) - 1], value levels[i] * scale /
    /// (2^(bits-1) - 1); `bits` in 2..=16.
    Quantized { bits: u8, scale: f32, levels: Vec<i32> },
    /// Value +scale or -scale (`negative[i]`).
    Signs { scale: f32, negative: Vec<bool> },
    /// QSGD: value norm * sign * level / s, levels in 0..=s.
    Qsgd { s: u32, norm: f32, levels: Vec<i32> },
    /// Side payloads, dense (postcard).
    Extras(Extras),
    /// A row-major tensor of `shape` (rank 1 to [`MAX_SLICE_RANK`]) that is zero but for its
    /// leading block of shape `keep` (`keep[d] <= shape[d]`), whose values are given row-major:
    /// a width-scaled sub-model's tensor (HeteroFL) in the full model's coordinates.
    Slice { shape: Vec<u32>, keep: Vec<u32>, values: Vec<f32> },
}

/// The highest tensor rank a [`Block::Slice`] may have.
pub const MAX_SLICE_RANK: usize = 8;

const DENSE: u8 = 1;
const HALF: u8 = 2;
const SPARSE: u8 = 3;
const QUANTIZED: u8 = 4;
const SIGNS: u8 = 5;
const QSGD: u8 = 6;
const EXTRAS: u8 = 7;
const SLICE: u8 = 8;

impl Block {
    /// Coordinates this block covers (0 for extras).
    pub fn len(&self) -> usize {
        match self {
            Block::Dense(v) => v.len(),
            Block::Half { bits, .. } => bits.len(),
            Block::Sparse { len, .. } => *len as usize,
            Block::Quantized { levels, .. } | Block::Qsgd { levels, .. } => levels.len(),
            Block::Signs { negative, .. } => negative.len(),
            Block::Slice { shape, .. } => shape.iter().map(|&d| d as usize).product(),
            Block::Extras(_) => 0,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Append this block's values to `out`.
    pub fn decode_into(&self, out: &mut Vec<f32>) {
        match self {
            Block::Dense(v) => out.extend_from_slice(v),
            Block::Half { format: Half::F16, bits } => out.extend(bits.iter().map(|&b| f16::from_bits(b).to_f32())),
            Block::Half { format: Half::Bf16, bits } => out.extend(bits.iter().map(|&b| bf16::from_bits(b).to_f32())),
            Block::Sparse { len, indices, values } => {
                let start = out.len();
                out.resize(start + *len as usize, 0.0);
                for (&i, &v) in indices.iter().zip(values) {
                    out[start + i as usize] = v;
                }
            }
            Block::Quantized { bits, scale, levels } => {
                let top = ((1i32 << (bits - 1)) - 1) as f32;
                out.extend(levels.iter().map(|&q| q as f32 * scale / top));
            }
            Block::Signs { scale, negative } => out.extend(negative.iter().map(|&n| if n { -scale } else { *scale })),
            Block::Qsgd { s, norm, levels } => {
                let s = *s as f32;
                out.extend(levels.iter().map(|&l| norm * l as f32 / s));
            }
            Block::Slice { shape, keep, values } => {
                let start = out.len();
                out.resize(start + self.len(), 0.0);
                let (shape, keep) = (as_usize(shape), as_usize(keep));
                crate::submodel::for_each_row(&shape, &keep, &mut |a, b, n| {
                    out[start + a..start + a + n].copy_from_slice(&values[b..b + n])
                });
            }
            Block::Extras(_) => {}
        }
    }
}

/// A versioned message: the layout's id and its blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub kind: Kind,
    pub layout_id: u64,
    pub blocks: Vec<Block>,
}

impl Message {
    /// The vector the value blocks describe, and the extras (empty when none).
    pub fn values(&self) -> (Vec<f32>, Extras) {
        let mut v = Vec::with_capacity(self.blocks.iter().map(Block::len).sum());
        let mut extras = Extras::default();
        for b in &self.blocks {
            match b {
                Block::Extras(e) => extras = e.clone(),
                b => b.decode_into(&mut v),
            }
        }
        (v, extras)
    }
}

/// The id of a layout: FNV-1a over its entries' names, shapes and kinds. A decoder checks it
/// against its own model's.
pub fn layout_id(l: &Layout) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for e in l.entries() {
        eat(e.name.as_bytes());
        eat(&[0]);
        for &d in &e.shape {
            eat(&(d as u64).to_le_bytes());
        }
        eat(format!("{:?}", e.kind).as_bytes());
    }
    h
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encode a message.
pub fn encode(m: &Message) -> Result<Vec<u8>> {
    let total: usize = m.blocks.iter().map(Block::len).sum();
    let mut out = Vec::with_capacity(16 + 4 * total);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(m.kind as u8);
    out.extend_from_slice(&m.layout_id.to_le_bytes());
    put_varint(&mut out, total as u64);
    put_varint(&mut out, m.blocks.len() as u64);
    let mut payload = Vec::new();
    for b in &m.blocks {
        payload.clear();
        let tag = encode_block(b, &mut payload)?;
        out.push(tag);
        put_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(&payload);
    }
    Ok(out)
}

fn put_f32s(p: &mut Vec<u8>, v: &[f32]) {
    let start = p.len();
    p.resize(start + 4 * v.len(), 0);
    for (c, x) in p[start..].chunks_exact_mut(4).zip(v) {
        c.copy_from_slice(&x.to_le_bytes());
    }
}

fn encode_block(b: &Block, p: &mut Vec<u8>) -> Result<u8> {
    Ok(match b {
        Block::Dense(v) => {
            put_varint(p, v.len() as u64);
            put_f32s(p, v);
            DENSE
        }
        Block::Half { format, bits } => {
            put_varint(p, bits.len() as u64);
            p.push(*format as u8);
            p.reserve(2 * bits.len());
            bits.iter().for_each(|x| p.extend_from_slice(&x.to_le_bytes()));
            HALF
        }
        Block::Sparse { len, indices, values } => {
            if indices.len() != values.len() || indices.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::Method("wire: sparse indices must be strictly increasing, one per value".into()));
            }
            if indices.last().is_some_and(|&i| i >= *len) {
                return Err(Error::Method("wire: a sparse index beyond the block's length".into()));
            }
            put_varint(p, *len as u64);
            put_varint(p, indices.len() as u64);
            let mut prev = 0u32;
            for (k, &i) in indices.iter().enumerate() {
                put_varint(p, (if k == 0 { i } else { i - prev - 1 }) as u64);
                prev = i;
            }
            put_f32s(p, values);
            SPARSE
        }
        Block::Quantized { bits, scale, levels } => {
            if !(2..=16).contains(bits) {
                return Err(Error::Method(format!("wire: {bits}-bit quantisation; 2..=16 are allowed")));
            }
            let top = (1i32 << (bits - 1)) - 1;
            put_varint(p, levels.len() as u64);
            p.push(*bits);
            p.extend_from_slice(&scale.to_le_bytes());
            let mut w = BitWriter::new(p);
            for &q in levels {
                if q.abs() > top {
                    return Err(Error::Method(format!("wire: level {q} outside +-{top}")));
                }
                w.write((q + top) as u64, *bits as u32);
            }
            w.finish();
            QUANTIZED
        }
        Block::Signs { scale, negative } => {
            put_varint(p, negative.len() as u64);
            p.extend_from_slice(&scale.to_le_bytes());
            let mut w = BitWriter::new(p);
            negative.iter().for_each(|&n| w.write(n as u64, 1));
            w.finish();
            SIGNS
        }
        Block::Qsgd { s, norm, levels } => {
            if *s == 0 || *s > MAX_QSGD_LEVELS {
                return Err(Error::Method(format!("wire: QSGD with {s} levels; 1..=2^30 are allowed")));
            }
            put_varint(p, levels.len() as u64);
            put_varint(p, *s as u64);
            p.extend_from_slice(&norm.to_le_bytes());
            let mut w = BitWriter::new(p);
            for &l in levels {
                if l.unsigned_abs() > *s {
                    return Err(Error::Method(format!("wire: QSGD level {l} outside +-{s}")));
                }
                w.gamma(l.unsigned_abs() as u64 + 1);
                if l != 0 {
                    w.write((l < 0) as u64, 1);
                }
            }
            w.finish();
            QSGD
        }
        Block::Slice { shape, keep, values } => {
            let size = |dims: &[u32]| dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            let fits = (1..=MAX_SLICE_RANK).contains(&shape.len())
                && keep.len() == shape.len()
                && keep.iter().zip(shape).all(|(k, d)| k <= d)
                && size(shape).is_some_and(|n| n <= MAX_LEN)
                && size(keep) == Some(values.len() as u64);
            if !fits {
                return Err(Error::Method(format!(
                    "wire: a slice of {:?} from {:?} with {} values (rank 1..={MAX_SLICE_RANK}, keep <= shape, one value per kept coordinate)",
                    keep,
                    shape,
                    values.len()
                )));
            }
            p.push(shape.len() as u8);
            shape.iter().chain(keep).for_each(|&d| put_varint(p, d as u64));
            put_f32s(p, values);
            SLICE
        }
        Block::Extras(e) => {
            let b = crate::codec::to_bytes(e, "wire extras")?;
            p.extend_from_slice(&b);
            EXTRAS
        }
    })
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Transport(format!("malformed message: {what}"))
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() - self.at < n {
            return Err(bad(format!(
                "truncated: {n} bytes wanted at offset {}, {} left",
                self.at,
                self.b.len() - self.at
            )));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn f32(&mut self) -> Result<f32> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("a varint longer than 10 bytes"))
    }
    /// A count bounded by `max` (checked before anything is allocated for it).
    fn count(&mut self, max: u64, what: &str) -> Result<usize> {
        let n = self.varint()?;
        if n > max {
            return Err(bad(format!("{what} {n} exceeds {max}")));
        }
        Ok(n as usize)
    }
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
}

/// Decode a message; `expect` (a layout id and a coordinate count) must match when given.
pub fn decode(bytes: &[u8], expect: Option<(u64, usize)>) -> Result<Message> {
    let mut c = Cursor { b: bytes, at: 0 };
    if c.take(3)? != MAGIC {
        return Err(bad("not a fedkit wire message (magic)"));
    }
    let version = c.u8()?;
    if version != VERSION {
        return Err(bad(format!("version {version}; this decoder reads {VERSION}")));
    }
    let kind = match c.u8()? {
        0 => Kind::Update,
        1 => Kind::Broadcast,
        k => return Err(bad(format!("kind {k}"))),
    };
    let id = c.take(8)?;
    let layout_id = u64::from_le_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]);
    let total = c.count(MAX_LEN, "length")?;
    if let Some((want_id, want_len)) = expect {
        if layout_id != want_id || total != want_len {
            return Err(bad(format!(
                "layout {layout_id:#x} of {total} values, expected {want_id:#x} of {want_len}: another model"
            )));
        }
    }
    let nblocks = c.count(c.left() as u64, "block count")?;
    let mut blocks = Vec::with_capacity(nblocks);
    let mut covered = 0usize;
    for _ in 0..nblocks {
        let tag = c.u8()?;
        let n = c.count(c.left() as u64, "block size")?;
        let mut p = Cursor { b: c.take(n)?, at: 0 };
        let block = decode_block(tag, &mut p, total - covered)?;
        if p.left() != 0 {
            return Err(bad(format!("{} stray bytes in a block of tag {tag}", p.left())));
        }
        covered += block.len();
        blocks.push(block);
    }
    if c.left() != 0 {
        return Err(bad(format!("{} trailing bytes", c.left())));
    }
    if covered != total {
        return Err(bad(format!("blocks cover {covered} of {total} values")));
    }
    Ok(Message { kind, layout_id, blocks })
}

fn as_usize(v: &[u32]) -> Vec<usize> {
    v.iter().map(|&d| d as usize).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn decode_block(tag: u8, p: &mut Cursor, room: usize) -> Result<Block> {
    let room = room as u64;
    Ok(match tag {
        DENSE => {
            let n = p.count(room.min(p.left() as u64 / 4), "dense length")?;
            Block::Dense(f32s(p.take(4 * n)?))
        }
        HALF => {
            let n = p.count(room.min(p.left() as u64 / 2), "half length")?;
            let format = match p.u8()? {
                0 => Half::F16,
                1 => Half::Bf16,
                f => return Err(bad(format!("half format {f}"))),
            };
            let b = p.take(2 * n)?;
            Block::Half { format, bits: b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect() }
        }
        SPARSE => {
            let len = p.count(room, "sparse length")?;
            let nnz = p.count((len as u64).min(p.left() as u64 / 5), "sparse count")?;
            let mut indices = Vec::with_capacity(nnz);
            let mut next = 0u64;
            for _ in 0..nnz {
                let i = next.checked_add(p.varint()?).ok_or_else(|| bad("a sparse index gap overflows"))?;
                if i >= len as u64 {
                    return Err(bad(format!("sparse index {i} beyond {len}")));
                }
                indices.push(i as u32);
                next = i + 1;
            }
            let values = f32s(p.take(4 * nnz)?);
            Block::Sparse { len: len as u32, indices, values }
        }
        QUANTIZED => {
            let n = p.count(room, "quantised length")?;
            let bits = p.u8()?;
            if !(2..=16).contains(&bits) {
                return Err(bad(format!("{bits}-bit quantisation")));
            }
            let scale = p.f32()?;
            let need = (n * bits as usize).div_ceil(8);
            let mut r = BitReader::new(p.take(need)?);
            let top = (1i32 << (bits - 1)) - 1;
            let mut levels = Vec::with_capacity(n);
            for _ in 0..n {
                let q = r.read(bits as u32).ok_or_else(|| bad("quantised levels truncated"))? as i32 - top;
                if q.abs() > top {
                    return Err(bad(format!("level {q} outside +-{top}")));
                }
                levels.push(q);
            }
            Block::Quantized { bits, scale, levels }
        }
        SIGNS => {
            let n = p.count(room, "sign length")?;
            let scale = p.f32()?;
            let mut r = BitReader::new(p.take(n.div_ceil(8))?);
            let negative = (0..n)
                .map(|_| r.read(1).map(|b| b == 1).ok_or_else(|| bad("signs truncated")))
                .collect::<Result<_>>()?;
            Block::Signs { scale, negative }
        }
        QSGD => {
            let n = p.count(room, "QSGD length")?;
            let s = p.count(MAX_QSGD_LEVELS as u64, "QSGD levels")? as u32;
            if s == 0 {
                return Err(bad("QSGD with 0 levels"));
            }
            let norm = p.f32()?;
            let mut r = BitReader::new(p.take(p.left())?);
            let mut levels = Vec::with_capacity(n.min(8 * r.len()));
            for _ in 0..n {
                let g = r.gamma().ok_or_else(|| bad("QSGD levels truncated or not Elias-gamma"))?;
                let l = g - 1;
                if l > s as u64 {
                    return Err(bad(format!("QSGD level {l} above s = {s}")));
                }
                let neg = l > 0 && r.read(1).ok_or_else(|| bad("QSGD sign truncated"))? == 1;
                levels.push(if neg { -(l as i32) } else { l as i32 });
            }
            r.check_padding().ok_or_else(|| bad("QSGD stream has stray bits"))?;
            Block::Qsgd { s, norm, levels }
        }
        EXTRAS => {
            let b = p.take(p.left())?;
            let e = crate::codec::from_bytes(b, "extras block").map_err(|e| bad(e.to_string()))?;
            Block::Extras(e)
        }
        SLICE => {
            let rank = p.u8()? as usize;
            if !(1..=MAX_SLICE_RANK).contains(&rank) {
                return Err(bad(format!("a slice of rank {rank}; 1..={MAX_SLICE_RANK} are allowed")));
            }
            let mut shape = Vec::with_capacity(rank);
            let mut len = 1u64;
            for _ in 0..rank {
                let d = p.count(room, "slice dimension")?;
                len = len
                    .checked_mul(d as u64)
                    .filter(|&l| l <= room)
                    .ok_or_else(|| bad("a slice beyond the message"))?;
                shape.push(d as u32);
            }
            let mut keep = Vec::with_capacity(rank);
            let mut kept = 1u64;
            for &d in &shape {
                let k = p.count(d as u64, "slice block dimension")?;
                kept *= k as u64;
                keep.push(k as u32);
            }
            if kept * 4 != p.left() as u64 {
                return Err(bad(format!("a slice of {kept} values carries {} bytes", p.left())));
            }
            let values = f32s(p.take(p.left())?);
            Block::Slice { shape, keep, values }
        }
        t => return Err(bad(format!("unknown block tag {t}"))),
    })
}

/// A message carrying `values` as one sparse block of their non-zero coordinates (a pruned
/// model or its update: `[compress]`), then `extras` when there are some.
pub fn sparse_message(kind: Kind, layout_id: u64, values: &[f32], extras: &Extras) -> Message {
    let indices: Vec<u32> = (0..values.len() as u32).filter(|&i| values[i as usize] != 0.0).collect();
    let nonzero = indices.iter().map(|&i| values[i as usize]).collect();
    let mut blocks = vec![Block::Sparse { len: values.len() as u32, indices, values: nonzero }];
    if !extras.0.is_empty() {
        blocks.push(Block::Extras(extras.clone()));
    }
    Message { kind, layout_id, blocks }
}

/// The wire length of a dense f32 message of `len` values (the default when no compressor
/// runs), the same as `encode(...).len()`.
pub fn dense_len(len: usize, extras: &Extras) -> Result<usize> {
    let blocks = if extras.0.is_empty() { 1 } else { 2 };
    let varint_len = |v: u64| if v == 0 { 1 } else { (64 - v.leading_zeros() as usize).div_ceil(7) };
    let payload = varint_len(len as u64) + 4 * len;
    let mut n = 3 + 1 + 1 + 8 + varint_len(len as u64) + varint_len(blocks) + 1 + varint_len(payload as u64) + payload;
    if blocks == 2 {
        let e = crate::codec::encoded_len(extras, "wire extras")?;
        n += 1 + varint_len(e as u64) + e;
    }
    Ok(n)
}
