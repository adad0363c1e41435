//! RFFL: Xu, Lyu, "A Reputation Mechanism Is All You Need: Collaborative Fairness and
//! Adversarial Robustness in Federated Learning", FL-ICML workshop 2021 (arXiv:2011.10464,
//! Algorithm 1).
//!
//! Every client i keeps a model w_i of its own, starting from the server's model when it first
//! takes part (the common initial model in round 1). A round:
//! - the client first adds the reward the server sent it for its last round (below), trains
//!   w_i with the usual local epochs, clips its change to norm Gamma
//!   (Delta_i <- Gamma Delta_i / ||Delta_i|| when larger; its model becomes the start plus the
//!   clipped change) and uploads Delta_i;
//! - the server aggregates u = sum_i r_i Delta_i / sum_i r_i over the clients it has not
//!   removed, weighted by their reputations r_i (in the first round, by the sample counts the
//!   server knows); it clips every upload to Gamma as well, so a client that skips its
//!   clipping gains nothing, and a non-finite upload gets weight 0 and cosine -1;
//! - reputations: r_i <- alpha r_i + (1 - alpha) cos(Delta_i, u), then normalised to sum 1 over
//!   the remaining set R; after `warmup` rounds (the reference code's 10), a client whose
//!   reputation falls below `threshold` / |R| is removed for good (weight 0, no reward), and the
//!   rest are normalised again;
//! - rewards: client i gets the q_i = r_i / max_j r_j largest-magnitude share of every layer of
//!   u (ceil(q_i n_layer) coordinates), a sparse message of its own (a personal downlink, counted
//!   in `bytes_down`; the reward's wire form is one sparse block per layer, dense for a whole layer), so clients with higher
//!   reputations receive more of the aggregate: collaborative fairness.
//! With `sparsify = false` every remaining client receives all of u.
//!
//! A client's personalised model (per-client evaluation) is w_i plus its pending reward, the
//! model it holds at the end of the round in the paper. The run's global model (`test_acc`) is
//! the server's running sum w_0 + sum_t u_t of the aggregates (no client holds exactly it: each
//! adds its own changes too).
//! The paper has every client take part every round; with partial participation only the
//! cohort's reputations move, a client seen for the first time starts at the mean reputation,
//! and a reward waits on the server until its client is next sampled. The robust aggregator, if
//! any, filters the updates first (a rejected update is neither averaged nor scored); its own
//! combination is not used. Removed clients are still sampled (they train and upload, and are
//! ignored). Clipping, cosines and rewards cover every parameter entry, batch-norm running
//! statistics included. Round metrics: `rffl_removed` (|removed|), `rffl_rep_min`,
//! `rffl_rep_max` (over R), and with a threat model `rffl_removed_malicious` (how many of the
//! removed the threat model marks malicious; the rule itself never reads it).
//!
//! Parameters: `alpha` (the reputations' moving average, default 0.95), `gamma` (Gamma, the
//! upload's norm bound, default 0.5 as the paper's MNIST runs), `threshold` (the removal
//! coefficient beta, default 1/3: removed below beta / |R|), `sparsify` (default true),
//! `warmup` (default 10).
//!
//! ```toml
//! [algorithm]
//! use = "rffl"
//! alpha = 0.95
//! gamma = 0.5
//! threshold = 0.3333
//! sparsify = true
//! warmup = 10
//! ```

use std::collections::{BTreeMap, BTreeSet};

use fedkit_core::wire::{self, Block, Kind, Message};
use fedkit_core::{
    Aggregate, Algorithm, BATCH_STREAM, ClientCtx, ClientData, ClientId, Error, Extra, Extras, Metrics, Model, NoHook,
    Params, PersonalDownlink, Result, RoundCtx, ServerView, Update, local_update_from,
};
use serde::{Deserialize, Serialize};

use super::Personal;

/// RFFL's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rffl {
    /// The reputations' moving-average coefficient alpha.
    pub alpha: f64,
    /// Gamma: uploads are clipped to this L2 norm.
    pub gamma: f64,
    /// beta: a client is removed when its reputation falls below beta / |R|.
    pub threshold: f64,
    /// Reward each client a reputation-sized share of the aggregate (false: all of it).
    pub sparsify: bool,
    /// Rounds before any client can be removed (the reference code's 10).
    pub warmup: u32,
}

impl Default for Rffl {
    fn default() -> Self {
        Rffl { alpha: 0.95, gamma: 0.5, threshold: 1.0 / 3.0, sparsify: true, warmup: 10 }
    }
}

impl Rffl {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(0.0..1.0).contains(&self.alpha) {
            return Err(Error::config("alpha", format!("must be in [0, 1), got {}", self.alpha)));
        }
        if !(self.gamma > 0.0 && self.gamma.is_finite()) {
            return Err(Error::config("gamma", format!("must be a finite number > 0, got {}", self.gamma)));
        }
        if !(0.0..1.0).contains(&self.threshold) {
            return Err(Error::config("threshold", format!("must be in [0, 1), got {}", self.threshold)));
        }
        Ok(self)
    }
}

/// The server's memory: reputations, removed clients and the rewards not yet delivered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RfflServer {
    /// r_i of every client in R that has taken part (they sum to 1).
    pub reputation: BTreeMap<ClientId, f64>,
    /// Clients removed for a reputation below the threshold.
    pub removed: BTreeSet<ClientId>,
    /// Each client's reward for its last round, as the wire message it receives.
    pub rewards: BTreeMap<ClientId, Vec<u8>>,
}

const REWARD: &str = "rffl_reward";

impl RfflServer {
    fn seen(&self, c: ClientId) -> bool {
        self.reputation.contains_key(&c) || self.removed.contains(&c)
    }
}

/// The cosine of a and b in f64 (0 when either is zero; PyTorch's eps 1e-10 on the product of
/// the norms).
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-10)
}

/// The reward of share `q` of `u`: per layout entry the ceil(q n) largest magnitudes, as a
/// message of per-entry sparse blocks (dense where the whole entry is sent).
fn reward(u: &Params, q: f64) -> Result<Vec<u8>> {
    let layout = u.layout();
    let blocks = layout
        .entries()
        .iter()
        .map(|e| {
            let v = &u.as_slice()[e.range()];
            let k = ((q * v.len() as f64).ceil() as usize).min(v.len());
            let indices = crate::sparse::top_k(v, k);
            // A sparse value costs its 4 bytes plus its index: dense is smaller past 4/5 full.
            if 5 * k >= 4 * v.len() {
                let mut dense = vec![0.0f32; v.len()];
                indices.iter().for_each(|&i| dense[i as usize] = v[i as usize]);
                return Block::Dense(dense);
            }
            let values = indices.iter().map(|&i| v[i as usize]).collect();
            Block::Sparse { len: v.len() as u32, indices, values }
        })
        .collect();
    wire::encode(&Message { kind: Kind::Broadcast, layout_id: wire::layout_id(layout), blocks })
}

/// The values of a reward message for a model shaped like `like`.
fn decode_reward(bytes: &[u8], like: &Params) -> Result<Params> {
    let (v, _) = wire::decode(bytes, Some((wire::layout_id(like.layout()), like.len())))?.values();
    Params::from_vec(like.layout().clone(), v)
}

/// `w += reward` when `extras` carries one.
fn add_reward(w: &mut Params, extras: &Extras) -> Result<()> {
    match extras.get(REWARD) {
        Some(Extra::Bytes(b)) => {
            let r = decode_reward(b, w)?;
            w.axpy(1.0, &r);
            Ok(())
        }
        Some(_) => Err(Error::Method(format!("rffl: `{REWARD}` is not a reward message"))),
        None => Ok(()),
    }
}

impl Algorithm for Rffl {
    type Client = Personal;
    type Server = RfflServer;

    fn reads_updates(&self) -> bool {
        true
    }

    fn combines_updates_itself(&self) -> bool {
        true
    }

    fn keeps_client_models(&self) -> bool {
        true
    }

    fn personal_downlink(
        &self,
        _r: &RoundCtx,
        s: &RfflServer,
        client: ClientId,
        _m: &dyn Model,
    ) -> Result<Option<PersonalDownlink>> {
        // A client seen before holds its own model and needs only its reward.
        Ok(s.seen(client).then(|| {
            let mut extras = Extras::default();
            if let Some(b) = s.rewards.get(&client) {
                extras.insert(REWARD, Extra::Bytes(b.clone()));
            }
            PersonalDownlink { extras, model_values: Some(0) }
        }))
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, st: &mut Personal) -> Result<Update> {
        let mut start = st.0.clone().unwrap_or_else(|| cx.global.clone());
        add_reward(&mut start, cx.broadcast)?;
        let (mut u, w) = local_update_from(cx, start.clone(), BATCH_STREAM, m, d, &mut NoHook)?;
        u.delta = w.sub(&start);
        let norm = u.delta.l2();
        if norm > self.gamma {
            u.delta.scale((self.gamma / norm) as f32);
        }
        let mut mine = start;
        mine.axpy(1.0, &u.delta);
        st.0 = Some(mine);
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut RfflServer,
        _agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        // The cohort has received its rewards.
        for c in r.cohort {
            s.rewards.remove(c);
        }
        let ups: Vec<&Update> = view.updates.iter().filter(|u| !s.removed.contains(&u.client)).collect();
        if let Some(agg) = self.aggregate(s, &ups, view, w)? {
            for ((u, p), n) in ups.iter().zip(&agg.prev).zip(&agg.norms) {
                // A non-finite upload scores as far from the aggregate as possible.
                let phi = if n.is_finite() { cosine(u.delta.as_slice(), agg.u.as_slice()) } else { -1.0 };
                s.reputation.insert(u.client, self.alpha * p + (1.0 - self.alpha) * phi);
            }
            self.normalise_and_remove(s, r.round > self.warmup);
            let best = s.reputation.values().copied().fold(0.0f64, f64::max);
            for u in &ups {
                if let Some(&rep) = s.reputation.get(&u.client) {
                    let q = if self.sparsify && best > 0.0 { (rep / best).max(0.0) } else { 1.0 };
                    s.rewards.insert(u.client, reward(&agg.u, q)?);
                }
            }
            w.axpy(1.0, &agg.u);
        }
        let mut m = Metrics::new();
        m.insert("rffl_removed".into(), s.removed.len() as f64);
        // Reporting only (the rule never reads the threat model): how many removed clients
        // the threat model marks malicious.
        if r.malicious.iter().any(|&b| b) {
            let bad = s.removed.iter().filter(|&&c| r.malicious.get(c as usize).copied().unwrap_or(false)).count();
            m.insert("rffl_removed_malicious".into(), bad as f64);
        }
        if !s.reputation.is_empty() {
            let reps = s.reputation.values().copied();
            m.insert("rffl_rep_min".into(), reps.clone().fold(f64::INFINITY, f64::min));
            m.insert("rffl_rep_max".into(), reps.fold(f64::NEG_INFINITY, f64::max));
        }
        Ok(m)
    }

    fn adapt(
        &self,
        a: &fedkit_core::AdaptCtx,
        s: &RfflServer,
        st: Option<&Personal>,
        _m: &mut dyn Model,
        _d: &ClientData,
    ) -> Result<Option<Params>> {
        let Some(mut w) = st.and_then(|p| p.0.clone()) else { return Ok(None) };
        if let Some(b) = s.rewards.get(&a.client) {
            w.axpy(1.0, &decode_reward(b, &w)?);
        }
        Ok(Some(w))
    }
}

/// One round's reputation-weighted aggregate u, with each update's previous reputation and norm.
struct RoundAggregate {
    u: Params,
    prev: Vec<f64>,
    norms: Vec<f64>,
}

impl Rffl {
    /// u = sum_i r_i clip(Delta_i) / sum_i r_i over `ups` (round 1: by the clients' sizes);
    /// `None` when no upload carries weight (empty, or every one non-finite).
    fn aggregate(
        &self,
        s: &RfflServer,
        ups: &[&Update],
        view: &ServerView,
        w: &Params,
    ) -> Result<Option<RoundAggregate>> {
        let first = s.reputation.is_empty();
        // A newcomer (partial participation) starts at the mean reputation.
        let mean = if first { 0.0 } else { 1.0 / s.reputation.len() as f64 };
        let prev: Vec<f64> = ups.iter().map(|u| s.reputation.get(&u.client).copied().unwrap_or(mean)).collect();
        // Round 1: the clients' sizes as the server knows them (not a weight a client reports).
        let size = |u: &Update| view.clients.get(u.client as usize).map_or(u.weight as f64, |d| d.len() as f64);
        let norms: Vec<f64> = ups.iter().map(|u| u.delta.l2()).collect();
        let weights: Vec<f64> = ups
            .iter()
            .zip(&prev)
            .zip(&norms)
            .map(|((u, p), n)| {
                if !n.is_finite() {
                    0.0
                } else if first {
                    size(u)
                } else {
                    p.max(0.0)
                }
            })
            .collect();
        let total: f64 = weights.iter().sum();
        if !(total > 0.0) {
            return Ok(None);
        }
        let mut sum = vec![0.0f64; w.len()];
        for ((u, wt), &norm) in ups.iter().zip(&weights).zip(&norms) {
            if *wt == 0.0 {
                continue;
            }
            // The server enforces the bound too: a client that does not clip gains nothing.
            let clip = if norm > self.gamma { self.gamma / norm } else { 1.0 };
            let a = wt / total * clip;
            sum.iter_mut().zip(u.delta.as_slice()).for_each(|(s, &d)| *s += a * d as f64);
        }
        let u = Params::from_vec(w.layout().clone(), sum.iter().map(|&v| v as f32).collect())?;
        Ok(Some(RoundAggregate { u, prev, norms }))
    }

    /// Normalise the reputations to sum 1 over R; after the warm-up (`remove`), remove those
    /// below threshold / |R| (once, as the paper) and normalise again. Nothing is removed while
    /// the reputations do not sum to a positive total (an all-zero aggregate).
    fn normalise_and_remove(&self, s: &mut RfflServer, remove: bool) {
        let normalise = |rep: &mut BTreeMap<ClientId, f64>| {
            let total: f64 = rep.values().sum();
            if total > 0.0 {
                rep.values_mut().for_each(|r| *r /= total);
            }
            total > 0.0
        };
        if !normalise(&mut s.reputation) || !remove {
            return;
        }
        let bar = self.threshold / s.reputation.len() as f64;
        let out: Vec<ClientId> = s.reputation.iter().filter(|(_, r)| **r < bar).map(|(c, _)| *c).collect();
        for c in out {
            s.reputation.remove(&c);
            s.rewards.remove(&c);
            s.removed.insert(c);
        }
        normalise(&mut s.reputation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::{Fed, small_fed};

    fn fed(algo: Rffl) -> Fed<Rffl> {
        small_fed(algo, &[6, 6, 6, 6], 3)
    }

    /// Client 3 free-rides: its upload is fresh uniform noise every round, far larger than
    /// gamma (the server clips it).
    fn free_rider(u: &mut Update) {
        if u.client == 3 {
            let mut rng = fedkit_core::RngStream::new(u.delta.as_slice()[0].to_bits() as u64);
            u.delta.as_mut_slice().iter_mut().for_each(|v| *v = rng.uniform() as f32 * 2.0 - 1.0);
        }
    }

    #[test]
    fn reputations_stay_normalised_and_a_free_rider_is_removed() {
        let mut f = fed(Rffl { gamma: 0.05, ..Rffl::default() });
        f.stage = Some(free_rider);
        for r in 1..=20 {
            f.round(r, &[0, 1, 2, 3]);
            let sum: f64 = f.server.reputation.values().sum();
            assert!((sum - 1.0).abs() < 1e-12, "round {r}: reputations sum to {sum}");
            assert!(f.server.reputation.values().all(|&r| r > 0.0));
            if r <= 10 {
                assert!(f.server.removed.is_empty(), "round {r}: no removal during the warm-up");
            }
        }
        assert!(f.server.removed.contains(&3), "{:?}", f.server);
        assert!(!f.server.reputation.contains_key(&3));
        assert!(!f.server.rewards.contains_key(&3), "a removed client is not rewarded");
        assert_eq!(f.server.reputation.len(), 3, "the honest clients stay");
    }

    /// Client 2 sends NaN.
    fn broken(u: &mut Update) {
        if u.client == 2 {
            u.delta.as_mut_slice()[0] = f32::NAN;
        }
    }

    #[test]
    fn a_non_finite_upload_gets_no_weight_and_the_lowest_score() {
        let mut f = fed(Rffl { warmup: 0, ..Rffl::default() });
        f.stage = Some(broken);
        for r in 1..=3 {
            f.round(r, &[0, 1, 2, 3]);
            assert!(f.global.is_finite(), "round {r}");
        }
        assert!(f.server.removed.contains(&2), "{:?}", f.server);
    }

    #[test]
    fn rewards_are_reputation_sized_shares_of_the_aggregate() {
        let mut f = fed(Rffl::default());
        f.round(1, &[0, 1, 2, 3]);
        let best = f.server.reputation.values().copied().fold(0.0, f64::max);
        let like = f.global.clone();
        for (c, rep) in f.server.reputation.clone() {
            let r = decode_reward(&f.server.rewards[&c], &like).unwrap();
            for e in like.layout().entries() {
                let n = e.range().len();
                let want = ((rep / best * n as f64).ceil() as usize).min(n);
                let got = r.as_slice()[e.range()].iter().filter(|v| **v != 0.0).count();
                assert_eq!(got, want, "client {c} (reputation {rep}), entry {}", e.name);
            }
        }
        // The top client's reward is the whole aggregate: the change of the global model.
        let top = *f.server.reputation.iter().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let (mut start, r) = (small_fed(Rffl::default(), &[6, 6, 6, 6], 3).global, &f.server.rewards[&top]);
        start.axpy(1.0, &decode_reward(r, &like).unwrap());
        assert_eq!(start, f.global);
    }

    #[test]
    fn uploads_are_clipped_to_gamma_and_the_client_keeps_the_clipped_model() {
        let mut f = fed(Rffl { gamma: 1e-3, ..Rffl::default() });
        let start = f.global.clone();
        let ups = f.round(1, &[0, 1]);
        for u in &ups {
            assert!((u.delta.l2() - 1e-3).abs() < 1e-6, "{}", u.delta.l2());
            let mut want = start.clone();
            want.axpy(1.0, &u.delta);
            assert_eq!(f.clients[u.client as usize].0.as_ref(), Some(&want));
        }
    }

    #[test]
    fn the_reward_reaches_the_client_in_its_next_round() {
        let mut f = fed(Rffl { sparsify: false, ..Rffl::default() });
        f.round(1, &[0, 1]);
        let before = f.clients[0].0.clone().unwrap();
        let reward = decode_reward(&f.server.rewards[&0], &before).unwrap();
        let r =
            RoundCtx { round: 2, cohort: &[0], global: &f.global, seed: 7, population: 4, malicious: &[], draws: &[] };
        let down = f.algo.personal_downlink(&r, &f.server, 0, &f.model).unwrap().unwrap();
        assert!(matches!(down.extras.get(REWARD), Some(Extra::Bytes(_))), "client 0's own reward");
        assert_eq!(down.model_values, Some(0));
        assert!(f.algo.broadcast(&r, &f.server).0.is_empty(), "nothing is broadcast");
        let (_, ups) = f.clients_round(2, &[0]);
        let mut want = before;
        want.axpy(1.0, &reward);
        want.axpy(1.0, &ups[0].delta);
        assert_eq!(f.clients[0].0.as_ref(), Some(&want));
        f.server_round(2, &ups);
        assert!(f.server.rewards.contains_key(&0) && f.server.rewards.contains_key(&1), "client 1's reward waits");
    }
}
