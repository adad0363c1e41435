//! IFCA: Ghosh, Chung, Yin, Ramchandran, "An Efficient Framework for Clustered Federated
//! Learning", NeurIPS 2020 (Algorithm 2, model averaging).
//!
//! The server keeps k cluster models theta_1..theta_k and sends all of them to the round's
//! clients. Client i picks the one with the lowest loss on its own training data,
//! j = argmin_j F_i(theta_j) (ties to the lowest j), trains it with the usual local epochs and
//! sends the change with its choice (update metric `cluster`). The server averages each
//! cluster's updates into its model: theta_j += mean of the deltas of the clients that chose j
//! (weighted as the aggregator weighted the round: by sample count, or uniformly). A client's
//! personalised model (per-client evaluation) is the lowest-loss cluster model on its training
//! data, the same rule. With a federation of known clusters (`[data.partition] use =
//! "permuted_labels"`) every round logs `cluster_acc`, the fraction of the cohort whose choice
//! matches its true group under the best matching of clusters to groups.
//!
//! Cluster 1 is the run's global model (what `test_acc` evaluates). The others start from the
//! model's own initialisation with the streams (seed, "ifca_init", j), as the paper initialises
//! all k at random: in round 1 the clients draw them themselves (the same deterministic draws
//! the server makes at the end of the round), so round 1 already clusters. The updates the
//! aggregator accepted are averaged per cluster with the aggregator's weighting (by sample count,
//! or uniform); the aggregator filters, but its own combination (a median, server-side noise) is
//! not used, so k = 1 is FedAvg under `mean` bit for bit (tested). Stages that clear the
//! updates' metrics (the DP stages) take the cluster choice with them: IFCA then stops with an
//! error. The broadcast carries the k - 1 other models, so `bytes_down` is k times FedAvg's
//! (from round 2).
//!
//! Parameters: `clusters` (k, default 2).
//!
//! ```toml
//! [algorithm]
//! use = "ifca"
//! clusters = 4
//! ```

use fedkit_core::{
    AdaptCtx, Aggregate, Algorithm, BATCH_STREAM, ClientCtx, ClientData, Error, Extra, Extras, Metrics, Model, NoHook,
    Params, Result, RngStream, RoundCtx, ServerView, Update, Weighting, evaluate_in_domain, local_update_from,
};
use serde::{Deserialize, Serialize};

use crate::aggregators::mean::weighted_mean;

/// IFCA's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ifca {
    /// The number of clusters k.
    pub clusters: usize,
}

impl Default for Ifca {
    fn default() -> Self {
        Ifca { clusters: 2 }
    }
}

impl Ifca {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if self.clusters == 0 {
            return Err(Error::config("clusters", "must be at least 1"));
        }
        Ok(self)
    }
}

/// The cluster models 2..k (cluster 1 is the global model); empty until the end of round 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterModels(pub Vec<Params>);

fn key(j: usize) -> String {
    format!("ifca_cluster_{}", j + 1)
}

/// The initial models of clusters 2..k, from the model's initialisation.
fn initial_models(algo: &Ifca, m: &dyn Model, seed: u64) -> Vec<Params> {
    (1..algo.clusters).map(|j| m.init(&mut RngStream::derive(seed, "ifca_init", j as u64, 0))).collect()
}

/// The index of the lowest mean loss of `candidates` on all of `d` (ties to the lowest).
fn choose(m: &mut dyn Model, candidates: &[&Params], d: &ClientData, rng: &mut RngStream) -> Result<usize> {
    let mut best = (0, f64::INFINITY);
    for (j, p) in candidates.iter().enumerate() {
        let loss = evaluate_in_domain(m, p, d, 0..d.len(), 256, &mut rng.clone())?.loss();
        if loss < best.1 {
            best = (j, loss);
        }
    }
    Ok(best.0)
}

impl Algorithm for Ifca {
    type Client = ();
    type Server = ClusterModels;

    fn reads_updates(&self) -> bool {
        true
    }

    fn combines_updates_itself(&self) -> bool {
        true
    }

    fn broadcast(&self, _r: &RoundCtx, s: &ClusterModels) -> Extras {
        let mut e = Extras::default();
        for (j, p) in s.0.iter().enumerate() {
            e.0.insert(key(j + 1), Extra::Params(p.clone()));
        }
        e
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _st: &mut ()) -> Result<Update> {
        // Before the server holds the other models (round 1), their initial draws.
        let initial: Vec<Params> =
            if cx.broadcast.0.contains_key(&key(1)) { Vec::new() } else { initial_models(self, m, cx.seed) };
        let mut candidates = vec![cx.global];
        for j in 1..self.clusters {
            match cx.broadcast.0.get(&key(j)) {
                Some(Extra::Params(p)) => candidates.push(p),
                Some(_) => return Err(Error::Method(format!("ifca: broadcast {} is not a model", key(j)))),
                None => candidates.push(&initial[j - 1]),
            }
        }
        let j = choose(m, &candidates, d, &mut cx.rng("ifca_select"))?;
        let (mut u, w) = local_update_from(cx, candidates[j].clone(), BATCH_STREAM, m, d, &mut NoHook)?;
        if j > 0 {
            u.delta = w.sub(candidates[j]);
        }
        u.metrics.insert("cluster".into(), j as f64);
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut ClusterModels,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        if s.0.is_empty() {
            s.0 = initial_models(self, &*view.model, r.seed);
        }
        let mut chosen = Vec::with_capacity(view.updates.len());
        for u in view.updates {
            let j = u.metrics.get("cluster").copied().ok_or_else(|| {
                Error::Method(format!(
                    "ifca: client {}'s update carries no `cluster` metric (a pipeline stage cleared its metrics, \
                     as the DP stages do); IFCA cannot run with such a stage",
                    u.client
                ))
            })? as usize;
            if j >= self.clusters {
                return Err(Error::Method(format!("ifca: client {} names cluster {j} of {}", u.client, self.clusters)));
            }
            chosen.push(j);
        }
        let weighted = agg.weighting == Weighting::UpdateWeights;
        let mut used = vec![0usize; self.clusters];
        for j in 0..self.clusters {
            let mine: Vec<Update> =
                view.updates.iter().zip(&chosen).filter(|(_, c)| **c == j).map(|(u, _)| u.clone()).collect();
            if mine.is_empty() {
                continue;
            }
            used[j] = mine.len();
            let delta = weighted_mean(&mine, weighted)?.delta;
            let target = if j == 0 { &mut *w } else { &mut s.0[j - 1] };
            target.axpy(1.0, &delta);
        }
        let mut m = Metrics::new();
        m.insert("clusters_used".into(), used.iter().filter(|&&n| n > 0).count() as f64);
        Ok(m)
    }

    fn adapt(
        &self,
        a: &AdaptCtx,
        s: &ClusterModels,
        _st: Option<&()>,
        m: &mut dyn Model,
        d: &ClientData,
    ) -> Result<Option<Params>> {
        if s.0.is_empty() || d.is_empty() {
            return Ok(None);
        }
        let candidates: Vec<&Params> = std::iter::once(a.global).chain(&s.0).collect();
        let j = choose(m, &candidates, d, &mut a.rng("ifca_select"))?;
        Ok((j > 0).then(|| candidates[j].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::{Fed, LinReg, dataset, small_fed, split};
    use fedkit_core::LocalTrain;

    fn fed<A: Algorithm>(algo: A) -> Fed<A> {
        small_fed(algo, &[8, 8, 8], 4)
    }

    // One cluster: every client picks the global model and the server applies the aggregate.
    #[test]
    fn one_cluster_is_fedavg_bit_for_bit() {
        let (mut a, mut b) = (fed(Ifca { clusters: 1 }), fed(FedAvg {}));
        for round in 1..=3 {
            let (_, ua) = a.clients_round(round, &[0, 2]);
            let (_, ub) = b.clients_round(round, &[0, 2]);
            for (x, y) in ua.iter().zip(&ub) {
                assert_eq!(x.delta, y.delta);
                assert_eq!(x.metrics["cluster"], 0.0);
            }
            a.server_round(round, &ua);
            b.server_round(round, &ub);
            assert_eq!(a.global, b.global, "round {round}");
        }
    }

    // Two tasks (y = 0 and y = 3 everywhere) and two cluster models, each right for one task:
    // each client picks its task's model, and the server moves only the chosen models.
    #[test]
    fn clients_pick_the_lowest_loss_model_and_clusters_average_apart() {
        let x: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32 * 0.1, 1.0]).collect();
        let y: Vec<u32> = (0..8).map(|i| if i < 4 { 0 } else { 3 }).collect();
        let data = split(&dataset(&x, &y), &[4, 4]);
        let train = LocalTrain { lr: 0.1, epochs: 1, batch_size: 4, ..LocalTrain::default() };
        let model = LinReg::new(2);
        let mut f = Fed::new(Ifca { clusters: 2 }, 2, data, train, model.params(&[0.0, 0.0], 0.0));
        f.server = ClusterModels(vec![model.params(&[0.0, 0.0], 3.0)]);
        let (_, ups) = f.clients_round(2, &[0, 1]);
        assert_eq!((ups[0].metrics["cluster"], ups[1].metrics["cluster"]), (0.0, 1.0));
        let (g0, c0) = (f.global.clone(), f.server.0[0].clone());
        f.server_round(2, &ups);
        let moved = |a: &Params, b: &Params| a.sub(b).l2();
        // Each cluster moved by its own client's update only.
        let mut want0 = g0.clone();
        want0.axpy(1.0, &ups[0].delta);
        let mut want1 = c0.clone();
        want1.axpy(1.0, &ups[1].delta);
        assert!(moved(&f.global, &want0) < 1e-7 && moved(&f.server.0[0], &want1) < 1e-7);
        // Evaluation picks the same way.
        let a = AdaptCtx { round: 2, client: 1, seed: 7, global: &f.global, train: &f.train };
        let own = f.algo.adapt(&a, &f.server, None, &mut f.model, &f.data[1]).unwrap();
        assert_eq!(own, Some(f.server.0[0].clone()));
    }

    // Round 1 clusters already: clients draw the initial models the server draws after it, and
    // each cluster's model is its initial draw plus its clients' mean update.
    #[test]
    fn round_one_starts_every_cluster_from_its_initial_draw() {
        let mut f = fed(Ifca { clusters: 3 });
        let (b, ups) = f.clients_round(1, &[0, 1, 2]);
        assert!(b.0.is_empty());
        let init = initial_models(&f.algo, &f.model, f.seed);
        f.server_round(1, &ups);
        assert_eq!(f.server.0.len(), 2);
        for j in 1..3 {
            let mine: Vec<&Update> = ups.iter().filter(|u| u.metrics["cluster"] == j as f64).collect();
            if mine.is_empty() {
                assert_eq!(f.server.0[j - 1], init[j - 1], "an unchosen cluster keeps its draw");
            } else {
                assert_ne!(f.server.0[j - 1], init[j - 1]);
            }
        }
        assert_eq!(
            f.algo
                .broadcast(
                    &RoundCtx {
                        round: 2,
                        cohort: &[],
                        global: &f.global,
                        seed: 7,
                        population: 3,
                        malicious: &[],
                        draws: &[]
                    },
                    &f.server
                )
                .0
                .len(),
            2
        );
    }

    // A stage that cleared the metrics took the cluster choice: an error, never a silent merge.
    #[test]
    fn a_missing_cluster_choice_is_an_error() {
        let mut f = fed(Ifca { clusters: 2 });
        let (_, mut ups) = f.clients_round(1, &[0, 1]);
        ups.iter_mut().for_each(|u| u.metrics.clear());
        let agg = weighted_mean(&ups, true).unwrap();
        let r = RoundCtx {
            round: 1,
            cohort: &[0, 1],
            global: &f.global.clone(),
            seed: 7,
            population: 3,
            malicious: &[false; 3],
            draws: &[],
        };
        let mut view = ServerView {
            updates: &ups,
            model: &mut f.model,
            clients: &f.data,
            unlabeled: None,
            architectures: &mut [],
        };
        let e = f.algo.server_step(&r, &mut f.global, &mut f.server, &agg, &mut view).unwrap_err().to_string();
        assert!(e.contains("no `cluster` metric") && e.contains("DP stages"), "{e}");
    }
}
