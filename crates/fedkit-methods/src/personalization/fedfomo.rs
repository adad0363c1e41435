//! FedFomo: Zhang, Sapra, Fidler, Yeung, Alvarez, "Personalized Federated Learning with First
//! Order Model Optimization", ICLR 2021 (Algorithm 1).
//!
//! The server keeps every client's last uploaded model theta_j and an affinity matrix P. Each
//! round, client i downloads M of its peers' models (a personal downlink: the models differ
//! per client, and `bytes_down` counts them). It weighs each against its own model
//! theta_i^{t-1} on a local validation split (`val_fraction` of its training data, the same
//! samples every round):
//!   w_n = max(0, (L_val(theta_i^{t-1}) - L_val(theta_n)) / ||theta_n - theta_i^{t-1}||),
//! a first-order estimate of how much moving towards theta_n lowers its own loss, so a peer
//! that increases the validation loss gets weight 0. With the weights normalised,
//!   theta_i^t = theta_i^{t-1} + sum_n (w_n / sum_m w_m) (theta_n - theta_i^{t-1})
//! (the own model unchanged when every w_n is 0), then local training on the rest of its data
//! with the usual epochs. The client uploads its model (as its change from the global model) and
//! its signed scores over |sum of the scores| (the reference code's `update_client_weights`);
//! the server adds them to P_i, so a peer that hurt ranks below the untried ones. Which M peers: epsilon-greedy, as the reference
//! code (`get_federating_clients`): for each slot, with probability
//! epsilon_t = max(0, epsilon - (t - 1) epsilon_decay) the next peer of a random order, otherwise
//! the next highest affinity P_in (ties in random order), from the stream
//! (seed, "fedfomo_select", round, client).
//!
//! A client's first round starts from the global model, which here is the sample-weighted mean
//! of the round's uploads (the reference code's FedAvg baseline model, reported as `test_acc`;
//! the reference starts newcomers from the initial model instead). A client's personalised model
//! (per-client evaluation) is its own model after its last round. A robust aggregator filters
//! the uploads the server stores. Memory: the round's cohort holds M peer copies each while it
//! trains (cohort x M x the model size). Update metric: `fomo_peers_used` (peers with w_n > 0).
//!
//! Parameters: `models` (M, default 5), `epsilon` (default 0.3), `epsilon_decay` (per round,
//! default 0.05), `val_fraction` (default 0.2).
//!
//! ```toml
//! [algorithm]
//! use = "fedfomo"
//! models = 5
//! epsilon = 0.3
//! epsilon_decay = 0.05
//! val_fraction = 0.2
//! ```

use std::collections::BTreeMap;

use fedkit_core::{
    Aggregate, Algorithm, BATCH_STREAM, ClientCtx, ClientData, ClientId, Error, Extra, Extras, Metrics, Model, NoHook,
    Params, PersonalDownlink, Result, RngStream, RoundCtx, ServerView, Update, codec, evaluate_in_domain,
    local_update_from,
};
use serde::{Deserialize, Serialize};

use super::Personal;

/// FedFomo's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedFomo {
    /// M, the peer models a client downloads per round.
    pub models: usize,
    /// The initial exploration probability epsilon.
    pub epsilon: f64,
    /// epsilon's decrease per round.
    pub epsilon_decay: f64,
    /// The fraction of a client's training data held out to weigh the peers.
    pub val_fraction: f64,
}

impl Default for FedFomo {
    fn default() -> Self {
        FedFomo { models: 5, epsilon: 0.3, epsilon_decay: 0.05, val_fraction: 0.2 }
    }
}

impl FedFomo {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if self.models == 0 {
            return Err(Error::config("models", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.epsilon) {
            return Err(Error::config("epsilon", format!("must be in [0, 1], got {}", self.epsilon)));
        }
        if !(self.epsilon_decay >= 0.0 && self.epsilon_decay.is_finite()) {
            return Err(Error::config("epsilon_decay", format!("must be >= 0, got {}", self.epsilon_decay)));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(Error::config("val_fraction", format!("must be in (0, 1), got {}", self.val_fraction)));
        }
        Ok(self)
    }
}

/// The server's memory: every client's last model and the affinities P.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FomoServer {
    pub models: BTreeMap<ClientId, Params>,
    /// P_ij: the sum of the weights client i gave client j's model.
    pub affinity: BTreeMap<ClientId, BTreeMap<ClientId, f64>>,
}

const PEER: &str = "fedfomo_peer_";
const WEIGHTS: &str = "fedfomo_weights";

impl FedFomo {
    /// The M peers `client` downloads in `round` (epsilon-greedy over the affinities).
    pub fn select(&self, s: &FomoServer, seed: u64, round: u32, client: ClientId) -> Vec<ClientId> {
        let pool: Vec<ClientId> = s.models.keys().copied().filter(|&c| c != client).collect();
        let m = self.models.min(pool.len());
        let eps = (self.epsilon - round.saturating_sub(1) as f64 * self.epsilon_decay).max(0.0);
        let mut rng = RngStream::derive(seed, "fedfomo_select", round as u64, client as u64);
        let mine = s.affinity.get(&client);
        let aff = |c: ClientId| mine.and_then(|a| a.get(&c)).copied().unwrap_or(0.0);
        let ties: Vec<f64> = pool.iter().map(|_| rng.uniform()).collect();
        let mut top: Vec<usize> = (0..pool.len()).collect();
        top.sort_by(|&a, &b| aff(pool[b]).total_cmp(&aff(pool[a])).then(ties[b].total_cmp(&ties[a])));
        let random = rng.permutation(pool.len());
        let (mut top, mut random) = (top.into_iter(), random.into_iter());
        let mut chosen: Vec<usize> = Vec::with_capacity(m);
        while chosen.len() < m {
            let explore = rng.uniform() < eps;
            // Each list holds every peer, so one not yet chosen always remains.
            let next = if explore { &mut random } else { &mut top };
            if let Some(j) = next.find(|j| !chosen.contains(j)) {
                chosen.push(j);
            }
        }
        let mut ids: Vec<ClientId> = chosen.into_iter().map(|j| pool[j]).collect();
        ids.sort_unstable();
        ids
    }
}

/// The positions of `n` samples held out for validation (fixed per client) and the rest.
fn split(n: usize, fraction: f64, seed: u64, client: ClientId) -> (Vec<usize>, Vec<usize>) {
    // At least one validation sample whenever the client has two.
    let k = ((fraction * n as f64).round() as usize).max(1).min(n.saturating_sub(1));
    let mut perm = RngStream::derive(seed, "fedfomo_val", 0, client as u64).permutation(n);
    let train = perm.split_off(k);
    perm.sort_unstable();
    let mut train = train;
    train.sort_unstable();
    (perm, train)
}

/// FedFomo's weights of `peers` for the model `own` on `val`: max(0, loss drop / distance).
pub fn fomo_weights(m: &mut dyn Model, own: &Params, peers: &[&Params], val: &ClientData) -> Result<Vec<f64>> {
    Ok(fomo_scores(m, own, peers, val)?.into_iter().map(|w| w.max(0.0)).collect())
}

/// The signed first-order scores (loss drop / distance) of `peers` for `own` on `val`: 0 for a
/// peer at zero distance, a non-finite score or an empty split.
pub fn fomo_scores(m: &mut dyn Model, own: &Params, peers: &[&Params], val: &ClientData) -> Result<Vec<f64>> {
    if val.is_empty() {
        return Ok(vec![0.0; peers.len()]);
    }
    let mut loss = |p: &Params| -> Result<f64> {
        Ok(evaluate_in_domain(m, p, val, 0..val.len(), 256, &mut RngStream::new(0))?.loss())
    };
    let base = loss(own)?;
    peers
        .iter()
        .map(|p| {
            let dist = p.sub(own).l2();
            let w = if dist > 0.0 { (base - loss(p)?) / dist } else { 0.0 };
            Ok(if w.is_finite() { w } else { 0.0 })
        })
        .collect()
}

impl Algorithm for FedFomo {
    type Client = Personal;
    type Server = FomoServer;

    fn reads_updates(&self) -> bool {
        true
    }

    fn keeps_client_models(&self) -> bool {
        true
    }

    fn personal_downlink(
        &self,
        r: &RoundCtx,
        s: &FomoServer,
        client: ClientId,
        _m: &dyn Model,
    ) -> Result<Option<PersonalDownlink>> {
        let mut extras = Extras::default();
        for j in self.select(s, r.seed, r.round, client) {
            extras.insert(&format!("{PEER}{j}"), Extra::Params(s.models[&j].clone()));
        }
        // A client that has trained keeps its own model and needs only its peers'.
        let model_values = s.models.contains_key(&client).then_some(0);
        Ok(Some(PersonalDownlink { extras, model_values }))
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, st: &mut Personal) -> Result<Update> {
        let mut own = st.0.clone().unwrap_or_else(|| cx.global.clone());
        let mut ids = Vec::new();
        let mut peers = Vec::new();
        for (k, v) in cx.broadcast.0.range(PEER.to_string()..) {
            let Some(id) = k.strip_prefix(PEER) else { break };
            let id: ClientId = id.parse().map_err(|_| Error::Method(format!("fedfomo: bad peer key `{k}`")))?;
            match v {
                Extra::Params(p) if p.len() == own.len() => peers.push(p),
                _ => return Err(Error::Method(format!("fedfomo: peer `{k}` is not a model of this shape"))),
            }
            ids.push(id);
        }
        let (val, train) = split(d.len(), self.val_fraction, cx.seed, cx.client);
        let scores = fomo_scores(m, &own, &peers, &d.subset(&val))?;
        let weights: Vec<f64> = scores.iter().map(|w| w.max(0.0)).collect();
        let total: f64 = weights.iter().sum();
        if total > 0.0 {
            let mut step = vec![0.0f64; own.len()];
            for (p, w) in peers.iter().zip(&weights) {
                let a = w / total;
                step.iter_mut().zip(p.as_slice().iter().zip(own.as_slice())).for_each(|(s, (x, o))| {
                    *s += a * (*x as f64 - *o as f64);
                });
            }
            own.as_mut_slice().iter_mut().zip(&step).for_each(|(o, s)| *o = (*o as f64 + s) as f32);
        }
        let (mut u, _) = local_update_from(cx, own, BATCH_STREAM, m, &d.subset(&train), &mut NoHook)?;
        // The model as the server rebuilds it from the upload (global + delta), bit for bit
        // unless a client-side stage changes the upload afterwards.
        let mut mine = cx.global.clone();
        mine.axpy(1.0, &u.delta);
        st.0 = Some(mine);
        // The affinities take the signed scores over |sum|, as the reference code: a peer that
        // hurt falls below the untried ones.
        let signed: f64 = scores.iter().sum::<f64>().abs();
        let sent: Vec<(ClientId, f64)> =
            ids.into_iter().zip(&scores).map(|(id, w)| (id, if signed > 0.0 { w / signed } else { 0.0 })).collect();
        u.metrics.insert("fomo_peers_used".into(), weights.iter().filter(|w| **w > 0.0).count() as f64);
        u.extras.insert(WEIGHTS, Extra::Bytes(codec::to_bytes(&sent, "fedfomo weights")?));
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut FomoServer,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        for u in view.updates {
            let mut model = r.global.clone();
            model.axpy(1.0, &u.delta);
            s.models.insert(u.client, model);
            if let Some(Extra::Bytes(b)) = u.extras.get(WEIGHTS) {
                let sent: Vec<(ClientId, f64)> = codec::from_bytes(b, "fedfomo weights")?;
                let row = s.affinity.entry(u.client).or_default();
                for (j, wt) in sent {
                    *row.entry(j).or_default() += wt;
                }
            }
        }
        w.axpy(1.0, &agg.delta);
        Ok(Metrics::new())
    }

    fn personalize(&self, _global: &Params, st: &Personal) -> Option<Params> {
        st.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::{LinReg, dataset, small_fed, split as blocks};

    #[test]
    fn peers_that_raise_the_validation_loss_get_zero_weight() {
        // y = 2 x: the exact model, a worse one and the own model in between.
        let x: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32 / 2.0]).collect();
        let y: Vec<u32> = (0..8).collect();
        let val = blocks(&dataset(&x, &y), &[8]).remove(0);
        let mut m = LinReg::new(1);
        let own = m.params(&[1.0], 0.0);
        let (good, bad, same) = (m.params(&[2.0], 0.0), m.params(&[-1.0], 0.0), m.params(&[1.0], 0.0));
        let w = fomo_weights(&mut m, &own, &[&good, &bad, &same], &val).unwrap();
        assert!(w[0] > 0.0, "{w:?}");
        assert_eq!(w[1], 0.0, "a worse peer gets no weight: {w:?}");
        assert_eq!(w[2], 0.0, "a peer at zero distance gets no weight: {w:?}");
    }

    #[test]
    fn clients_download_m_distinct_peers_and_never_themselves() {
        let algo = FedFomo { models: 2, ..FedFomo::default() };
        let mut f = small_fed(algo, &[6, 6, 6, 6], 3);
        f.round(1, &[0, 1, 2, 3]);
        assert_eq!(f.server.models.len(), 4);
        for c in 0..4 {
            let peers = f.algo.select(&f.server, 7, 2, c);
            assert_eq!(peers.len(), 2);
            assert!(!peers.contains(&c));
            assert!(peers[0] < peers[1]);
        }
        let r =
            RoundCtx { round: 2, cohort: &[0], global: &f.global, seed: 7, population: 4, malicious: &[], draws: &[] };
        let down = f.algo.personal_downlink(&r, &f.server, 0, &f.model).unwrap().unwrap();
        let keys: Vec<&String> = down.extras.0.keys().collect();
        let want: Vec<String> = f.algo.select(&f.server, 7, 2, 0).iter().map(|j| format!("{PEER}{j}")).collect();
        assert_eq!(keys, want.iter().collect::<Vec<_>>(), "the selected peers' models, to this client only");
        assert_eq!(down.model_values, Some(0), "a client that trained needs no global model");
        assert!(f.algo.broadcast(&r, &f.server).0.is_empty());
    }

    // theta <- theta + sum_n (w_n / sum w) (theta_n - theta): with one helpful peer and one
    // harmful, the client starts its training exactly at the helpful peer's model.
    #[test]
    fn the_client_moves_to_the_weighted_peers_before_training() {
        let x: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32 / 2.0, 1.0]).collect();
        let y: Vec<u32> = (0..10).collect();
        let data = blocks(&dataset(&x, &y), &[10]).remove(0);
        let m = LinReg::new(2);
        let own = m.params(&[1.0, 0.0], 0.0);
        let (good, bad) = (m.params(&[2.0, 0.0], 0.0), m.params(&[-1.0, 0.0], 0.0));
        let algo = FedFomo { val_fraction: 0.5, ..FedFomo::default() };
        let mut extras = Extras::default();
        extras.insert(&format!("{PEER}1"), Extra::Params(good.clone()));
        extras.insert(&format!("{PEER}2"), Extra::Params(bad));
        // No local training (lr 0): the upload shows where the mixing step put the model.
        let train = fedkit_core::LocalTrain { lr: 0.0, epochs: 1, batch_size: 5, ..Default::default() };
        let cx = ClientCtx {
            round: 2,
            client: 0,
            seed: 7,
            global: &own,
            broadcast: &extras,
            train: &train,
            epochs: 1,
            malicious: false,
            step: &fedkit_core::PlainStep,
            loss: &fedkit_core::CrossEntropyLoss,
            train_hook: None,
        };
        let mut st = Personal(Some(own.clone()));
        let u = algo.client_update(&cx, &mut LinReg::new(2), &data, &mut st).unwrap();
        assert_eq!(st.0.as_ref(), Some(&good), "all the weight on the helpful peer");
        assert_eq!(u.metrics["fomo_peers_used"], 1.0);
        let Some(Extra::Bytes(b)) = u.extras.get(WEIGHTS) else { panic!("no scores") };
        let sent: Vec<(ClientId, f64)> = codec::from_bytes(b, "w").unwrap();
        assert!(sent[0].1 > 0.0 && sent[1].1 < 0.0, "signed scores for the affinities: {sent:?}");
    }

    #[test]
    fn greedy_selection_follows_the_affinities() {
        let algo = FedFomo { models: 1, epsilon: 0.0, ..FedFomo::default() };
        let p = LinReg::new(2).params(&[0.0, 0.0], 0.0);
        let mut s = FomoServer::default();
        for c in 0..4 {
            s.models.insert(c, p.clone());
        }
        s.affinity.insert(0, BTreeMap::from([(1, 0.1), (2, 0.7), (3, 0.2)]));
        for round in 1..5 {
            assert_eq!(algo.select(&s, 9, round, 0), vec![2]);
        }
    }

    #[test]
    fn the_server_stores_uploads_and_adds_the_weights_to_the_affinities() {
        let mut f = small_fed(FedFomo { models: 3, ..FedFomo::default() }, &[6, 6, 6, 6], 3);
        let start = f.global.clone();
        let ups = f.round(1, &[0, 1, 2, 3]);
        for u in &ups {
            let mut want = start.clone();
            want.axpy(1.0, &u.delta);
            assert_eq!(f.server.models[&u.client], want);
            assert_eq!(f.clients[u.client as usize].0.as_ref(), Some(&want), "upload = the client's model");
        }
        let ups = f.round(2, &[0, 1, 2, 3]);
        for u in &ups {
            let Some(Extra::Bytes(b)) = u.extras.get(WEIGHTS) else { panic!("no weights") };
            let sent: Vec<(ClientId, f64)> = codec::from_bytes(b, "w").unwrap();
            assert_eq!(sent.len(), 3);
            let total: f64 = sent.iter().map(|s| s.1).sum::<f64>().abs();
            assert!(total == 0.0 || (total - 1.0).abs() < 1e-12, "scores over |sum|: {sent:?}");
            for (j, wt) in sent {
                assert_eq!(f.server.affinity[&u.client].get(&j).copied().unwrap_or(0.0), wt);
            }
        }
    }
}
