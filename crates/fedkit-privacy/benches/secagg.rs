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
    let p = Params { len: LEN, threshold: 0.5, neighbours, round_seed: 1, min_summed: 0 };
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

/// HybridAlpha on logreg's 7,850 values (one multi-exponentiation per coordinate per client):
/// the whole round, clients and server, with the 2^20 table built once beforehand.
#[divan::bench(args = [5, 10, 20], sample_count = 3, sample_size = 1)]
fn hybridalpha(bencher: divan::Bencher, n: usize) {
    use fedkit_privacy::hybridalpha::{bsgs, run_in_process};
    const LOGREG: usize = 7_850;
    bsgs::Table::shared(20).expect("table");
    bencher.bench(|| {
        let inputs = (0..n as ClientId).map(|c| (c, vec![c as i64; LOGREG])).collect();
        divan::black_box(run_in_process(1, inputs, &[1; 32], n / 2, 1 << 24, 20, &NoFaults, 1).expect("round"));
    });
}
