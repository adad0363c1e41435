use std::collections::{BTreeMap, BTreeSet};

use fedkit_core::ClientId;
use fedkit_core::protocol::Faults;

use super::*;

/// Inputs of `n` clients, `len` coordinates in [-bound, bound].
fn inputs(n: usize, len: usize, bound: i64) -> Vec<Vec<i64>> {
    (0..n).map(|i| (0..len).map(|j| ((i * 7919 + j * 104729) as i64 % (2 * bound + 1)) - bound).collect()).collect()
}

struct Gone(BTreeSet<ClientId>);
impl Faults for Gone {
    fn online(&self, _k: usize, c: ClientId) -> bool {
        !self.0.contains(&c)
    }
}

fn round(
    n: usize,
    len: usize,
    gone: &BTreeSet<ClientId>,
    min: usize,
) -> fedkit_core::Result<(Vec<i64>, Vec<ClientId>)> {
    let ids: Vec<ClientId> = (0..n as ClientId).map(|c| c * 3 + 1).collect();
    let inputs = ids.iter().copied().zip(inputs(n, len, 1000)).collect();
    let gone_ids: BTreeSet<ClientId> = gone.iter().map(|&i| ids[i as usize]).collect();
    let (server, _) = run_in_process(5, inputs, &[7u8; 32], min, n as i64 * 1000, 12, &Gone(gone_ids), 2)?;
    Ok((server.sum().unwrap().to_vec(), server.summed().to_vec()))
}

#[test]
fn the_decrypted_sum_is_the_plain_sum_of_the_survivors_at_every_dropout_rate() {
    let (n, len) = (20, 33);
    let xs = inputs(n, len, 1000);
    for drop in [0usize, 2, 6] {
        let gone: BTreeSet<ClientId> = (0..drop as ClientId).map(|i| i * 3).collect();
        let (sum, summed) = round(n, len, &gone, 10).unwrap();
        let want: Vec<i64> =
            (0..len).map(|j| (0..n).filter(|i| !gone.contains(&(*i as ClientId))).map(|i| xs[i][j]).sum()).collect();
        assert_eq!(sum, want, "{drop} dropped");
        assert_eq!(summed.len(), n - drop);
    }
}

#[test]
fn too_few_survivors_fail_the_round_without_a_sum() {
    let gone: BTreeSet<ClientId> = (0..6).collect();
    let err = round(10, 4, &gone, 5).unwrap_err().to_string();
    assert!(err.contains("fewer than the 5"), "{err}");
}

#[test]
fn the_authority_issues_one_key_per_label_and_none_that_isolates_a_party() {
    let ids: Vec<ClientId> = (0..4).collect();
    let (mut auth, _) = Authority::new(&ids, &[1u8; 32], 2);
    let all: BTreeSet<ClientId> = ids.iter().copied().collect();
    let one: BTreeSet<ClientId> = [2].into_iter().collect();
    assert!(auth.function_key(9, &one).unwrap_err().to_string().contains("fewer than the 2"));
    assert!(auth.function_key(9, &all).is_ok());
    let three: BTreeSet<ClientId> = [0, 1, 2].into_iter().collect();
    assert!(auth.function_key(9, &three).unwrap_err().to_string().contains("second key"));
    let stranger: BTreeSet<ClientId> = [0, 99].into_iter().collect();
    assert!(auth.function_key(10, &stranger).unwrap_err().to_string().contains("does not know"));
}

#[test]
fn a_key_of_one_round_opens_nothing_in_another() {
    let ids: Vec<ClientId> = (0..3).collect();
    let (mut auth, keys) = Authority::new(&ids, &[3u8; 32], 2);
    let (old, new) = (LabelPoints::new(1, 8), LabelPoints::new(2, 8));
    let cts: BTreeMap<ClientId, Vec<Point>> = keys.iter().map(|k| (k.id, encrypt(k, &new, &[1; 8]).unwrap())).collect();
    let fk = auth.function_key(1, &ids.iter().copied().collect()).unwrap();
    assert!(decrypt_sum(&fk, &new, &cts, 100, &bsgs::Table::shared(12).unwrap()).is_err());
    // The right key opens it.
    let fk = auth.function_key(2, &ids.iter().copied().collect()).unwrap();
    assert_eq!(decrypt_sum(&fk, &new, &cts, 100, &bsgs::Table::shared(12).unwrap()).unwrap(), vec![3; 8]);
    assert!(decrypt_sum(&fk, &old, &cts, 100, &bsgs::Table::shared(12).unwrap()).is_err());
}

/// One client's ciphertext of an all-zero input looks uniform: its bits are balanced (a
/// two-sided z-test on 32 x 8 x 512 bits) and no two points repeat.
#[test]
fn a_ciphertext_looks_uniform() {
    let (_, keys) = Authority::new(&[0, 1], &[5u8; 32], 2);
    let points = LabelPoints::new(3, 512);
    let ct = encrypt(&keys[0], &points, &[0; 512]).unwrap();
    // The last byte's top bit is always 0 in a canonical encoding: test the other 255 bits.
    let bits = 255 * ct.len();
    let ones: u32 =
        ct.iter().map(|p| p[..31].iter().map(|b| b.count_ones()).sum::<u32>() + (p[31] & 0x7f).count_ones()).sum();
    let z = (ones as f64 - bits as f64 / 2.0) / (bits as f64 / 4.0).sqrt();
    assert!(z.abs() < 4.0, "z = {z}");
    let distinct: BTreeSet<Point> = ct.iter().copied().collect();
    assert_eq!(distinct.len(), ct.len());
    // Canonical ristretto encodings have an even first byte (non-negative field element).
}

#[test]
fn encoding_keeps_sums_in_range_within_the_error_bound() {
    let e = Encoding::new(10, 0.5, 20).unwrap();
    let xs: Vec<Vec<f32>> = (0..10).map(|i| vec![0.5, -0.5, 0.01 * i as f32, 9.0]).collect();
    let sum: Vec<i64> = (0..4).map(|j| xs.iter().map(|x| e.encode(x)[j]).sum()).collect();
    assert!(sum.iter().all(|s| s.abs() <= e.range));
    let got = e.decode_sum(&sum);
    let want = [5.0, -5.0, 0.45, 5.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= e.error_bound(10) + 1e-12, "{g} vs {w}");
    }
    assert!(Encoding::new(10, 1e9, 20).unwrap_err().to_string().contains("range_bits"));
}

#[test]
fn keys_follow_ids_whatever_the_input_order_and_duplicates_are_refused() {
    let inputs = vec![(9, vec![1, 2]), (3, vec![10, 20]), (5, vec![100, 200])];
    let (server, _) = run_in_process(1, inputs, &[2u8; 32], 2, 1000, 12, &fedkit_core::protocol::NoFaults, 1).unwrap();
    assert_eq!(server.sum().unwrap(), &[111, 222]);
    let dup = vec![(1, vec![1]), (1, vec![2])];
    assert!(run_in_process(1, dup, &[2u8; 32], 2, 1000, 12, &fedkit_core::protocol::NoFaults, 1).is_err());
}
