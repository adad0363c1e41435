//! Secure aggregation: the server learns the sum of the surviving clients' vectors and nothing
//! else.
//!
//! - **SecAgg**: Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth,
//!   "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017.
//! - **SecAgg+**: Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server Aggregation
//!   with (Poly)Logarithmic Overhead", CCS 2020. The same protocol, on a sparse k-regular
//!   graph of neighbours.
//!
//! Semi-honest variant, four phases ([`fedkit_core::protocol`]), with dropouts possible before
//! each:
//! 0. **Advertise keys.** Each client u sends two X25519 public keys: c_u for encrypting shares,
//!    s_u for mask agreement. Both come from seeds that u draws from its own entropy.
//! 1. **Share keys.**
//!    - u draws a self-mask secret b_u.
//!    - It Shamir-shares (t of its neighbourhood) both b_u and the seed of s_u.
//!    - It encrypts each neighbour's pair of shares with ChaCha20-Poly1305, under a key derived
//!      from their c-agreement and bound to the direction.
//! 2. **Masked input.** u sends y_u = x_u + PRG(b_u) + sum over neighbours v that shared of
//!    (+ if u < v, else -) PRG(s_uv), in Z_2^32. s_uv comes from X25519(s_u, s_v) through
//!    HKDF; the PRG is the ChaCha20 stream.
//! 3. **Unmask.** For each neighbour v that shared keys, u reveals one share:
//!    - b_v's share, if v sent its masked input;
//!    - otherwise s_v's seed share, so that v's pairwise masks can be removed.
//!    - The server rebuilds each secret from t shares and removes the masks. What is left is
//!      the sum of the inputs of the clients that sent masked input.
//!
//! In SecAgg every client is every other's neighbour. In SecAgg+ the neighbours come from a
//! k-regular Harary graph over the clients that advertised keys, in an order shuffled by the
//! public round seed: k / 2 on each side of u on a ring. The threshold then applies to a
//! neighbourhood, t of k + 1.
//!
//! Failure is all or nothing. Fewer than t survivors at any phase, or fewer than t shares for a
//! secret, end the round with an error and no partial sum. A tampered share fails its AEAD
//! check, and the client that receives it aborts.
//!
//! The shared secrets (b_u, and the seed of s_u) are P-256 scalars, Shamir-shared over that
//! prime field (vsss-rs): a raw X25519 key is not a field element, so keys and mask seeds are
//! derived from the shared scalars through HKDF. A share is 64 bytes, and cohorts of any size
//! work.
//!
//! Clients draw their secrets from the 32-byte entropy they are given. The simulation derives it
//! from the run seed, which is simulation only; a deployment must pass OS randomness.
//!
//! Values are fixed-point encoded in Z_2^32 ([`encode`], [`decode_sum`]).

mod client;
pub mod crypto;
mod server;

pub use client::SecAggClient;
pub use server::SecAggServer;

use fedkit_core::{ClientId, Error, Result};
use serde::{Deserialize, Serialize};

/// The protocol's public parameters, the same for the server and every client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// The vector length.
    pub len: usize,
    /// Shares needed to rebuild a secret, as a fraction of a neighbourhood (u and its
    /// neighbours): t = floor(fraction (k + 1)) + 1, at least 2.
    pub threshold: f64,
    /// SecAgg+: neighbours per client (even); 0 = every other client (SecAgg).
    pub neighbours: usize,
    /// Public randomness of the round (SecAgg+'s graph).
    pub round_seed: u64,
    /// The fewest inputs a client lets the server sum: with fewer masked inputs it refuses to
    /// unmask (distributed DP's survivor floor; 0 = none beyond the threshold).
    #[serde(default)]
    pub min_summed: usize,
}

/// The phases' messages from a client.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ClientMsg {
    Keys { c_pk: [u8; 32], s_pk: [u8; 32] },
    Shares { sealed: Vec<(ClientId, Vec<u8>)> },
    Masked { y: Vec<u32> },
    Unmask { b_shares: Vec<(ClientId, Vec<u8>)>, s_shares: Vec<(ClientId, Vec<u8>)> },
}

/// The phases' messages from the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ServerMsg {
    /// Everyone who advertised keys, with them.
    Keys { peers: Vec<(ClientId, [u8; 32], [u8; 32])> },
    /// The shares sent to this client, by sender (the senders are the clients that shared).
    Shares { sealed: Vec<(ClientId, Vec<u8>)> },
    /// The clients whose masked input arrived.
    Survivors { masked: Vec<ClientId> },
}

/// A plaintext pair of shares, from `from`, for its neighbour.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SharePair {
    from: ClientId,
    to: ClientId,
    b: Vec<u8>,
    s: Vec<u8>,
}

fn to_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    fedkit_core::codec::to_bytes(v, "a secagg message")
}

/// Decode a peer's message; a malformed or truncated one is an error, never a panic. The
/// transport bounds a message's size before it gets here.
fn from_bytes<T: for<'de> Deserialize<'de>>(b: &[u8], what: &str) -> Result<T> {
    // Never reads (or allocates for) more than the message holds: a forged length fails.
    fedkit_core::codec::from_bytes(b, what).map_err(|e| Error::Method(format!("secagg: {e}")))
}

/// One round in process: every client of `inputs` (id, encoded input, 32 bytes of entropy)
/// with the server, under `faults`, a phase's clients on `threads` threads. Returns the server
/// (its [`SecAggServer::sum`] and [`SecAggServer::summed`]) and the traffic.
pub fn run_in_process(
    params: &Params,
    inputs: Vec<(ClientId, Vec<u32>, crypto::Seed)>,
    faults: &(dyn fedkit_core::protocol::Faults + Sync),
    threads: usize,
) -> Result<(SecAggServer, fedkit_core::protocol::Traffic)> {
    let n = inputs.len();
    let mut clients: std::collections::BTreeMap<ClientId, Box<dyn fedkit_core::protocol::ClientPhases>> =
        std::collections::BTreeMap::new();
    for (id, x, entropy) in inputs {
        clients.insert(id, Box::new(SecAggClient::new(id, params.clone(), x, entropy)?));
    }
    let hood = if params.neighbours == 0 || params.neighbours + 1 >= n { n } else { params.neighbours + 1 };
    let mut server = SecAggServer::new(params.clone(), threshold(params.threshold, hood));
    let traffic = fedkit_core::protocol::run_phases(&mut server, &mut clients, faults, threads)?;
    Ok((server, traffic))
}

/// The shares needed out of a neighbourhood of `size` (u included).
pub fn threshold(fraction: f64, size: usize) -> usize {
    (((fraction * size as f64).floor() as usize) + 1).clamp(2.min(size), size)
}

/// The neighbour graph over the clients that advertised keys (sorted ids): everyone else for
/// SecAgg, else the Harary graph of degree k over the clients in the order shuffled by
/// `round_seed` (k / 2 on each side on a ring). Built once per round.
pub struct Graph {
    order: Vec<ClientId>,
    pos: std::collections::BTreeMap<ClientId, usize>,
    half: usize,
    complete: bool,
}

impl Graph {
    pub fn new(p: &Params, clients: &[ClientId]) -> Self {
        let n = clients.len();
        let complete = p.neighbours == 0 || p.neighbours + 1 >= n;
        let mut order: Vec<ClientId> = clients.to_vec();
        if !complete {
            let key = |c: ClientId| {
                let d = crypto::derive(&p.round_seed.to_le_bytes(), &c.to_le_bytes());
                u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
            };
            let mut keyed: Vec<(u64, ClientId)> = order.iter().map(|&c| (key(c), c)).collect();
            keyed.sort_unstable();
            order = keyed.into_iter().map(|(_, c)| c).collect();
        }
        let pos = order.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        Graph { order, pos, half: p.neighbours / 2, complete }
    }

    /// u's neighbours, sorted (empty for a client not in the graph).
    pub fn of(&self, u: ClientId) -> Vec<ClientId> {
        let Some(&at) = self.pos.get(&u) else { return Vec::new() };
        if self.complete {
            let mut all = self.order.clone();
            all.remove(at);
            return all;
        }
        let n = self.order.len();
        let mut out: Vec<ClientId> =
            (1..=self.half).flat_map(|d| [self.order[(at + d) % n], self.order[(at + n - d) % n]]).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// u's neighbours among `clients` (see [`Graph`]).
pub fn neighbours(p: &Params, clients: &[ClientId], u: ClientId) -> Vec<ClientId> {
    Graph::new(p, clients).of(u)
}

/// Fixed-point encoding for a sum of up to `clients` vectors with coordinates in
/// [-`bound`, `bound`]: x -> round(x * scale) mod 2^32 with scale = floor((2^31 - 1) /
/// (clients * bound)), so that no sum wraps. Values outside the bound are clipped to it. The
/// decoded sum is off by less than clients / scale per coordinate (rounding, and at the bound the
/// clamp to floor(bound scale)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Encoding {
    pub scale: f64,
    pub bound: f64,
}

impl Encoding {
    /// The encoding for `clients` vectors bounded by `bound`.
    pub fn new(clients: usize, bound: f64) -> Result<Self> {
        if !(bound > 0.0 && bound.is_finite()) || clients == 0 {
            return Err(Error::config("secure_aggregation.bound", format!("must be a finite number > 0, got {bound}")));
        }
        let scale = ((i32::MAX as f64) / (clients as f64 * bound)).floor();
        if scale < 1.0 {
            return Err(Error::config(
                "secure_aggregation.bound",
                format!("{clients} clients of bound {bound} overflow the 32-bit ring: lower the bound"),
            ));
        }
        Ok(Encoding { scale, bound })
    }
    /// The per-coordinate error bound of a decoded sum of `clients` vectors.
    pub fn error_bound(&self, clients: usize) -> f64 {
        clients as f64 / self.scale
    }
}

/// `x` in the ring.
pub fn encode(e: &Encoding, x: &[f32]) -> Vec<u32> {
    // Rounded values stay within floor(bound scale), so no sum wraps.
    let q = (e.bound * e.scale).floor();
    x.iter().map(|v| ((*v as f64) * e.scale).round().clamp(-q, q) as i64 as i32 as u32).collect()
}

/// A ring sum back to reals.
pub fn decode_sum(e: &Encoding, sum: &[u32]) -> Vec<f64> {
    sum.iter().map(|v| *v as i32 as f64 / e.scale).collect()
}

#[cfg(test)]
mod tests;
