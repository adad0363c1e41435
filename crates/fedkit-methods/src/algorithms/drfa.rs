//! DRFA (distributionally robust federated averaging): Deng, Kamani, Mahdavi, "Distributionally
//! Robust Federated Averaging", NeurIPS 2020, Algorithm 1.
//!
//! Solves the agnostic objective min_w max_{lambda in Delta_N} sum_i lambda_i f_i(w) with local
//! SGD for w and a projected ascent step on lambda once per round (period of tau local steps),
//! sampling the clients that train *by lambda*, so the mixture reaches the model through who
//! trains rather than through aggregation weights. Round s:
//! 1. The server samples the cohort D by lambda^(s): `[sampling] per_round` (m) draws with
//!    replacement, stream `drfa_sample`. A client drawn k times trains once (its k local runs
//!    from the same model would differ only by their mini-batch draws) and counts k times in
//!    the averages below (`RoundCtx::draws`), the paper's multiset average.
//! 2. It draws a snapshot position u ~ U[0, 1) (stream `drfa_snapshot`, broadcast as extra
//!    `drfa_snapshot`). Each client runs its tau local steps from w^(s) (the `[client]` schedule)
//!    and returns its delta and, as extra `drfa_snapshot` (a model delta: the uplink doubles), its
//!    iterate after t' = 1 + floor(u tau) steps, t' in {1, ..., tau}: the paper's random t'.
//! 3. The server averages the models uniformly over the multiset of draws,
//!    w^(s+1) = w^(s) + (1/m) sum_{i in D} k_i Delta_i (sample counts are not used), and the
//!    snapshots likewise into w^(t'). Only the updates the aggregator accepted count (a robust
//!    aggregator's rejections hold; m is then the accepted draws).
//! 4. It samples a uniform set U of clients (size `loss_clients`, stream `drfa_loss_clients`),
//!    evaluates f_i(w^(t')) for i in U and sets v = (N / |U|) sum_{i in U} f_i(w^(t')) e_i,
//!    lambda^(s+1) = P_Delta(lambda^(s) + tau gamma v). tau is the cohort's mean number of local
//!    steps.
//!
//! Deviations, all forced by the engine's one-exchange rounds:
//! - The paper sends w^(t') to U and U's clients send f_i(w^(t')) back (a second exchange); here
//!   the server evaluates the U clients' losses on their data itself (`ServerView.clients`, a
//!   simulation-only shortcut: the extra downlink of one model to |U| clients and |U| uplinked
//!   scalars are not counted in `bytes_down` / `bytes_up`). On the whole local training set by
//!   default, or on a random minibatch of `loss_batch` samples (the paper's stochastic f_i).
//! - The cohort is deduplicated, so a client drawn several times counts once in the average (the
//!   paper's multiset average counts it each time); with m << N and lambda not concentrated,
//!   repeats are rare.
//! - lambda's update is projected gradient ascent only (solver GDA): DRFA's lambda gradient is
//!   taken at a random past iterate and its w-step depends on lambda through sampling, so the
//!   alternating, smoothed and extragradient solvers of `afl` have no natural counterpart here.
//!
//! Unlike the authors' FedTorch code (which samples clients uniformly, weights them by lambda,
//! decays gamma by 0.9 per round and floors lambda at 1e-3), this follows the paper's Algorithm 1.
//! lambda starts uniform. Server state: lambda (length N). Metrics: `lambda_max`,
//! `lambda_entropy`, `worst_client_loss` (the largest f_i(w^(t')) over U). Stragglers are dropped.
//!
//! Parameters:
//! - `lambda_lr` (gamma > 0, default 0.001): lambda's step is tau * gamma.
//! - `loss_clients` (|U|, default 0 = m, the accepted draws of the round, as the paper).
//! - `loss_batch` (samples per loss evaluation; default 0 = the client's whole training set).
//!
//! ```toml
//! [algorithm]
//! use = "drfa"
//! lambda_lr = 0.001
//! loss_clients = 0
//! loss_batch = 0
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, ClientId, Error, Extra, Extras, Metrics, Model, Params, Result,
    RngStream, RoundCtx, SampleCtx, ServerView, Update, evaluate_in_domain, local_update,
};
use serde::{Deserialize, Serialize};

use super::mixture::{by_client, check_step, mixture_metrics, mixture_weights};
use crate::minimax::{Domain, ascend};

/// The extra carrying the snapshot position (broadcast) and the snapshot delta (uplink).
const SNAPSHOT: &str = "drfa_snapshot";
/// Batch size of the server's loss evaluations (it only bounds memory).
const EVAL_BATCH: usize = 256;

/// DRFA.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drfa {
    /// gamma: lambda's step is tau * gamma.
    pub lambda_lr: f64,
    /// Size of the uniform loss-evaluation set U (0: the cohort's size).
    pub loss_clients: usize,
    /// Samples per loss evaluation (0: the client's whole training set).
    pub loss_batch: usize,
}

impl Default for Drfa {
    fn default() -> Self {
        Drfa { lambda_lr: 0.001, loss_clients: 0, loss_batch: 0 }
    }
}

impl Drfa {
    /// Check gamma.
    pub fn validated(self) -> Result<Self> {
        check_step("lambda_lr", self.lambda_lr)?;
        Ok(self)
    }
}

/// DRFA's server state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DrfaServer {
    /// Mixture weights lambda over all clients (empty until the first round: uniform).
    pub lambda: Vec<f64>,
}

/// `k` draws with replacement from the distribution `p` (nonnegative, summing to about 1).
pub fn draw_by_weights(rng: &mut RngStream, p: &[f64], k: usize) -> Vec<usize> {
    let total: f64 = p.iter().sum();
    let last_positive = p.iter().rposition(|&x| x > 0.0).unwrap_or(0);
    (0..k)
        .map(|_| {
            let target = rng.uniform() * total;
            let mut acc = 0.0;
            p.iter()
                .position(|&x| {
                    acc += x;
                    x > 0.0 && target < acc
                })
                .unwrap_or(last_positive)
        })
        .collect()
}

/// Local steps a client will take: `epochs` passes of ceil(n / B) batches, capped by
/// `max_steps`.
fn planned_steps(cx: &ClientCtx, samples: usize) -> usize {
    let steps = samples.div_ceil(cx.train.batch_size.max(1)) * cx.epochs;
    if cx.train.max_steps > 0 { steps.min(cx.train.max_steps) } else { steps }
}

/// The average of `deltas` counted `counts` times each (in the given order, f64), added to
/// `base`.
fn plus_mean(base: &Params, deltas: &[&Params], counts: &[u32]) -> Result<Params> {
    let mut acc = vec![0.0f64; base.len()];
    for (d, &k) in deltas.iter().zip(counts) {
        if d.len() != acc.len() {
            return Err(Error::Shape(format!("drfa: a delta of {} values for a model of {}", d.len(), acc.len())));
        }
        acc.iter_mut().zip(d.as_slice()).for_each(|(a, v)| *a += k as f64 * *v as f64);
    }
    let mut out = base.clone();
    let m = counts.iter().map(|&k| k as f64).sum::<f64>().max(1.0);
    out.as_mut_slice().iter_mut().zip(&acc).for_each(|(w, a)| *w += (a / m) as f32);
    Ok(out)
}

impl Algorithm for Drfa {
    type Client = ();
    type Server = DrfaServer;
    fn reads_updates(&self) -> bool {
        true
    }

    fn cohort(&self, sc: &SampleCtx, s: &DrfaServer) -> Option<Vec<ClientId>> {
        let uniform;
        let p = if s.lambda.len() == sc.population {
            &s.lambda
        } else {
            uniform = vec![1.0; sc.population];
            &uniform
        };
        let mut c: Vec<ClientId> =
            draw_by_weights(&mut sc.rng("drfa_sample"), p, sc.per_round).into_iter().map(|i| i as ClientId).collect();
        c.sort_unstable();
        Some(c)
    }

    fn broadcast(&self, r: &RoundCtx, _s: &DrfaServer) -> Extras {
        let mut e = Extras::default();
        e.insert(SNAPSHOT, Extra::Scalar(r.rng("drfa_snapshot").uniform()));
        e
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _: &mut ()) -> Result<Update> {
        let u = cx
            .broadcast
            .scalar(SNAPSHOT)
            .ok_or_else(|| Error::Method("drfa: the broadcast carries no snapshot position".into()))?;
        let tau = planned_steps(cx, d.len());
        let at = (1 + (u * tau as f64) as usize).min(tau);
        let mut snapshot: Option<Params> = None;
        let mut keep = |step: usize, w: &Params, _: &mut Params| {
            if step == at {
                snapshot = Some(w.clone());
            }
        };
        let (mut up, w) = local_update(cx, m, d, &mut keep)?;
        let snap = snapshot.unwrap_or(w).sub(cx.global);
        up.extras.insert(SNAPSHOT, Extra::Params(snap));
        Ok(up)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut DrfaServer,
        _agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        let n = view.clients.len();
        let updates = by_client(view.updates, n)?;
        let deltas: Vec<&Params> = updates.iter().map(|u| &u.delta).collect();
        let snapshots = updates
            .iter()
            .map(|u| {
                u.extras
                    .params(SNAPSHOT)
                    .ok_or_else(|| Error::Method(format!("drfa: client {} sent no snapshot", u.client)))
            })
            .collect::<Result<Vec<&Params>>>()?;
        let counts: Vec<u32> = updates.iter().map(|u| r.draws_of(u.client).max(1)).collect();
        let next = plus_mean(w, &deltas, &counts)?;
        let snapshot = plus_mean(w, &snapshots, &counts)?;
        let draws: u32 = counts.iter().sum();
        let tau = updates
            .iter()
            .zip(&counts)
            .map(|(u, &k)| k as f64 * u.metrics.get("steps").copied().unwrap_or(1.0))
            .sum::<f64>()
            / draws.max(1) as f64;

        let size = if self.loss_clients == 0 { draws as usize } else { self.loss_clients }.clamp(1, n);
        let mut loss_set = r.rng("drfa_loss_clients").choose(n, size);
        loss_set.sort_unstable();
        let mut v = vec![0.0; n];
        let mut losses = Vec::with_capacity(size);
        for &i in &loss_set {
            let data = &view.clients[i];
            let data = if self.loss_batch > 0 && self.loss_batch < data.len() {
                let mut pick = RngStream::derive(r.seed, "drfa_loss_batch", r.round as u64, i as u64)
                    .choose(data.len(), self.loss_batch);
                pick.sort_unstable();
                data.subset(&pick)
            } else {
                data.clone()
            };
            // In the client's own feature domain (its noise/affine shift), as it would compute it.
            let mut rng = RngStream::derive(r.seed, "drfa_loss", r.round as u64, i as u64);
            let loss = evaluate_in_domain(view.model, &snapshot, &data, 0..data.len(), EVAL_BATCH, &mut rng)?.loss();
            if !loss.is_finite() {
                return Err(Error::Method(format!("drfa: client {i}'s loss at the snapshot is {loss}")));
            }
            v[i] = n as f64 / size as f64 * loss;
            losses.push(loss);
        }
        let lambda = mixture_weights(&mut s.lambda, n)?;
        ascend(lambda, tau * self.lambda_lr, &v, Domain::Simplex)?;
        *w = next;
        Ok(mixture_metrics(lambda, losses.into_iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::mixture::tests_support::{labelled_clients, params, update};
    use crate::algorithms::testing::LinReg;
    use crate::minimax::in_simplex;
    use fedkit_core::{LocalTrain, NoHook, PlainStep, local_train};

    /// One server round of `drfa` on `updates` (each given a snapshot equal to its delta) over
    /// the clients `data`; returns the metrics.
    fn round(
        drfa: &Drfa,
        s: &mut DrfaServer,
        w: &mut Params,
        t: u32,
        updates: Vec<Update>,
        data: &[ClientData],
    ) -> Metrics {
        round_drawn(drfa, s, w, t, updates, data, &[])
    }

    /// [`round`] with clients drawn several times: `(client, draws)`.
    fn round_drawn(
        drfa: &Drfa,
        s: &mut DrfaServer,
        w: &mut Params,
        t: u32,
        mut updates: Vec<Update>,
        data: &[ClientData],
        multiplicity: &[(ClientId, u32)],
    ) -> Metrics {
        for u in &mut updates {
            u.extras.insert(SNAPSHOT, Extra::Params(u.delta.clone()));
        }
        let mut cohort: Vec<ClientId> = updates.iter().map(|u| u.client).collect();
        cohort.sort_unstable();
        let draws: Vec<u32> =
            cohort.iter().map(|c| multiplicity.iter().find(|m| m.0 == *c).map_or(1, |m| m.1)).collect();
        let global = w.clone();
        let malicious = vec![false; data.len()];
        let r = RoundCtx {
            round: t,
            cohort: &cohort,
            global: &global,
            seed: 9,
            population: data.len(),
            malicious: &malicious,
            draws: &draws,
        };
        let agg = crate::aggregators::mean::weighted_mean(&updates, true).unwrap();
        let mut view = ServerView {
            updates: &updates,
            model: &mut LinReg::new(2),
            clients: data,
            unlabeled: None,
            architectures: &mut [],
        };
        drfa.server_step(&r, w, s, &agg, &mut view).unwrap()
    }

    fn sc(round: u32, population: usize, per_round: usize) -> SampleCtx {
        SampleCtx { round, seed: 4, population, per_round }
    }

    #[test]
    fn the_cohort_is_sampled_by_lambda() {
        let drfa = Drfa::default();
        let s = DrfaServer { lambda: vec![0.0, 0.0, 1.0, 0.0] };
        for t in 1..50 {
            assert_eq!(drfa.cohort(&sc(t, 4, 3), &s), Some(vec![2, 2, 2]), "lambda = e_2 always draws client 2");
        }
        let s = DrfaServer { lambda: vec![0.5, 0.0, 0.2, 0.0, 0.3] };
        let mut counts = [0usize; 5];
        for t in 1..4000 {
            for c in drfa.cohort(&sc(t, 5, 1), &s).unwrap() {
                counts[c as usize] += 1;
            }
        }
        assert_eq!((counts[1], counts[3]), (0, 0), "clients with lambda = 0 are never sampled: {counts:?}");
        let freq: Vec<f64> = counts.iter().map(|&c| c as f64 / 3999.0).collect();
        assert!((freq[0] - 0.5).abs() < 0.03 && (freq[2] - 0.2).abs() < 0.03, "{freq:?}");
        // Before the first round (no lambda yet): uniform over the population.
        let c = drfa.cohort(&sc(1, 100, 10), &DrfaServer::default()).unwrap();
        assert!(c.len() == 10 && c.windows(2).all(|p| p[0] <= p[1]) && c[c.len() - 1] < 100);
        // Draws are with replacement: a concentrated lambda repeats clients, and keeps the repeats.
        let s = DrfaServer { lambda: vec![0.9, 0.1] };
        let c = drfa.cohort(&sc(3, 2, 10), &s).unwrap();
        assert_eq!(c.len(), 10, "all m draws are kept: {c:?}");
        assert!(c.iter().filter(|&&x| x == 0).count() >= 5, "{c:?}");
    }

    #[test]
    fn a_client_drawn_twice_counts_twice() {
        // Paper, Algorithm 1: the average is over the multiset of draws. Client 0 drawn twice,
        // client 3 once: w + (2 d_0 + d_3) / 3.
        let data = labelled_clients(&[1; 4], 3);
        let (mut s, mut w) = (DrfaServer::default(), params([1.0, 1.0, 1.0]));
        let ups = vec![update(0, [3.0, 0.0, 0.0], 1.0, None), update(3, [0.0, 3.0, 0.0], 1.0, None)];
        round_drawn(&Drfa::default(), &mut s, &mut w, 1, ups, &data, &[(0, 2)]);
        assert_eq!(w.as_slice(), &[3.0, 2.0, 1.0]);
    }

    #[test]
    fn the_server_averages_the_cohort_models_uniformly() {
        let data = labelled_clients(&[1; 4], 3);
        let (mut s, mut w) = (DrfaServer::default(), params([1.0, 1.0, 1.0]));
        let ups = vec![update(0, [1.0, 0.0, 0.0], 1.0, None), update(3, [0.0, 3.0, 0.0], 50.0, None)];
        round(&Drfa::default(), &mut s, &mut w, 1, ups, &data);
        assert_eq!(w.as_slice(), &[1.5, 2.5, 1.0]);
    }

    #[test]
    fn lambda_stays_in_the_simplex_with_random_losses() {
        let mut rng = RngStream::new(8);
        let labels: Vec<u32> = (0..6).map(|_| rng.below(4) as u32).collect();
        let data = labelled_clients(&labels, 4);
        let drfa = Drfa { lambda_lr: 0.05, loss_clients: 2, loss_batch: 2 };
        let (mut s, mut w) = (DrfaServer::default(), params([0.0; 3]));
        for t in 1..=40 {
            let cohort = drfa.cohort(&sc(t, 6, 3), &s).unwrap();
            let ups =
                cohort.iter().map(|&c| update(c, [0; 3].map(|_| rng.gaussian(0.0, 0.3) as f32), 1.0, None)).collect();
            round(&drfa, &mut s, &mut w, t, ups, &data);
            assert!(in_simplex(&s.lambda, 1e-9), "round {t}: {:?}", s.lambda);
        }
    }

    #[test]
    fn equal_losses_keep_lambda_uniform() {
        // Every client has the same loss at w = 0 (label 1: loss 1/2) and U is everyone.
        let data = labelled_clients(&[1; 5], 3);
        let drfa = Drfa { lambda_lr: 0.1, loss_clients: 5, loss_batch: 0 };
        let (mut s, mut w) = (DrfaServer::default(), params([0.0; 3]));
        for t in 1..=20 {
            let m = round(&drfa, &mut s, &mut w, t, vec![update(t % 5, [0.0; 3], 1.0, None)], &data);
            assert!(s.lambda.iter().all(|l| (l - 0.2).abs() < 1e-12), "round {t}: {:?}", s.lambda);
            assert!((m["worst_client_loss"] - 0.5).abs() < 1e-12);
        }
    }

    #[test]
    fn the_client_with_the_highest_loss_gains_the_mixture_weight() {
        // Client 2 (label 3: loss 4.5 at w = 0) is worst; the others have loss 0.5.
        let data = labelled_clients(&[1, 1, 3, 1], 3);
        // With U = everyone, lambda_2 grows every round.
        let drfa = Drfa { lambda_lr: 0.01, loss_clients: 4, loss_batch: 0 };
        let (mut s, mut w) = (DrfaServer::default(), params([0.0; 3]));
        let mut prev = 0.25;
        for t in 1..=100 {
            round(&drfa, &mut s, &mut w, t, vec![update(0, [0.0; 3], 1.0, None)], &data);
            assert!(s.lambda[2] >= prev - 1e-12, "round {t}: {} < {prev}", s.lambda[2]);
            prev = s.lambda[2];
        }
        assert!(s.lambda[2] > 0.999, "{:?}", s.lambda);
        // With a random pair U per round, it still ends up with nearly all the weight.
        let drfa = Drfa { loss_clients: 2, ..drfa };
        let mut s = DrfaServer::default();
        for t in 1..=300 {
            round(&drfa, &mut s, &mut w, t, vec![update(0, [0.0; 3], 1.0, None)], &data);
        }
        assert!(s.lambda[2] > 0.9, "{:?}", s.lambda);
    }

    #[test]
    fn clients_send_their_iterate_after_t_prime_steps() {
        let data = labelled_clients(&[2], 20);
        let global = params([0.1, -0.2, 0.3]);
        let train = LocalTrain { lr: 0.05, epochs: 2, batch_size: 4, ..LocalTrain::default() };
        // tau = 2 epochs * 5 batches = 10; u = 0.35 gives t' = 1 + floor(3.5) = 4.
        for (u, at) in [(0.35, 4), (0.0, 1), (0.99, 10)] {
            let mut extras = Extras::default();
            extras.insert(SNAPSHOT, Extra::Scalar(u));
            let cx = ClientCtx {
                round: 3,
                client: 0,
                seed: 11,
                global: &global,
                broadcast: &extras,
                train: &train,
                epochs: 2,
                malicious: false,
                step: &PlainStep,
                loss: &fedkit_core::CrossEntropyLoss,
                train_hook: None,
            };
            let up = Drfa::default().client_update(&cx, &mut LinReg::new(2), &data[0], &mut ()).unwrap();
            let mut want = global.clone();
            let short = LocalTrain { max_steps: at, ..train.clone() };
            local_train(
                &mut LinReg::new(2),
                &mut want,
                &data[0],
                &short,
                2,
                &mut NoHook,
                &PlainStep,
                3,
                &mut cx.rng("batches"),
            )
            .unwrap();
            let got = up.extras.params(SNAPSHOT).unwrap();
            assert_eq!(got, &want.sub(&global), "u = {u}: the snapshot is the iterate after {at} steps");
            assert_eq!(up.metrics["steps"], 10.0);
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(Drfa { lambda_lr: -1.0, ..Drfa::default() }.validated().is_err());
        assert!(Drfa::default().validated().is_ok());
    }
}
