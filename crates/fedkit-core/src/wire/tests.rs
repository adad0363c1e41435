use super::*;
use crate::{Extra, RngStream};

fn msg(blocks: Vec<Block>) -> Message {
    Message { kind: Kind::Update, layout_id: 0xfeed, blocks }
}

fn all_blocks() -> Vec<Block> {
    let mut extras = Extras::default();
    extras.0.insert("c".into(), Extra::Vector(vec![1.0, -2.5]));
    vec![
        Block::Dense(vec![1.5, -0.0, f32::MAX, 1e-30]),
        Block::Half { format: Half::F16, bits: vec![0x3c00, 0xc000] },
        Block::Half { format: Half::Bf16, bits: vec![0x3f80] },
        Block::Sparse { len: 1000, indices: vec![0, 7, 128, 999], values: vec![1.0, 2.0, -3.0, 4.0] },
        Block::Sparse { len: 5, indices: vec![], values: vec![] },
        Block::Quantized { bits: 4, scale: 0.5, levels: vec![-7, 0, 3, 7, 1] },
        Block::Quantized { bits: 16, scale: 2.0, levels: vec![-32767, 32767] },
        Block::Signs { scale: 0.25, negative: vec![true, false, false, true, true, false, true, true, false] },
        Block::Qsgd { s: 15, norm: 3.0, levels: vec![0, 1, -1, 15, -15, 2, 0, 0] },
        Block::Slice { shape: vec![3, 4], keep: vec![2, 2], values: vec![1.0, 2.0, 3.0, 4.0] },
        Block::Slice { shape: vec![5], keep: vec![0], values: vec![] },
        Block::Extras(extras),
    ]
}

#[test]
fn every_block_round_trips_exactly() {
    let m = msg(all_blocks());
    let bytes = encode(&m).unwrap();
    let total = m.blocks.iter().map(Block::len).sum();
    assert_eq!(decode(&bytes, Some((0xfeed, total))).unwrap(), m);
    let (v, e) = m.values();
    assert_eq!(v.len(), total);
    assert_eq!(&v[..4], &[1.5, -0.0, f32::MAX, 1e-30]);
    assert_eq!(&v[4..7], &[1.0, -2.0, 1.0]);
    assert_eq!((v[7 + 7], v[7 + 128], v[7 + 999]), (2.0, -3.0, 4.0));
    assert_eq!(e.0.len(), 1);
}

#[test]
fn dense_len_is_the_encoded_length() {
    let mut extras = Extras::default();
    for len in [0usize, 1, 127, 128, 16_384, 100_000] {
        let blocks = vec![Block::Dense(vec![0.5; len])];
        assert_eq!(dense_len(len, &extras).unwrap(), encode(&msg(blocks)).unwrap().len(), "{len}");
    }
    extras.0.insert("c".into(), Extra::Vector(vec![1.0; 300]));
    let blocks = vec![Block::Dense(vec![0.5; 10]), Block::Extras(extras.clone())];
    assert_eq!(dense_len(10, &extras).unwrap(), encode(&msg(blocks)).unwrap().len());
}

#[test]
fn another_layout_or_length_is_refused() {
    let bytes = encode(&msg(vec![Block::Dense(vec![1.0; 3])])).unwrap();
    assert!(decode(&bytes, Some((0xfeed, 3))).is_ok());
    assert!(decode(&bytes, Some((0xbeef, 3))).unwrap_err().to_string().contains("another model"));
    assert!(decode(&bytes, Some((0xfeed, 4))).unwrap_err().to_string().contains("another model"));
}

#[test]
fn every_truncation_and_corruption_fails_cleanly() {
    let bytes = encode(&msg(all_blocks())).unwrap();
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut], None).is_err(), "a truncation at {cut} decoded");
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(decode(&extra, None).unwrap_err().to_string().contains("trailing"));
    // Random single-byte corruptions: an error or a valid message, never a panic.
    let mut rng = RngStream::new(11);
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        let at = rng.below(b.len() as u64) as usize;
        b[at] ^= 1 + rng.below(255) as u8;
        let _ = decode(&b, None);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = RngStream::new(5);
    for n in 0..20_000usize {
        let len = (n % 300) + 1;
        let mut b: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        if n % 2 == 0 && b.len() > 14 {
            // Make most headers valid, so the fuzzing reaches the blocks.
            b[..5].copy_from_slice(&[b'F', b'K', b'W', VERSION, 0]);
        }
        let _ = decode(&b, None);
    }
}

#[test]
fn invalid_blocks_are_refused_at_encoding() {
    let bad = [
        Block::Sparse { len: 3, indices: vec![2, 1], values: vec![1.0, 1.0] },
        Block::Sparse { len: 3, indices: vec![3], values: vec![1.0] },
        Block::Quantized { bits: 1, scale: 1.0, levels: vec![0] },
        Block::Quantized { bits: 3, scale: 1.0, levels: vec![4] },
        Block::Qsgd { s: 2, norm: 1.0, levels: vec![3] },
        Block::Slice { shape: vec![2, 2], keep: vec![3, 1], values: vec![0.0; 3] },
        Block::Slice { shape: vec![2, 2], keep: vec![1, 1], values: vec![0.0; 2] },
        Block::Slice { shape: vec![], keep: vec![], values: vec![] },
        Block::Slice { shape: vec![2, 2], keep: vec![1], values: vec![0.0] },
    ];
    for b in bad {
        assert!(encode(&msg(vec![b.clone()])).is_err(), "{b:?}");
    }
}

#[test]
fn crafted_sparse_gaps_and_huge_qsgd_levels_are_refused() {
    // A sparse block whose second gap overflows u64.
    let mut payload = Vec::new();
    put_varint(&mut payload, 10); // len
    put_varint(&mut payload, 2); // nnz
    put_varint(&mut payload, 3);
    put_varint(&mut payload, u64::MAX);
    payload.extend_from_slice(&[0u8; 8]);
    let mut b = Vec::new();
    b.extend_from_slice(b"FKW");
    b.extend_from_slice(&[VERSION, 0]);
    b.extend_from_slice(&0u64.to_le_bytes());
    put_varint(&mut b, 10);
    put_varint(&mut b, 1);
    b.push(SPARSE);
    put_varint(&mut b, payload.len() as u64);
    b.extend_from_slice(&payload);
    assert!(decode(&b, None).is_err());
    assert!(encode(&msg(vec![Block::Qsgd { s: u32::MAX, norm: 1.0, levels: vec![0] }])).is_err());
}

// A slice is its leading block in place, zeros elsewhere, and costs the block's values only.
#[test]
fn a_slice_places_its_leading_block_and_costs_its_values() {
    let b = Block::Slice { shape: vec![2, 3, 2], keep: vec![1, 2, 2], values: vec![1.0, 2.0, 3.0, 4.0] };
    let mut v = Vec::new();
    b.decode_into(&mut v);
    assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let mut p = Vec::new();
    encode_block(&b, &mut p).unwrap();
    assert_eq!(p.len(), 1 + 6 + 4 * 4, "rank, shape and keep, then the kept values");
}

// Decoding refuses a slice larger than the message, a block wider than its tensor and a
// value count that does not match.
#[test]
fn crafted_slices_are_refused() {
    let frame = |payload: Vec<u8>, total: u64| {
        let mut out = MAGIC.to_vec();
        out.extend([VERSION, 0]);
        out.extend(0xfeedu64.to_le_bytes());
        put_varint(&mut out, total);
        put_varint(&mut out, 1);
        out.push(SLICE);
        put_varint(&mut out, payload.len() as u64);
        out.extend(payload);
        out
    };
    let slice = |shape: &[u64], keep: &[u64], values: usize| {
        let mut p = vec![shape.len() as u8];
        shape.iter().chain(keep).for_each(|&d| put_varint(&mut p, d));
        p.extend(std::iter::repeat_n(0u8, 4 * values));
        p
    };
    assert!(decode(&frame(slice(&[2, 2], &[1, 1], 1), 4), None).is_ok());
    for (payload, total) in [
        (slice(&[1 << 20, 1 << 20], &[1, 1], 1), 4),
        (slice(&[2, 2], &[3, 1], 3), 4),
        (slice(&[2, 2], &[1, 1], 2), 4),
        (slice(&[2, 2], &[1, 1], 0), 4),
        (slice(&[3, 3], &[1, 1], 1), 4),
        (vec![0], 4),
        (vec![9], 4),
    ] {
        assert!(decode(&frame(payload.clone(), total), None).is_err(), "{payload:?}");
    }
}
