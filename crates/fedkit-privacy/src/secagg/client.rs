//! A client's four phases of SecAgg / SecAgg+ (see the module documentation).

use std::collections::BTreeMap;

use fedkit_core::protocol::{ClientPhases, Message};
use fedkit_core::{ClientId, Error, Result};
use rand_secagg::{RngExt, SeedableRng, rngs::StdRng};
use x25519_dalek::StaticSecret;

use super::crypto::{self, Secret, Seed};
use super::{ClientMsg, Params, ServerMsg, SharePair, from_bytes, neighbours, threshold, to_bytes};

/// One client's state across the phases.
pub struct SecAggClient {
    id: ClientId,
    params: Params,
    input: Vec<u32>,
    rng: StdRng,
    c_sk: StaticSecret,
    c_pk: [u8; 32],
    s_seed: Secret,
    s_sk: StaticSecret,
    s_pk: [u8; 32],
    b: Secret,
    /// Peers' (c_pk, s_pk), from phase 1.
    peers: BTreeMap<ClientId, ([u8; 32], [u8; 32])>,
    /// Neighbours among the peers.
    hood: Vec<ClientId>,
    /// Share pairs held for each neighbour that shared (and for u itself), from phase 2.
    held: BTreeMap<ClientId, SharePair>,
}

impl SecAggClient {
    /// Client `id` with its encoded input and 32 bytes of secret entropy.
    pub fn new(id: ClientId, params: Params, input: Vec<u32>, entropy: Seed) -> Result<Self> {
        if input.len() != params.len {
            return Err(Error::Shape(format!(
                "secagg: client {id} has {} values, the round {}",
                input.len(),
                params.len
            )));
        }
        let mut rng = StdRng::from_seed(entropy);
        let c_seed: Seed = rng.random();
        let s_seed = crypto::random_secret(&mut rng);
        let b = crypto::random_secret(&mut rng);
        let (c_sk, c_pk) = crypto::key_pair(&c_seed, b"fedkit/secagg/c");
        let (s_sk, s_pk) = crypto::key_pair(&s_seed, b"fedkit/secagg/s");
        Ok(SecAggClient {
            id,
            params,
            input,
            rng,
            c_sk,
            c_pk,
            s_seed,
            s_sk,
            s_pk,
            b,
            peers: BTreeMap::new(),
            hood: Vec::new(),
            held: BTreeMap::new(),
        })
    }

    fn advertise(&self) -> Result<Message> {
        to_bytes(&ClientMsg::Keys { c_pk: self.c_pk, s_pk: self.s_pk })
    }

    /// Phase 1: share b and the s seed with the neighbourhood, encrypted per neighbour.
    fn share(&mut self, inbox: &[u8]) -> Result<Message> {
        let ServerMsg::Keys { peers } = from_bytes(inbox, "key list")? else {
            return Err(Error::Method("secagg: expected the key list".into()));
        };
        let ids: Vec<ClientId> = peers.iter().map(|p| p.0).collect();
        if !ids.windows(2).all(|w| w[0] < w[1]) || !ids.contains(&self.id) {
            return Err(Error::Method("secagg: a key list that is unsorted or lacks this client".into()));
        }
        self.peers = peers.into_iter().map(|(c, cp, sp)| (c, (cp, sp))).collect();
        self.hood = neighbours(&self.params, &ids, self.id);
        let mut members = self.hood.clone();
        members.push(self.id);
        members.sort_unstable();
        let t = threshold(self.params.threshold, members.len());
        let b_shares = crypto::split(&self.b, t, members.len(), &mut self.rng)?;
        let s_shares = crypto::split(&self.s_seed, t, members.len(), &mut self.rng)?;
        let mut sealed = Vec::with_capacity(self.hood.len());
        for (i, &v) in members.iter().enumerate() {
            let pair = SharePair { from: self.id, to: v, b: b_shares[i].clone(), s: s_shares[i].clone() };
            if v == self.id {
                self.held.insert(v, pair);
                continue;
            }
            let shared = crypto::agree(&self.c_sk, &self.peers[&v].0);
            sealed.push((v, crypto::seal(&shared, self.id, v, &to_bytes(&pair)?)?));
        }
        to_bytes(&ClientMsg::Shares { sealed })
    }

    /// Phase 2: open the neighbours' shares; send the masked input.
    fn mask(&mut self, inbox: &[u8]) -> Result<Message> {
        let ServerMsg::Shares { sealed } = from_bytes(inbox, "share bundle")? else {
            return Err(Error::Method("secagg: expected the shares".into()));
        };
        for (from, ct) in sealed {
            if !self.hood.contains(&from) {
                return Err(Error::Method(format!("secagg: shares from client {from}, not a neighbour")));
            }
            let shared = crypto::agree(&self.c_sk, &self.peers[&from].0);
            let pair: SharePair = from_bytes(&crypto::open(&shared, from, self.id, &ct)?, "share pair")?;
            if pair.from != from || pair.to != self.id {
                return Err(Error::Method(format!("secagg: a share pair from client {from} is addressed wrongly")));
            }
            self.held.insert(from, pair);
        }
        let mut y = self.input.clone();
        crypto::apply_mask(&self_mask_seed(&self.b), &mut y, true);
        for &v in self.hood.iter().filter(|v| self.held.contains_key(v)) {
            let seed = pairwise_seed(&self.s_sk, &self.peers[&v].1);
            crypto::apply_mask(&seed, &mut y, self.id < v);
        }
        to_bytes(&ClientMsg::Masked { y })
    }

    /// Phase 3: for each neighbour that shared, one share: b's if it sent masked input, else
    /// its s seed's.
    fn unmask(&mut self, inbox: &[u8]) -> Result<Message> {
        let ServerMsg::Survivors { masked } = from_bytes(inbox, "survivor list")? else {
            return Err(Error::Method("secagg: expected the survivor list".into()));
        };
        if masked.len() < self.params.min_summed {
            return Err(Error::Method(format!(
                "secagg: only {} inputs would be summed, fewer than the {} the distributed DP needs: the client refuses to unmask",
                masked.len(),
                self.params.min_summed
            )));
        }
        let (mut b_shares, mut s_shares) = (Vec::new(), Vec::new());
        for (&v, pair) in &self.held {
            if masked.binary_search(&v).is_ok() {
                b_shares.push((v, pair.b.clone()));
            } else {
                s_shares.push((v, pair.s.clone()));
            }
        }
        to_bytes(&ClientMsg::Unmask { b_shares, s_shares })
    }
}

/// The seed of a client's self-mask, from its shared secret b.
pub(super) fn self_mask_seed(b: &Secret) -> Seed {
    crypto::derive(b, b"fedkit/secagg/b")
}

/// The seed of the pairwise mask of two clients, from their s-agreement.
pub(super) fn pairwise_seed(sk: &StaticSecret, peer: &[u8; 32]) -> Seed {
    crypto::derive(&crypto::agree(sk, peer), b"fedkit/secagg/mask")
}

impl ClientPhases for SecAggClient {
    fn client_phase(&mut self, k: usize, inbox: &[u8]) -> Result<Message> {
        match k {
            0 => self.advertise(),
            1 => self.share(inbox),
            2 => self.mask(inbox),
            3 => self.unmask(inbox),
            _ => Err(Error::Method(format!("secagg has 4 phases, not {}", k + 1))),
        }
    }
}
