//! One secure-aggregation round in process on the mlp's 199,210 values (docs/performance.md):
//! `cargo bench -p fedkit-privacy --bench secagg`. Larger cohorts, and the split into client
//! and server time: `cargo run --release -p fedkit-privacy --example secagg_cost`.

use std::collections::BTreeMap;

use fedkit_core::ClientId;
use fedkit_core::protocol::{ClientPhases, NoFaults, run_phases};
use fedkit_privacy::secagg::{Params, SecAggClient, SecAggServer, crypto, threshold};

fn main() {
    divan::main();
}

const LEN: usize = 199_210;

fn round(n: usize, neighbours: usize) {
    let p = Params { len: LEN, threshold: 0.5, neighbours, round_seed: 1 };
    let mut clients: BTreeMap<ClientId, Box<dyn ClientPhases>> = BTreeMap::new();
    for c in 0..n as ClientId {
        let e = crypto::derive(b"bench", &c.to_le_bytes());
        clients.insert(c, Box::new(SecAggClient::new(c, p.clone(), vec![c; LEN], e).expect("client")));
    }
    let hood = if neighbours == 0 || neighbours + 1 >= n { n } else { neighbours + 1 };
    let mut server = SecAggServer::new(p, threshold(0.5, hood));
    divan::black_box(run_phases(&mut server, &mut clients, &NoFaults, 1).expect("round"));
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
