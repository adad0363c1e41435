//! One secure-aggregation round in process on the mlp's 199,210 values (docs/performance.md):
//! `cargo bench -p fedkit-privacy --bench secagg`. Larger cohorts, and the split into client
//! and server time: `cargo run --release -p fedkit-privacy --example secagg_cost`.

use fedkit_core::ClientId;
use fedkit_core::protocol::NoFaults;
use fedkit_privacy::secagg::{Params, crypto, run_in_process};

fn main() {
    divan::main();
}

const LEN: usize = 199_210;

fn round(n: usize, neighbours: usize) {
    let p = Params { len: LEN, threshold: 0.5, neighbours, round_seed: 1 };
    let inputs = (0..n as ClientId).map(|c| (c, vec![c; LEN], crypto::derive(b"bench", &c.to_le_bytes()))).collect();
    divan::black_box(run_in_process(&p, inputs, &NoFaults, 1).expect("round"));
}

#[divan::bench(args = [10, 50, 100], sample_count = 3, sample_size = 1)]
fn secagg(n: usize) {
    round(n, 0);
}

#[divan::bench(args = [10, 50, 100], sample_count = 3, sample_size = 1)]
fn secagg_plus(n: usize) {
    let k = (3.0 * (n as f64).log2()).ceil() as usize;
    round(n, k + k % 2);
}
