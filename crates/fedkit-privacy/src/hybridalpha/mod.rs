//! HybridAlpha: secure aggregation by multi-input functional encryption, with a third-party
//! authority that issues the function keys.
//!
//! - Framework: Xu, Baracaldo, Zhou, Anwar, Ludwig, "HybridAlpha: An Efficient Approach for
//!   Privacy-Preserving Federated Learning", AISec 2019. Clients encrypt their inputs once, with
//!   no interaction between them; the aggregator asks the authority (the TPA) for the key of
//!   the sum over the parties whose ciphertexts arrived, so dropouts cost nothing; the TPA's
//!   inference-prevention check refuses keys that would isolate a party.
//! - The encryption: the DDH-based multi-client scheme for inner products in the random-oracle
//!   model of Chotard, Dufour Sans, Gay, Phan, Pointcheval, "Decentralized Multi-Client
//!   Functional Encryption for Inner Product", ASIACRYPT 2018, on ristretto255
//!   (curve25519-dalek).
//!
//! The scheme, per round label l and coordinate j:
//! - Client i holds s_i = (s_i1, s_i2) in Z_p^2, derived from the master seed the TPA gave it
//!   and the label (so a key from one round decrypts nothing in another).
//! - U_lj = (U_lj1, U_lj2) = H(l, j), two points from a hash (SHA-512, Elligator).
//! - Ciphertext: c_ij = x_ij G + s_i1 U_lj1 + s_i2 U_lj2, one multi-exponentiation.
//! - Function key for a set S of parties (weights all 1): k = sum over S of s_i.
//! - Decryption: sum over S of c_ij - k_1 U_lj1 - k_2 U_lj2 = (sum over S of x_ij) G; the
//!   integer comes out of baby-step giant-step over a table built once ([`bsgs::Table`]).
//!
//! Inference prevention (the TPA's rule): one key per round label; at least `min_parties`
//! parties in it; every party known. Two keys for sets that differ by one party would reveal
//! that party's input, and one key per label rules that out.
//!
//! Inputs are fixed-point integers ([`Encoding`]) with sums in [-2^range_bits, 2^range_bits].
//! The master seeds come from the TPA's entropy: simulation derives it from the run seed, a
//! deployment must take OS randomness.

pub mod bsgs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{MultiscalarMul, VartimeMultiscalarMul};
use fedkit_core::protocol::{ClientPhases, Message, ServerPhases};
use fedkit_core::{ClientId, Error, Result};
use sha2::{Digest, Sha512};

use crate::secagg::crypto::{Seed, derive};

/// A point on the wire.
pub type Point = [u8; 32];

/// The round's public points U_lj, for `len` coordinates of label `label`. Every client and
/// the server compute the same ones; a simulation computes them once and shares them.
pub struct LabelPoints {
    pub label: u64,
    points: Vec<[RistrettoPoint; 2]>,
}

impl LabelPoints {
    pub fn new(label: u64, len: usize) -> Self {
        let point = |j: usize, k: u8| {
            let mut h = Sha512::new();
            h.update(b"fedkit-hybridalpha-v1");
            h.update(label.to_le_bytes());
            h.update((j as u64).to_le_bytes());
            h.update([k]);
            let wide: [u8; 64] = h.finalize().into();
            RistrettoPoint::from_uniform_bytes(&wide)
        };
        LabelPoints { label, points: (0..len).map(|j| [point(j, 1), point(j, 2)]).collect() }
    }
    pub fn len(&self) -> usize {
        self.points.len()
    }
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// A uniform scalar from a seed and a purpose (64 derived bytes reduced mod the group order).
fn scalar_from(seed: &Seed, purpose: &[u8]) -> Scalar {
    let mut wide = [0u8; 64];
    let mut info = purpose.to_vec();
    info.push(0);
    wide[..32].copy_from_slice(&derive(seed, &info));
    *info.last_mut().unwrap_or(&mut 0) = 1;
    wide[32..].copy_from_slice(&derive(seed, &info));
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// s_i for label l.
fn round_secret(master: &Seed, label: u64) -> [Scalar; 2] {
    let mut p = b"hybridalpha s ".to_vec();
    p.extend_from_slice(&label.to_le_bytes());
    let mut p2 = p.clone();
    p.push(1);
    p2.push(2);
    [scalar_from(master, &p), scalar_from(master, &p2)]
}

/// A client's secret from the TPA.
#[derive(Clone)]
pub struct ClientKey {
    pub id: ClientId,
    master: Seed,
}

/// The function key of the sum over `parties` for one label.
pub struct FunctionKey {
    pub label: u64,
    pub parties: Vec<ClientId>,
    k: [Scalar; 2],
}

impl std::fmt::Debug for FunctionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionKey")
            .field("label", &self.label)
            .field("parties", &self.parties)
            .finish_non_exhaustive()
    }
}

/// The third-party authority: it sets up the clients' secrets and issues function keys under
/// the inference-prevention rule.
pub struct Authority {
    masters: BTreeMap<ClientId, Seed>,
    min_parties: usize,
    issued: BTreeSet<u64>,
}

impl Authority {
    /// Set up `clients` from 32 bytes of the TPA's entropy; keys need at least `min_parties`
    /// parties (at least 2).
    pub fn new(clients: &[ClientId], entropy: &Seed, min_parties: usize) -> (Self, Vec<ClientKey>) {
        let masters: BTreeMap<ClientId, Seed> = clients
            .iter()
            .map(|&c| {
                let mut info = b"hybridalpha master ".to_vec();
                info.extend_from_slice(&c.to_le_bytes());
                (c, derive(entropy, &info))
            })
            .collect();
        let keys = masters.iter().map(|(&id, &master)| ClientKey { id, master }).collect();
        (Authority { masters, min_parties: min_parties.max(2), issued: BTreeSet::new() }, keys)
    }

    /// The key of the sum over `parties` for `label`, or an error if the request breaks the
    /// inference-prevention rule (a second key for the label, too few or unknown parties).
    pub fn function_key(&mut self, label: u64, parties: &BTreeSet<ClientId>) -> Result<FunctionKey> {
        if self.issued.contains(&label) {
            return Err(Error::Method(format!(
                "hybridalpha: the authority refuses a second key for round label {label}: two sums over different sets would reveal their difference"
            )));
        }
        if parties.len() < self.min_parties {
            return Err(Error::Method(format!(
                "hybridalpha: {} parties, fewer than the {} the authority requires: the round fails without a result",
                parties.len(),
                self.min_parties
            )));
        }
        let mut k = [Scalar::ZERO; 2];
        for p in parties {
            let m = self
                .masters
                .get(p)
                .ok_or_else(|| Error::Method(format!("hybridalpha: the authority does not know client {p}")))?;
            let s = round_secret(m, label);
            k[0] += s[0];
            k[1] += s[1];
        }
        self.issued.insert(label);
        Ok(FunctionKey { label, parties: parties.iter().copied().collect(), k })
    }
}

/// Encrypt `x` (fixed-point integers) under `key` for the label of `u`.
pub fn encrypt(key: &ClientKey, u: &LabelPoints, x: &[i64]) -> Result<Vec<Point>> {
    if x.len() != u.len() {
        return Err(Error::Method(format!("hybridalpha: {} values for {} coordinates", x.len(), u.len())));
    }
    let s = round_secret(&key.master, u.label);
    Ok(x.iter()
        .zip(&u.points)
        .map(|(&v, [u1, u2])| {
            RistrettoPoint::multiscalar_mul([bsgs::scalar_of(v), s[0], s[1]], [G, *u1, *u2]).compress().to_bytes()
        })
        .collect())
}

/// The sum over the key's parties of their inputs, from their ciphertexts; every sum must lie
/// in [-`bound`, `bound`].
pub fn decrypt_sum(
    fk: &FunctionKey,
    u: &LabelPoints,
    cts: &BTreeMap<ClientId, Vec<Point>>,
    bound: i64,
    table: &bsgs::Table,
) -> Result<Vec<i64>> {
    if fk.label != u.label {
        return Err(Error::Method(format!("hybridalpha: a key for label {} cannot open label {}", fk.label, u.label)));
    }
    let mut acc: Vec<RistrettoPoint> = u
        .points
        .iter()
        .map(|[u1, u2]| -RistrettoPoint::vartime_multiscalar_mul([fk.k[0], fk.k[1]], [*u1, *u2]))
        .collect();
    for p in &fk.parties {
        let ct = cts.get(p).ok_or_else(|| Error::Method(format!("hybridalpha: no ciphertext from client {p}")))?;
        if ct.len() != acc.len() {
            return Err(Error::Method(format!(
                "hybridalpha: client {p} sent {} points for {} coordinates",
                ct.len(),
                acc.len()
            )));
        }
        for (a, c) in acc.iter_mut().zip(ct) {
            *a += CompressedRistretto(*c)
                .decompress()
                .ok_or_else(|| Error::Method(format!("hybridalpha: client {p} sent an invalid point")))?;
        }
    }
    table.solve(&acc, bound)
}

/// Fixed-point encoding for HybridAlpha: x -> round(x scale) with scale = floor(2^range_bits /
/// (clients bound)), so every sum of `clients` inputs in [-bound, bound] lies in [-2^range_bits,
/// 2^range_bits]. The decoded sum is off by less than clients / scale per coordinate (rounding,
/// and at the bound the clamp to floor(bound scale)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Encoding {
    pub scale: f64,
    pub bound: f64,
    pub range: i64,
}

impl Encoding {
    pub fn new(clients: usize, bound: f64, range_bits: u32) -> Result<Self> {
        if !(bound > 0.0 && bound.is_finite()) || clients == 0 {
            return Err(Error::config("secure_aggregation.bound", format!("must be a finite number > 0, got {bound}")));
        }
        if !(8..=40).contains(&range_bits) {
            return Err(Error::config("secure_aggregation.range_bits", format!("must be in 8..=40, got {range_bits}")));
        }
        let range = 1i64 << range_bits;
        let scale = (range as f64 / (clients as f64 * bound)).floor();
        if scale < 1.0 {
            return Err(Error::config(
                "secure_aggregation.bound",
                format!(
                    "{clients} clients of bound {bound} do not fit 2^{range_bits}: raise range_bits or lower the bound"
                ),
            ));
        }
        Ok(Encoding { scale, bound, range })
    }
    pub fn encode(&self, x: &[f32]) -> Vec<i64> {
        // Rounded values stay within floor(bound scale), so no sum leaves the range.
        let q = (self.bound * self.scale).floor();
        x.iter().map(|v| ((*v as f64) * self.scale).round().clamp(-q, q) as i64).collect()
    }
    pub fn decode_sum(&self, sum: &[i64]) -> Vec<f64> {
        sum.iter().map(|&v| v as f64 / self.scale).collect()
    }
    pub fn error_bound(&self, clients: usize) -> f64 {
        clients as f64 / self.scale
    }
}

/// A client's one phase: send its ciphertext.
pub struct HybridAlphaClient {
    key: ClientKey,
    points: Arc<LabelPoints>,
    input: Vec<i64>,
}

impl HybridAlphaClient {
    pub fn new(key: ClientKey, points: Arc<LabelPoints>, input: Vec<i64>) -> Self {
        HybridAlphaClient { key, points, input }
    }
}

impl ClientPhases for HybridAlphaClient {
    fn client_phase(&mut self, k: usize, _inbox: &[u8]) -> Result<Message> {
        if k != 0 {
            return Err(Error::Method(format!("hybridalpha has one phase, not {}", k + 1)));
        }
        let ct = encrypt(&self.key, &self.points, &self.input)?;
        Ok(ct.concat())
    }
}

/// The aggregator: collects ciphertexts, asks the TPA for the key of the senders' sum, and
/// decrypts it. In simulation it holds the authority in process; a deployment runs the TPA as a
/// separate party that the aggregator queries.
pub struct HybridAlphaServer {
    authority: Arc<Mutex<Authority>>,
    points: Arc<LabelPoints>,
    table: Arc<bsgs::Table>,
    range: i64,
    sum: Option<Vec<i64>>,
    summed: Vec<ClientId>,
}

impl HybridAlphaServer {
    pub fn new(
        authority: Arc<Mutex<Authority>>,
        points: Arc<LabelPoints>,
        table: Arc<bsgs::Table>,
        range: i64,
    ) -> Self {
        HybridAlphaServer { authority, points, table, range, sum: None, summed: Vec::new() }
    }
    pub fn sum(&self) -> Option<&[i64]> {
        self.sum.as_deref()
    }
    pub fn summed(&self) -> &[ClientId] {
        &self.summed
    }
}

impl ServerPhases for HybridAlphaServer {
    fn phases(&self) -> usize {
        1
    }
    fn server_phase(
        &mut self,
        _k: usize,
        messages: &BTreeMap<ClientId, Message>,
    ) -> Result<BTreeMap<ClientId, Message>> {
        let len = self.points.len();
        let mut cts = BTreeMap::new();
        for (&c, m) in messages {
            if m.len() != 32 * len {
                return Err(Error::Method(format!(
                    "hybridalpha: client {c} sent {} bytes, not the {} of {len} points",
                    m.len(),
                    32 * len
                )));
            }
            cts.insert(c, m.chunks_exact(32).map(|b| b.try_into().unwrap_or([0u8; 32])).collect::<Vec<Point>>());
        }
        let parties: BTreeSet<ClientId> = cts.keys().copied().collect();
        let fk = self.authority.lock().unwrap_or_else(|e| e.into_inner()).function_key(self.points.label, &parties)?;
        self.sum = Some(decrypt_sum(&fk, &self.points, &cts, self.range, &self.table)?);
        self.summed = fk.parties;
        Ok(BTreeMap::new())
    }
}

/// One round in process: the TPA set up from `entropy`, every client of `inputs` (id, encoded
/// input) encrypting for `label`, keys for at least `min_parties`, sums within [-`range`,
/// `range`], the process's table of 2^`table_bits` baby steps; faults as in
/// [`fedkit_core::protocol::run_phases`], a phase's clients on `threads` threads.
#[allow(clippy::too_many_arguments)]
pub fn run_in_process(
    label: u64,
    inputs: Vec<(ClientId, Vec<i64>)>,
    entropy: &Seed,
    min_parties: usize,
    range: i64,
    table_bits: u32,
    faults: &(dyn fedkit_core::protocol::Faults + Sync),
    threads: usize,
) -> Result<(HybridAlphaServer, fedkit_core::protocol::Traffic)> {
    let len = inputs.first().map_or(0, |i| i.1.len());
    let n = inputs.len();
    let mut by_id: BTreeMap<ClientId, Vec<i64>> = inputs.into_iter().collect();
    if by_id.len() != n {
        return Err(Error::Method("hybridalpha: a client id appears twice in the round".into()));
    }
    let ids: Vec<ClientId> = by_id.keys().copied().collect();
    let (authority, keys) = Authority::new(&ids, entropy, min_parties);
    let points = Arc::new(LabelPoints::new(label, len));
    let mut clients: BTreeMap<ClientId, Box<dyn ClientPhases>> = BTreeMap::new();
    for k in keys {
        let x = by_id.remove(&k.id).unwrap_or_default();
        clients.insert(k.id, Box::new(HybridAlphaClient::new(k, points.clone(), x)));
    }
    let table = bsgs::Table::shared(table_bits)?;
    let mut server = HybridAlphaServer::new(Arc::new(Mutex::new(authority)), points, table, range);
    let traffic = fedkit_core::protocol::run_phases(&mut server, &mut clients, faults, threads)?;
    Ok((server, traffic))
}

#[cfg(test)]
mod tests;
