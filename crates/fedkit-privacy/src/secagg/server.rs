//! The server's four phases of SecAgg / SecAgg+ (see the module documentation).

use std::collections::{BTreeMap, BTreeSet};

use fedkit_core::protocol::{Message, ServerPhases};
use fedkit_core::{ClientId, Error, Result};

use super::client::{pairwise_seed, self_mask_seed};
use super::crypto;
use super::{ClientMsg, Graph, Params, ServerMsg, from_bytes, threshold, to_bytes};

/// The server's state across the phases.
pub struct SecAggServer {
    params: Params,
    /// Clients needed at every phase (t of the whole cohort for SecAgg; a neighbourhood's
    /// threshold applies to SecAgg+).
    min_clients: usize,
    /// U1: advertised keys, with them.
    keys: BTreeMap<ClientId, ([u8; 32], [u8; 32])>,
    /// The neighbour graph over U1.
    graph: Option<Graph>,
    /// U2: shared keys.
    shared: BTreeSet<ClientId>,
    /// U3: sent masked input, with it.
    masked: BTreeMap<ClientId, Vec<u32>>,
    sum: Option<Vec<u32>>,
}

impl SecAggServer {
    /// A server for a round; at least `min_clients` must survive every phase (at least 2).
    pub fn new(params: Params, min_clients: usize) -> Self {
        SecAggServer {
            params,
            min_clients: min_clients.max(2),
            keys: BTreeMap::new(),
            graph: None,
            shared: BTreeSet::new(),
            masked: BTreeMap::new(),
            sum: None,
        }
    }

    /// After the last phase: the sum of the inputs of [`SecAggServer::summed`], in the ring.
    pub fn sum(&self) -> Option<&[u32]> {
        self.sum.as_deref()
    }

    /// The clients whose inputs the sum holds (those that sent masked input).
    pub fn summed(&self) -> Vec<ClientId> {
        self.masked.keys().copied().collect()
    }

    fn enough(&self, phase: &str, have: usize) -> Result<()> {
        if have < self.min_clients {
            return Err(Error::Method(format!(
                "secagg: {have} clients {phase}, fewer than the {} needed: the round fails without a result",
                self.min_clients
            )));
        }
        Ok(())
    }

    fn hood(&self, u: ClientId) -> Vec<ClientId> {
        self.graph.as_ref().map(|g| g.of(u)).unwrap_or_default()
    }

    fn collect_keys(&mut self, messages: &BTreeMap<ClientId, Message>) -> Result<BTreeMap<ClientId, Message>> {
        for (&c, m) in messages {
            let ClientMsg::Keys { c_pk, s_pk } = from_bytes(m, "key message")? else {
                return Err(Error::Method(format!("secagg: client {c} sent no keys")));
            };
            self.keys.insert(c, (c_pk, s_pk));
        }
        self.enough("advertised keys", self.keys.len())?;
        let ids: Vec<ClientId> = self.keys.keys().copied().collect();
        self.graph = Some(Graph::new(&self.params, &ids));
        let peers: Vec<_> = self.keys.iter().map(|(&c, &(cp, sp))| (c, cp, sp)).collect();
        let msg = to_bytes(&ServerMsg::Keys { peers })?;
        Ok(self.keys.keys().map(|&c| (c, msg.clone())).collect())
    }

    fn route_shares(&mut self, messages: &BTreeMap<ClientId, Message>) -> Result<BTreeMap<ClientId, Message>> {
        let mut inbox: BTreeMap<ClientId, Vec<(ClientId, Vec<u8>)>> = BTreeMap::new();
        for (&u, m) in messages {
            let ClientMsg::Shares { sealed } = from_bytes(m, "share message")? else {
                return Err(Error::Method(format!("secagg: client {u} sent no shares")));
            };
            let hood = self.hood(u);
            for (v, ct) in sealed {
                if hood.binary_search(&v).is_err() {
                    return Err(Error::Method(format!("secagg: client {u} addressed shares to {v}, not a neighbour")));
                }
                inbox.entry(v).or_default().push((u, ct));
            }
            self.shared.insert(u);
        }
        self.enough("shared their keys", self.shared.len())?;
        self.shared
            .iter()
            .map(|&v| Ok((v, to_bytes(&ServerMsg::Shares { sealed: inbox.remove(&v).unwrap_or_default() })?)))
            .collect()
    }

    fn collect_masked(&mut self, messages: &BTreeMap<ClientId, Message>) -> Result<BTreeMap<ClientId, Message>> {
        for (&u, m) in messages {
            if !self.shared.contains(&u) {
                return Err(Error::Method(format!("secagg: client {u} sent masked input without sharing keys")));
            }
            let ClientMsg::Masked { y } = from_bytes(m, "masked input")? else {
                return Err(Error::Method(format!("secagg: client {u} sent no masked input")));
            };
            if y.len() != self.params.len {
                return Err(Error::Shape(format!(
                    "secagg: client {u} sent {} values, the round {}",
                    y.len(),
                    self.params.len
                )));
            }
            self.masked.insert(u, y);
        }
        self.enough("sent masked input", self.masked.len())?;
        let msg = to_bytes(&ServerMsg::Survivors { masked: self.summed() })?;
        Ok(self.masked.keys().map(|&c| (c, msg.clone())).collect())
    }

    /// Client `v`'s secret from its neighbours' revealed shares (t of them), or the error that
    /// ends the round.
    fn rebuild(
        &self,
        combiner: &mut crypto::Combiner,
        shares: &BTreeMap<ClientId, Vec<Vec<u8>>>,
        v: ClientId,
        what: &str,
    ) -> Result<crypto::Secret> {
        let need = threshold(self.params.threshold, self.hood(v).len() + 1);
        let have = shares.get(&v).map_or(&[][..], |s| s.as_slice());
        if have.len() < need {
            return Err(Error::Method(format!(
                "secagg: {} shares of client {v}'s {what}, fewer than the {need} needed: the round fails without a result",
                have.len()
            )));
        }
        combiner.combine(&have[..need])
    }

    /// Phase 3: rebuild every survivor's b and every dropped sharer's s seed; remove the masks.
    fn unmask(&mut self, messages: &BTreeMap<ClientId, Message>) -> Result<BTreeMap<ClientId, Message>> {
        let (mut b_shares, mut s_shares): (BTreeMap<ClientId, Vec<Vec<u8>>>, BTreeMap<ClientId, Vec<Vec<u8>>>) =
            (BTreeMap::new(), BTreeMap::new());
        for (&u, m) in messages {
            let ClientMsg::Unmask { b_shares: b, s_shares: s } = from_bytes(m, "unmasking message")? else {
                return Err(Error::Method(format!("secagg: client {u} sent no unmasking shares")));
            };
            for (v, share) in b {
                if !self.masked.contains_key(&v) {
                    return Err(Error::Method(format!("secagg: client {u} revealed b of {v}, who did not survive")));
                }
                b_shares.entry(v).or_default().push(share);
            }
            for (v, share) in s {
                if self.masked.contains_key(&v) {
                    return Err(Error::Method(format!("secagg: client {u} revealed the key of survivor {v}")));
                }
                s_shares.entry(v).or_default().push(share);
            }
        }
        self.enough("sent unmasking shares", messages.len())?;
        let mut combiner = crypto::Combiner::default();
        let mut sum = vec![0u32; self.params.len];
        for y in self.masked.values() {
            sum.iter_mut().zip(y).for_each(|(a, b)| *a = a.wrapping_add(*b));
        }
        for &u in self.masked.keys() {
            let b = self.rebuild(&mut combiner, &b_shares, u, "self-mask")?;
            crypto::apply_mask(&self_mask_seed(&b), &mut sum, false);
        }
        for &v in self.shared.iter().filter(|v| !self.masked.contains_key(v)) {
            let (s_sk, _) =
                crypto::key_pair(&self.rebuild(&mut combiner, &s_shares, v, "key (dropped)")?, b"fedkit/secagg/s");
            for &u in self.hood(v).iter().filter(|u| self.masked.contains_key(u)) {
                // u added +mask if u < v, else -mask: take it away.
                let seed = pairwise_seed(&s_sk, &self.keys[&u].1);
                crypto::apply_mask(&seed, &mut sum, u > v);
            }
        }
        self.sum = Some(sum);
        Ok(BTreeMap::new())
    }
}

impl ServerPhases for SecAggServer {
    fn phases(&self) -> usize {
        4
    }

    fn server_phase(
        &mut self,
        k: usize,
        messages: &BTreeMap<ClientId, Message>,
    ) -> Result<BTreeMap<ClientId, Message>> {
        match k {
            0 => self.collect_keys(messages),
            1 => self.route_shares(messages),
            2 => self.collect_masked(messages),
            3 => self.unmask(messages),
            _ => Err(Error::Method(format!("secagg has 4 phases, not {}", k + 1))),
        }
    }
}
