//! The cost of one secure-aggregation round against the cohort size (docs/performance.md):
//! `cargo run --release -p fedkit-privacy --example secagg_cost [LEN [PROTOCOL [SIZES]]]`, e.g.
//! `... 199210 secagg_plus 10,100,1000`. Prints, for SecAgg and
//! SecAgg+ on vectors of LEN values (default 199,210: the mlp 784-200-200-10), and for
//! HybridAlpha (only when named: `... 7850 hybridalpha 10,100`), the seconds one client spends
//! (mean over the cohort) and the server spends, and the bytes a client sends.

use fedkit_core::ClientId;
use fedkit_core::protocol::NoFaults;
use fedkit_privacy::secagg::{Params, crypto, run_in_process};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let len: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(199_210);
    let only = args.get(2).cloned();
    let sizes: Vec<usize> = args
        .get(3)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 50, 100, 200, 500, 1000]);
    println!("| protocol | clients | neighbours | client s / round | server s / round | client MB up |");
    println!("|---|---|---|---|---|---|");
    for (name, plus) in [("secagg", false), ("secagg_plus", true)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        for &n in &sizes {
            let k = if plus { ((3.0 * (n as f64).log2()).ceil() as usize + 1) / 2 * 2 } else { 0 };
            let p = Params { len, threshold: 0.5, neighbours: k, round_seed: 1, min_summed: 0 };
            let inputs =
                (0..n as ClientId).map(|c| (c, vec![c; len], crypto::derive(b"cost", &c.to_le_bytes()))).collect();
            let (_, t) = run_in_process(&p, inputs, &NoFaults, 1).expect("round");
            println!(
                "| {name} | {n} | {} | {:.3} | {:.3} | {:.2} |",
                if k == 0 || k + 1 >= n { n - 1 } else { k },
                t.client_s / n as f64,
                t.server_s,
                t.up as f64 / n as f64 / 1e6
            );
        }
    }
    if only.as_deref() == Some("hybridalpha") {
        use fedkit_privacy::hybridalpha::{bsgs, run_in_process};
        let t0 = std::time::Instant::now();
        bsgs::Table::shared(20).expect("table");
        eprintln!("baby-step table (2^20 points) built in {:.2} s", t0.elapsed().as_secs_f64());
        for &n in &sizes {
            let inputs = (0..n as ClientId).map(|c| (c, vec![(c % 100) as i64; len])).collect();
            let (_, t) = run_in_process(1, inputs, &[1; 32], n / 2, 1 << 24, 20, &NoFaults, 1).expect("round");
            println!(
                "| hybridalpha | {n} | 0 | {:.3} | {:.3} | {:.2} |",
                t.client_s / n as f64,
                t.server_s,
                t.up as f64 / n as f64 / 1e6
            );
        }
    }
}
