//! H-SGD (hierarchical SGD): Wang, Wang, Chen, Ji, "Demystifying Why Local Aggregation Helps:
//! Convergence Analysis of Hierarchical SGD", AAAI 2022.
//!
//! Two-level local SGD: the N clients are split into n groups (`groups`), each with a group
//! server. Every client runs local SGD, x <- x - eta g(x); every I local steps (`local_period`)
//! each group averages its members' models (local aggregation); every G steps (`global_period`,
//! a multiple of I) the groups' models are averaged into the global model (global aggregation).
//! The paper shows its convergence bound lies between those of local SGD with period I and with
//! period G (the "sandwich"): local aggregation buys most of the benefit of frequent global
//! aggregation for a fraction of the global communication.
//!
//! Engine mapping: one round is one local period. Each client of the round's cohort runs exactly
//! I local steps (mini-batches of `[client] batch_size` at `[client] lr`; `[client] epochs` and
//! `max_steps` are overridden) from its group's model and sends the change; the server averages
//! each group's changes into that group's model (weighted by the updates' weights, the sample
//! counts, as the `mean` aggregator; the paper's equal-size groups average uniformly). Every G/I
//! rounds the group models are averaged (weighted by each group's total weight) into the global
//! model and all groups restart from it. Between global aggregations the engine's global model
//! (the one it evaluates) is that same weighted average of the group models.
//! - Participation: the engine's cohort (`[sampling] per_round`; the paper's setting is full
//!   participation). A group none of whose members is sampled in a round keeps its model.
//! - Grouping: `"fixed"` puts client c in group c mod n; `"random"` draws a fresh balanced
//!   partition at the start of every global period (stream `hsgd_grouping`), the paper's random
//!   grouping.
//! - Downlink: at the start of a global period every client receives the global model, as in
//!   FedAvg; within a period the broadcast carries every group's model (extras `group_<g>`) and
//!   the client-to-group map (extra `hsgd_groups`), because the engine sends one broadcast to the
//!   whole cohort: `bytes_down` then counts n + 1 models per client where a deployment would send
//!   each client only its group's model (one).
//! - Stragglers are dropped (with `[sampling] stragglers = "partial"` they still run all I steps:
//!   partial work is not modelled).
//!
//! Server state: the n group models and weights within a global period (empty at its start).
//! Metrics: `global_sync` (1 in rounds that end with a global aggregation) and
//! `group_divergence` (sum_g p_g ||y_g - y_bar||^2 over the groups' models y_g, the spread that the
//! paper's "upward" divergence measures).
//!
//! Parameters:
//! - `groups` (n >= 1, default 2).
//! - `local_period` (I >= 1 local steps per round, default 1).
//! - `global_period` (G, a multiple of I, default 4).
//! - `grouping` (`"fixed"` or `"random"`, default `"fixed"`).
//!
//! With `groups = 1` (or G = I) it is FedAvg with I local steps per round; with one client per
//! group it is local SGD with period G (both tested).
//!
//! ```toml
//! [algorithm]
//! use = "hsgd"
//! groups = 2
//! local_period = 5
//! global_period = 25
//! grouping = "fixed"
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, Extra, Extras, LocalTrain, Metrics, Model, NoHook, Params,
    Result, RngStream, RoundCtx, ServerView, Update, local_update_from,
};
use serde::{Deserialize, Serialize};

use crate::aggregators::mean::weighted_mean;

/// The broadcast extra mapping each client to its group.
const GROUPS: &str = "hsgd_groups";

/// How clients are assigned to groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// Client c in group c mod n.
    #[default]
    Fixed,
    /// A fresh seeded balanced partition every global period.
    Random,
}

/// H-SGD.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hsgd {
    /// Number of groups n.
    pub groups: usize,
    /// Local aggregation period I, in local steps (one round).
    pub local_period: usize,
    /// Global aggregation period G, in local steps (a multiple of I).
    pub global_period: usize,
    /// Fixed or random grouping.
    pub grouping: Grouping,
}

impl Default for Hsgd {
    fn default() -> Self {
        Hsgd { groups: 2, local_period: 1, global_period: 4, grouping: Grouping::Fixed }
    }
}

/// H-SGD's server state within a global period.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HsgdServer {
    /// Each group's model (empty at the start of a global period: every group at the global model).
    pub group_models: Vec<Params>,
    /// Each group's total update weight in the last round it had members (0: none yet).
    pub group_weights: Vec<f64>,
}

/// The broadcast key of group `g`'s model.
fn group_key(g: usize) -> String {
    format!("group_{g}")
}

impl Hsgd {
    /// Check n >= 1, I >= 1 and G a positive multiple of I.
    pub fn validated(self) -> Result<Self> {
        if self.groups == 0 {
            return Err(Error::config("groups", "must be at least 1"));
        }
        if self.local_period == 0 {
            return Err(Error::config("local_period", "must be at least 1 local step"));
        }
        if self.global_period == 0 || !self.global_period.is_multiple_of(self.local_period) {
            return Err(Error::config(
                "global_period",
                format!(
                    "must be a positive multiple of local_period = {}, got {}",
                    self.local_period, self.global_period
                ),
            ));
        }
        Ok(self)
    }

    /// Rounds (local periods) per global period, G / I.
    pub fn rounds_per_period(&self) -> u32 {
        (self.global_period / self.local_period.max(1)).max(1) as u32
    }

    /// The group of every client of a federation of `population` in `round` (from 1).
    pub fn assignment(&self, seed: u64, round: u32, population: usize) -> Vec<usize> {
        let n = self.groups.max(1);
        match self.grouping {
            Grouping::Fixed => (0..population).map(|c| c % n).collect(),
            Grouping::Random => {
                let period = round.saturating_sub(1) / self.rounds_per_period();
                let order = RngStream::derive(seed, "hsgd_grouping", period as u64, 0).permutation(population);
                let mut group = vec![0; population];
                order.iter().enumerate().for_each(|(i, &c)| group[c] = i % n);
                group
            }
        }
    }
}

/// sum_g p_g ||y_g - y_bar||^2 with p_g = weights / sum (f64).
fn divergence(models: &[&Params], p: &[f64], mean: &Params) -> f64 {
    models.iter().zip(p).map(|(m, p)| p * m.sub(mean).l2().powi(2)).sum()
}

impl Algorithm for Hsgd {
    type Client = ();
    type Server = HsgdServer;
    fn reads_updates(&self) -> bool {
        true
    }

    fn broadcast(&self, r: &RoundCtx, s: &HsgdServer) -> Extras {
        let mut e = Extras::default();
        if s.group_models.is_empty() {
            return e;
        }
        let groups = self.assignment(r.seed, r.round, r.population).into_iter().map(|g| g as f32).collect();
        e.insert(GROUPS, Extra::Vector(groups));
        for (g, m) in s.group_models.iter().enumerate() {
            e.insert(&group_key(g), Extra::Params(m.clone()));
        }
        e
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _: &mut ()) -> Result<Update> {
        let start = match cx.broadcast.get(GROUPS) {
            Some(Extra::Vector(groups)) => {
                let g = groups.get(cx.client as usize).ok_or_else(|| {
                    Error::Method(format!("hsgd: the broadcast assigns no group to client {}", cx.client))
                })?;
                let key = group_key(*g as usize);
                cx.broadcast
                    .params(&key)
                    .ok_or_else(|| Error::Method(format!("hsgd: the broadcast lacks `{key}`")))?
                    .clone()
            }
            _ => cx.global.clone(),
        };
        let per_epoch = d.len().div_ceil(cx.train.batch_size.max(1)).max(1);
        let train = LocalTrain { max_steps: self.local_period, ..cx.train.clone() };
        let period = ClientCtx { train: &train, epochs: self.local_period.div_ceil(per_epoch), ..*cx };
        let (mut u, w) = local_update_from(&period, start.clone(), "batches", m, d, &mut NoHook)?;
        u.delta = w.sub(&start);
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut HsgdServer,
        _agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        let n = self.groups.max(1);
        if s.group_models.len() != n || s.group_weights.len() != n {
            s.group_models = vec![w.clone(); n];
            s.group_weights = vec![0.0; n];
        }
        let group = self.assignment(r.seed, r.round, r.population);
        for g in 0..n {
            let mut members = Vec::new();
            for u in view.updates {
                match group.get(u.client as usize) {
                    Some(&h) if h == g => members.push(u.clone()),
                    Some(_) => {}
                    None => return Err(Error::Method(format!("hsgd: client {} outside the federation", u.client))),
                }
            }
            if !members.is_empty() {
                let mean = weighted_mean(&members, true)?;
                s.group_models[g].axpy(1.0, &mean.delta);
                s.group_weights[g] = mean.weight as f64;
            }
        }
        let active: Vec<usize> = (0..n).filter(|&g| s.group_weights[g] > 0.0).collect();
        let total: f64 = active.iter().map(|&g| s.group_weights[g]).sum();
        let models: Vec<&Params> = active.iter().map(|&g| &s.group_models[g]).collect();
        let p: Vec<f64> = active.iter().map(|&g| s.group_weights[g] / total).collect();
        match models.as_slice() {
            [] => {}
            [only] => *w = (*only).clone(),
            _ => {
                let mut acc = vec![0.0f64; w.len()];
                for (m, p) in models.iter().zip(&p) {
                    acc.iter_mut().zip(m.as_slice()).for_each(|(a, v)| *a += p * *v as f64);
                }
                w.as_mut_slice().iter_mut().zip(&acc).for_each(|(w, a)| *w = *a as f32);
            }
        }
        let mut metrics = Metrics::new();
        metrics.insert("group_divergence".into(), divergence(&models, &p, w));
        let sync = r.round.is_multiple_of(self.rounds_per_period());
        metrics.insert("global_sync".into(), sync as u8 as f64);
        if sync {
            *s = HsgdServer::default();
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::{Fed, LinReg, random_data, split};
    use fedkit_core::{ClientId, PlainStep, local_train};

    /// `n` clients of 7 samples each (2 features, random labels), lr 0.05, batches of 3.
    fn fed<A: Algorithm>(algo: A, n: usize, max_steps: usize) -> Fed<A> {
        let data = split(&random_data(7 * n, &[1.0, 0.5], 21), &vec![7; n]);
        let train = LocalTrain { lr: 0.05, batch_size: 3, epochs: 3, max_steps, ..LocalTrain::default() };
        Fed::new(algo, 2, data, train, LinReg::new(2).params(&[0.3, -0.1], 0.2))
    }

    fn hsgd(groups: usize, i: usize, g: usize) -> Hsgd {
        Hsgd { groups, local_period: i, global_period: g, grouping: Grouping::Fixed }.validated().unwrap()
    }

    fn everyone(n: usize) -> Vec<ClientId> {
        (0..n as ClientId).collect()
    }

    #[test]
    fn one_group_is_fedavg_with_i_local_steps_per_round() {
        let mut a = fed(hsgd(1, 4, 12), 5, 0);
        let mut b = fed(FedAvg {}, 5, 4);
        for t in 1..=7 {
            a.round(t, &everyone(5));
            b.round(t, &everyone(5));
            assert_eq!(a.global, b.global, "round {t}: hsgd(groups = 1) must be FedAvg bit for bit");
        }
    }

    #[test]
    fn one_client_per_group_is_local_sgd_with_period_g() {
        let (n, i, g) = (4, 3, 9);
        let mut h = fed(hsgd(n, i, g), n, 0);
        let start = h.global.clone();
        for t in 1..=3 {
            let (_, ups) = h.clients_round(t, &everyone(n));
            let m = h.server_round(t, &ups);
            assert_eq!(m["global_sync"], (t == 3) as u8 as f64);
        }
        // Local SGD with period G: each client runs G / I = 3 stretches of I steps (with each
        // round's batch stream) from its own model, then all average (equal sample counts).
        let mut want = vec![0.0f64; start.len()];
        for c in 0..n {
            let mut w = start.clone();
            for t in 1..=3u32 {
                let train = LocalTrain { max_steps: i, ..h.train.clone() };
                let mut rng = RngStream::derive(h.seed, "batches", t as u64, c as u64);
                local_train(&mut h.model, &mut w, &h.data[c], &train, 3, &mut NoHook, &PlainStep, t, &mut rng).unwrap();
            }
            want.iter_mut().zip(w.as_slice()).for_each(|(a, v)| *a += *v as f64 / n as f64);
        }
        let got = h.global.as_slice();
        assert!(got.iter().zip(&want).all(|(g, w)| (*g as f64 - w).abs() < 1e-6), "{got:?} vs {want:?}");
        // ... which is not local SGD with period I (FedAvg with I steps per round).
        let mut f = fed(FedAvg {}, n, i);
        for t in 1..=3 {
            f.round(t, &everyone(n));
        }
        let gap = f.global.as_slice().iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(gap > 1e-3, "the test cannot tell period G from period I (gap {gap})");
    }

    #[test]
    fn groups_average_within_the_period_and_the_global_model_is_their_weighted_mean() {
        let mut h = fed(hsgd(2, 2, 4), 4, 0);
        let (_, ups) = h.clients_round(1, &everyone(4));
        let m = h.server_round(1, &ups);
        assert_eq!(m["global_sync"], 0.0);
        let s = &h.server;
        assert_eq!(s.group_models.len(), 2);
        assert_ne!(s.group_models[0], s.group_models[1], "groups {{0, 2}} and {{1, 3}} have their own models");
        assert!(m["group_divergence"] > 0.0);
        // Equal group weights (7 + 7 samples each): the global model is the plain mean.
        let (a, b) = (s.group_models[0].as_slice(), s.group_models[1].as_slice());
        let mean: Vec<f32> = a.iter().zip(b).map(|(x, y)| ((*x as f64 + *y as f64) / 2.0) as f32).collect();
        assert_eq!(h.global.as_slice(), mean.as_slice());
        // Mid-period, clients start from their group's model (broadcast).
        let (b, ups) = h.clients_round(2, &everyone(4));
        assert_eq!(b.get(GROUPS), Some(&Extra::Vector(vec![0.0, 1.0, 0.0, 1.0])));
        assert_eq!(b.params("group_1"), Some(&h.server.group_models[1]));
        let m = h.server_round(2, &ups);
        assert_eq!(m["global_sync"], 1.0);
        assert!(h.server.group_models.is_empty(), "after a global aggregation every group restarts from the global");
        let (b, _) = h.clients_round(3, &everyone(4));
        assert!(b.0.is_empty(), "at the start of a period clients get the global model only");
    }

    #[test]
    fn random_grouping_is_a_balanced_partition_fixed_within_a_global_period() {
        let h = Hsgd { groups: 3, local_period: 2, global_period: 6, grouping: Grouping::Random };
        let a = h.assignment(13, 1, 10);
        let mut sizes = [0; 3];
        a.iter().for_each(|&g| sizes[g] += 1);
        assert_eq!(sizes, [4, 3, 3]);
        assert_eq!(a, h.assignment(13, 3, 10), "rounds 1..=3 are one global period");
        let later: Vec<Vec<usize>> = (1..6).map(|p| h.assignment(13, 1 + 3 * p, 10)).collect();
        assert!(later.iter().any(|b| *b != a), "a fresh partition every global period");
        let fixed = Hsgd { grouping: Grouping::Fixed, ..h };
        assert_eq!(fixed.assignment(13, 4, 5), vec![0, 1, 2, 0, 1]);
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(Hsgd { groups: 0, ..Hsgd::default() }.validated().is_err());
        assert!(Hsgd { local_period: 0, ..Hsgd::default() }.validated().is_err());
        assert!(Hsgd { local_period: 3, global_period: 10, ..Hsgd::default() }.validated().is_err());
        assert!(Hsgd { local_period: 5, global_period: 25, ..Hsgd::default() }.validated().is_ok());
    }
}
