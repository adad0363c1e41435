//! Compressor throughput on the cnn's 1.66M-parameter update (issue 11): `cargo bench -p
//! fedkit-engine --bench wire`. Each bench turns the update into its wire bytes (`encode/*`:
//! the compressor and the encoding) or the bytes back into values (`decode/*`), one core.
//! Numbers and targets (dense casts 1 GB/s, top-k and QSGD 0.3 GB/s of f32 input) in
//! docs/performance.md; divan prints the bytes of input per second.

use std::hint::black_box;

use fedkit_core::RngStream;
use fedkit_core::wire::{self, Block, Half, Kind, Message};
use fedkit_methods::compression::{cast, qsgd, signsgd, topk};

fn main() {
    divan::main();
}

const D: usize = 1_663_370;

fn update() -> Vec<f32> {
    let mut rng = RngStream::new(1);
    (0..D).map(|_| (0.01 * rng.normal()) as f32).collect()
}

fn encode(b: Block) -> Vec<u8> {
    wire::encode(&Message { kind: Kind::Update, layout_id: 1, blocks: vec![b] }).expect("encode")
}

const COMPRESSORS: &[&str] = &["dense", "fp16", "bf16", "topk_1pct", "qsgd_16", "signs"];

fn compress(name: &str, x: &[f32], rng: &mut RngStream) -> Block {
    match name {
        "dense" => Block::Dense(x.to_vec()),
        "fp16" => cast::half_block(x, Half::F16).expect("fp16"),
        "bf16" => cast::half_block(x, Half::Bf16).expect("bf16"),
        "topk_1pct" => topk::top_k_block(x, D / 100),
        "qsgd_16" => qsgd::quantize(x, 16, rng),
        "signs" => signsgd::sign_block(x),
        _ => unreachable!(),
    }
}

#[divan::bench(args = COMPRESSORS, sample_count = 10)]
fn encode_update(bencher: divan::Bencher, name: &str) {
    let x = update();
    let mut rng = RngStream::new(2);
    bencher
        .counter(divan::counter::BytesCount::new(4 * D))
        .bench_local(|| black_box(encode(compress(name, black_box(&x), &mut rng))));
}

#[divan::bench(args = COMPRESSORS, sample_count = 10)]
fn decode_update(bencher: divan::Bencher, name: &str) {
    let x = update();
    let bytes = encode(compress(name, &x, &mut RngStream::new(2)));
    bencher.counter(divan::counter::BytesCount::new(4 * D)).bench_local(|| {
        let m = wire::decode(black_box(&bytes), Some((1, D))).expect("decode");
        black_box(m.values())
    });
}
