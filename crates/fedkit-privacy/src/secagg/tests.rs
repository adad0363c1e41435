//! The defining properties: the unmasked sum is exactly the sum of the survivors' inputs under
//! dropouts at every phase; a masked input looks uniform; too few survivors fail cleanly; a
//! tampered share is caught.

use std::collections::BTreeMap;

use fedkit_core::ClientId;
use fedkit_core::protocol::{ClientPhases, Faults, Message, NoFaults, ServerPhases};

use super::*;
use rand_secagg::{RngExt, SeedableRng};

fn params(len: usize, neighbours: usize) -> Params {
    Params { len, threshold: 0.5, neighbours, round_seed: 1, min_summed: 01 }
}

fn input(c: ClientId, len: usize) -> Vec<u32> {
    (0..len).map(|j| (c as u32).wrapping_mul(2654435761).wrapping_add(j as u32 * 40503)).collect()
}

fn entropy(c: ClientId) -> [u8; 32] {
    crypto::derive(b"test entropy", &c.to_le_bytes())
}

/// Run a round of `n` clients (on 3 threads: the result must not depend on it); returns the
/// server (sum and summed clients) or the error.
fn round(n: u32, p: &Params, faults: &(dyn Faults + Sync)) -> fedkit_core::Result<SecAggServer> {
    let inputs = (0..n).map(|c| (c, input(c, p.len), entropy(c))).collect();
    Ok(run_in_process(p, inputs, faults, 3)?.0)
}

/// Clients whose id hashes below `fraction` drop out before phase `phase`.
struct DropAt {
    phase: usize,
    fraction: f64,
}
impl Faults for DropAt {
    fn online(&self, k: usize, c: ClientId) -> bool {
        let h = crypto::derive(b"drop", &c.to_le_bytes())[0] as f64 / 256.0;
        !(k >= self.phase && h < self.fraction)
    }
}

fn plain_sum(clients: &[ClientId], len: usize) -> Vec<u32> {
    let mut s = vec![0u32; len];
    for &c in clients {
        s.iter_mut().zip(input(c, len)).for_each(|(a, b)| *a = a.wrapping_add(b));
    }
    s
}

#[test]
fn the_sum_is_exact_under_dropouts_at_every_phase() {
    for (n, k) in [(20u32, 0usize), (40, 12)] {
        let p = params(50, k);
        for fraction in [0.0, 0.1, 0.3] {
            for phase in 0..4 {
                let s = round(n, &p, &DropAt { phase, fraction })
                    .unwrap_or_else(|e| panic!("n {n} k {k}: {fraction} dropping before phase {phase}: {e}"));
                let summed = s.summed();
                // Dropping before phase 3 (unmasking) keeps those clients' inputs in the sum.
                let expect: Vec<ClientId> =
                    (0..n).filter(|&c| phase == 3 || DropAt { phase, fraction }.online(2, c)).collect();
                assert_eq!(summed, expect, "n {n} k {k} phase {phase} fraction {fraction}");
                assert_eq!(s.sum().unwrap(), plain_sum(&summed, p.len).as_slice(), "n {n} k {k} phase {phase}");
            }
        }
    }
}

#[test]
fn a_masked_input_is_uniform_in_the_ring() {
    // Client 0's masked input for an all-zero vector: its 16 low-order nibble values should be
    // uniform (chi-square with 15 degrees of freedom; 99.9% quantile 37.7).
    let len = 16_000;
    let p = params(len, 0);
    let mut c0 = SecAggClient::new(0, p.clone(), vec![0; len], entropy(0)).unwrap();
    let mut others: Vec<SecAggClient> =
        (1..5).map(|c| SecAggClient::new(c, p.clone(), vec![0; len], entropy(c)).unwrap()).collect();
    let mut server = SecAggServer::new(p.clone(), 3);
    let mut msgs: BTreeMap<ClientId, Message> = BTreeMap::new();
    msgs.insert(0, c0.client_phase(0, &[]).unwrap());
    for (i, c) in others.iter_mut().enumerate() {
        msgs.insert(i as ClientId + 1, c.client_phase(0, &[]).unwrap());
    }
    let mut inbox = server.server_phase(0, &msgs).unwrap();
    let mut msgs = BTreeMap::new();
    msgs.insert(0, c0.client_phase(1, &inbox[&0]).unwrap());
    for (i, c) in others.iter_mut().enumerate() {
        msgs.insert(i as ClientId + 1, c.client_phase(1, &inbox[&(i as ClientId + 1)]).unwrap());
    }
    inbox = server.server_phase(1, &msgs).unwrap();
    let masked = c0.client_phase(2, &inbox[&0]).unwrap();
    let ClientMsg::Masked { y } = from_bytes(&masked, "masked").unwrap() else { panic!("not a masked input") };
    let mut counts = [0f64; 16];
    y.iter().for_each(|v| counts[(v & 15) as usize] += 1.0);
    let e = len as f64 / 16.0;
    let chi2: f64 = counts.iter().map(|c| (c - e).powi(2) / e).sum();
    assert!(chi2 < 37.7, "chi-square {chi2}");
    let top: f64 = y.iter().map(|v| (v >> 31) as f64).sum::<f64>() / len as f64;
    assert!((top - 0.5).abs() < 0.02, "top bit set in {top} of the values");
}

#[test]
fn too_few_survivors_fail_without_a_result() {
    let p = params(10, 0);
    for phase in 0..4 {
        let err = round(12, &p, &DropAt { phase, fraction: 0.7 }).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("fewer than") && err.contains("without a result"), "phase {phase}: {err}");
    }
}

#[test]
fn a_tampered_share_is_detected() {
    struct Tamper;
    impl Faults for Tamper {
        fn deliver(&self, k: usize, c: ClientId, msg: &mut Message) {
            // The shares routed to client 3 before phase 2: flip the last byte (a ciphertext tag).
            if k == 2 && c == 3 {
                let last = msg.len() - 1;
                msg[last] ^= 1;
            }
        }
    }
    let err = round(8, &params(10, 0), &Tamper).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("client 3") && err.contains("tampered"), "{err}");
    assert!(round(8, &params(10, 0), &NoFaults).is_ok());
}

#[test]
fn secagg_plus_neighbourhoods_are_k_regular_and_symmetric() {
    let p = params(1, 6);
    let ids: Vec<ClientId> = (0..30).collect();
    for &u in &ids {
        let hood = neighbours(&p, &ids, u);
        assert_eq!(hood.len(), 6, "client {u}");
        assert!(hood.iter().all(|&v| neighbours(&p, &ids, v).contains(&u)), "client {u}: symmetric");
    }
    assert_eq!(neighbours(&params(1, 0), &ids, 3).len(), 29, "SecAgg: everyone");
}

#[test]
fn the_encoding_sums_within_its_error_bound() {
    let e = Encoding::new(100, 1.0).unwrap();
    let xs: Vec<Vec<f32>> =
        (0..100).map(|c| (0..20).map(|j| ((c * 7 + j) % 19) as f32 / 9.5 - 1.0).collect()).collect();
    let mut ring = vec![0u32; 20];
    for x in &xs {
        ring.iter_mut().zip(encode(&e, x)).for_each(|(a, b)| *a = a.wrapping_add(b));
    }
    let got = decode_sum(&e, &ring);
    for j in 0..20 {
        let want: f64 = xs.iter().map(|x| x[j] as f64).sum();
        assert!((got[j] - want).abs() <= e.error_bound(100), "coordinate {j}: {} vs {want}", got[j]);
    }
    assert!(Encoding::new(10, 0.0).is_err());
}

#[test]
fn secagg_runs_cohorts_beyond_255_clients() {
    // Prime-field sharing: 260 clients, every one another's neighbour, 10% dropping before
    // the masked input.
    let p = params(4, 0);
    let s = round(260, &p, &DropAt { phase: 2, fraction: 0.1 }).unwrap();
    let summed = s.summed();
    assert!(summed.len() > 200 && summed.len() < 260);
    assert_eq!(s.sum().unwrap(), plain_sum(&summed, p.len).as_slice());
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    // Random and truncated byte strings at every phase, on both sides.
    let p = params(8, 0);
    let mut rng = rand_secagg::rngs::StdRng::from_seed([5; 32]);
    let mut ok = SecAggClient::new(0, p.clone(), vec![0; 8], entropy(0)).unwrap();
    let keys = ok.client_phase(0, &[]).unwrap();
    for trial in 0..300 {
        let len = (trial * 7) % 97;
        let junk: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        for k in 1..4 {
            let mut c = SecAggClient::new(1, p.clone(), vec![0; 8], entropy(1)).unwrap();
            assert!(c.client_phase(k, &junk).is_err() || junk.is_empty() && k == 0);
        }
        let mut server = SecAggServer::new(p.clone(), 2);
        let msgs: BTreeMap<ClientId, Message> = [(0, junk.clone()), (1, keys[..keys.len().min(len)].to_vec())].into();
        // Random bytes can spell a well-formed key advertisement (tag 0 and any 64 bytes: every
        // 32-byte string is an X25519 key); only malformed ones must fail.
        let well_formed = from_bytes::<ClientMsg>(&junk, "junk").is_ok();
        assert!(well_formed || server.server_phase(0, &msgs).is_err(), "trial {trial}: {junk:?}");
        // A forged length prefix claiming a huge vector fails without allocating it.
        let mut forged = vec![2u8];
        forged.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(from_bytes::<ClientMsg>(&forged, "forged").is_err());
    }
}
