//! AFL (agnostic federated learning): Mohri, Sivek, Suresh, "Agnostic Federated Learning", ICML
//! 2019.
//!
//! Trains for the worst mixture of the clients' distributions instead of the average:
//! min_w max_{lambda in Delta_N} L(w, lambda) = sum_k lambda_k L_k(w), with L_k client k's mean
//! training loss and Delta_N the probability simplex over the N clients; the paper's
//! Stochastic-AFL alternates projected gradient steps on w and lambda.
//!
//! Federated version. Each client of the round's cohort C evaluates L_k(w_t) at the received model
//! on its whole training set before training (reported as metric `loss_at_global`; the engine
//! logs the cohort mean as `client_loss_at_global`), then trains locally as FedAvg and sends its
//! delta Delta_k. The server runs one call of a minimax solver (`crate::minimax`) with
//! - grad_w L(w_t, lambda) = -sum_{k in C} lambda_k Delta_k / sum_{k in C} lambda_k (the
//!   lambda-weighted pseudo-gradient, renormalised over the cohort; sample counts are not used:
//!   lambda is the mixture; when the cohort holds no lambda mass w does not move), for any lambda,
//! - grad_lambda L(w_t) = (N / |C|) L_k(w_t) for k in C and 0 elsewhere (exact with full
//!   participation, the paper's setting; unbiased for a uniformly sampled cohort),
//!
//! with w-step eta_w (`server_lr`) and lambda-step gamma_lambda (`lambda_lr`). How each solver
//! maps onto rounds (t counts the server's calls):
//! - `gda` (default): w_{t+1} = w_t + eta_w sum_C lambda_t Delta(w_t) (renormalised),
//!   lambda_{t+1} = P(lambda_t + gamma grad_lambda L(w_t)): Stochastic-AFL, one round each.
//! - `alt_gda`: lambda ascends at the *new* model: from the second round on, the server first sets
//!   lambda_t = P(lambda_{t-1} + gamma grad_lambda L(w_t)) with the losses the clients report at
//!   the model w_t they received (the previous round's new model), then steps
//!   w_{t+1} = w_t + eta_w sum_C lambda_t Delta(w_t). The first round only steps w.
//! - `smoothed_gda` (Zhang et al., NeurIPS 2020): as `alt_gda`, with the w-step on
//!   K = L + (p/2) ||w - z||^2: w_{t+1} = w_t + c (sum_C lambda_t Delta(w_t) - p (w_t - z_t)) (c =
//!   `server_lr`), then z_{t+1} = z_t + beta (w_{t+1} - z_t), z_1 = w_1. Server state: z (one
//!   model).
//! - `extragradient`: two rounds per iteration. Odd calls extrapolate: (w_bar, lambda_bar) =
//!   (w + eta_w sum_C lambda Delta(w), P(lambda + gamma grad_lambda L(w))), keeping the anchor
//!   (w, lambda) in the server state; the global model becomes w_bar, so the clients of the next
//!   round train and report losses at w_bar (and the engine evaluates w_bar after odd calls).
//!   Even calls step from the anchor with the gradients at the extrapolation point:
//!   w = w_anchor + eta_w sum_C lambda_bar Delta(w_bar), lambda = P(lambda_anchor + gamma
//!   grad_lambda L(w_bar)). Server state: the anchor (one model and lambda).
//!
//! lambda starts uniform (1/N). Server state: lambda (length N) and the solver's state. Metrics:
//! `lambda_max`, `lambda_entropy` (ln N when uniform) and `worst_client_loss` (the largest
//! L_k(w_t) reported this round). Stragglers are dropped.
//!
//! Parameters:
//! - `lambda_lr` (gamma_lambda > 0, default 0.01): the ascent step of lambda.
//! - `server_lr` (eta_w > 0, default 1.0; smoothed GDA's c): the descent step of w on the
//!   pseudo-gradient (1: the lambda-weighted average of the clients' models).
//! - `solver` (`"gda"`, `"alt_gda"`, `"smoothed_gda"` or `"extragradient"`, default `"gda"`).
//! - `smoothing_p` (p >= 0, default 0.2) and `smoothing_beta` (beta in (0, 1], default 0.5):
//!   smoothed GDA's proximal weight and averaging weight (used by `smoothed_gda` only).
//!
//! ```toml
//! [algorithm]
//! use = "afl"
//! lambda_lr = 0.01
//! server_lr = 1.0
//! solver = "gda"
//! smoothing_p = 0.2
//! smoothing_beta = 0.5
//! ```

use fedkit_core::{
    Aggregate, Algorithm, ClientCtx, ClientData, Error, Metrics, Model, NoHook, Params, Result, RoundCtx, ServerView,
    Update, evaluate_in_domain, local_update,
};
use serde::{Deserialize, Serialize};

use super::mixture::{by_client, check_step, mixture_metrics, mixture_weights};
use crate::minimax::{Domain, Oracle, SolverKind, SolverState, Steps};

/// Batch size of the clients' loss evaluation (it only bounds memory).
const EVAL_BATCH: usize = 256;

/// AFL.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Afl {
    /// Ascent step gamma_lambda of the mixture weights.
    pub lambda_lr: f64,
    /// Descent step eta_w of the model on the pseudo-gradient.
    pub server_lr: f64,
    /// The minimax solver.
    pub solver: SolverKind,
    /// Smoothed GDA's proximal weight p.
    pub smoothing_p: f64,
    /// Smoothed GDA's averaging weight beta.
    pub smoothing_beta: f64,
}

impl Default for Afl {
    fn default() -> Self {
        Afl { lambda_lr: 0.01, server_lr: 1.0, solver: SolverKind::Gda, smoothing_p: 0.2, smoothing_beta: 0.5 }
    }
}

impl Afl {
    /// Check the step sizes and smoothing parameters.
    pub fn validated(self) -> Result<Self> {
        check_step("lambda_lr", self.lambda_lr)?;
        check_step("server_lr", self.server_lr)?;
        if !(self.smoothing_p >= 0.0 && self.smoothing_p.is_finite()) {
            return Err(Error::config(
                "smoothing_p",
                format!("must be a finite number >= 0, got {}", self.smoothing_p),
            ));
        }
        if !(self.smoothing_beta > 0.0 && self.smoothing_beta <= 1.0) {
            return Err(Error::config("smoothing_beta", format!("must be in (0, 1], got {}", self.smoothing_beta)));
        }
        Ok(self)
    }

    fn steps(&self) -> Steps {
        Steps { eta_x: self.server_lr, eta_y: self.lambda_lr, p: self.smoothing_p, beta: self.smoothing_beta }
    }
}

/// AFL's server state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AflServer {
    /// Mixture weights lambda over all clients (empty until the first round).
    pub lambda: Vec<f64>,
    /// The minimax solver's state (smoothed GDA's z, extragradient's anchor).
    pub solver: SolverState<Params>,
}

/// The gradients one round gives at the broadcast model, for any lambda.
struct RoundOracle<'a> {
    updates: Vec<&'a Update>,
    /// grad_lambda: (N / |C|) L_k for the cohort, 0 elsewhere.
    loss_grad: Vec<f64>,
}

impl Oracle<Params> for RoundOracle<'_> {
    fn grad_x(&mut self, lambda: &[f64]) -> Result<Params> {
        let first = self.updates.first().ok_or_else(|| Error::Method("afl: no updates".into()))?;
        let mut acc = vec![0.0f64; first.delta.len()];
        let mut mass = 0.0;
        for u in &self.updates {
            let l = lambda[u.client as usize];
            if u.delta.len() != acc.len() {
                return Err(Error::Shape(format!("afl: update of client {} has another size", u.client)));
            }
            mass += l;
            acc.iter_mut().zip(u.delta.as_slice()).for_each(|(a, d)| *a += l * *d as f64);
        }
        let mut g = first.delta.zeros_like();
        if mass > 0.0 {
            g.as_mut_slice().iter_mut().zip(&acc).for_each(|(g, a)| *g = (-a / mass) as f32);
        }
        Ok(g)
    }
    fn grad_y(&mut self, _lambda: &[f64]) -> Result<Vec<f64>> {
        Ok(self.loss_grad.clone())
    }
}

impl Algorithm for Afl {
    type Client = ();
    type Server = AflServer;
    fn reads_updates(&self) -> bool {
        true
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _: &mut ()) -> Result<Update> {
        // The loss on the client's own data, in its own feature domain (its noise/affine shift).
        let at_global = evaluate_in_domain(m, cx.global, d, 0..d.len(), EVAL_BATCH, &mut cx.rng("afl_loss"))?;
        let (mut u, _) = local_update(cx, m, d, &mut NoHook)?;
        u.metrics.insert("loss_at_global".into(), at_global.loss());
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut AflServer,
        _agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        let n = r.population;
        let updates = by_client(view.updates, n)?;
        let mut losses = Vec::with_capacity(updates.len());
        for u in &updates {
            match u.metrics.get("loss_at_global") {
                Some(&l) if l.is_finite() => losses.push(l),
                other => {
                    return Err(Error::Method(format!(
                        "afl: client {} reported no finite `loss_at_global` ({other:?})",
                        u.client
                    )));
                }
            }
        }
        let scale = n as f64 / updates.len() as f64;
        let mut loss_grad = vec![0.0; n];
        updates.iter().zip(&losses).for_each(|(u, l)| loss_grad[u.client as usize] = scale * l);
        let lambda = mixture_weights(&mut s.lambda, n)?;
        let mut oracle = RoundOracle { updates, loss_grad };
        let solver = self.solver.build::<Params>(self.steps());
        solver.advance(&mut s.solver, w, lambda, Domain::Simplex, &mut oracle)?;
        Ok(mixture_metrics(lambda, losses.into_iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::mixture::tests_support::{labelled_clients, params, update};
    use crate::algorithms::testing::LinReg;
    use crate::minimax::in_simplex;
    use fedkit_core::{ClientId, RngStream};

    const N: usize = 5;

    /// One server round of `afl` on `updates`; returns the metrics.
    fn round(afl: &Afl, s: &mut AflServer, w: &mut Params, round: u32, updates: &[Update]) -> Metrics {
        let cohort: Vec<ClientId> = updates.iter().map(|u| u.client).collect();
        let global = w.clone();
        let r = RoundCtx {
            round,
            cohort: &cohort,
            global: &global,
            seed: 1,
            population: N,
            malicious: &[false; N],
            draws: &[],
        };
        let agg = crate::aggregators::mean::weighted_mean(updates, true).unwrap();
        let data = labelled_clients(&[0; N], 2);
        let mut view =
            ServerView { updates, model: &mut LinReg::new(2), clients: &data, unlabeled: None, architectures: &mut [] };
        afl.server_step(&r, w, s, &agg, &mut view).unwrap()
    }

    fn all_solvers(lambda_lr: f64) -> Vec<Afl> {
        [SolverKind::Gda, SolverKind::AltGda, SolverKind::SmoothedGda, SolverKind::Extragradient]
            .into_iter()
            .map(|solver| Afl { solver, lambda_lr, ..Afl::default() })
            .collect()
    }

    #[test]
    fn lambda_stays_in_the_simplex_with_random_losses_and_cohorts() {
        for afl in all_solvers(0.3) {
            let (mut s, mut w) = (AflServer::default(), params([0.0; 3]));
            let mut rng = RngStream::new(3);
            for t in 1..=40 {
                let size = 1 + rng.below(N as u64) as usize;
                let mut cohort: Vec<usize> = rng.choose(N, size);
                cohort.sort();
                let ups: Vec<Update> = cohort
                    .iter()
                    .map(|&c| {
                        let delta = [0; 3].map(|_| rng.gaussian(0.0, 0.1) as f32);
                        update(c as u32, delta, 1.0 + c as f32, Some(3.0 * rng.uniform()))
                    })
                    .collect();
                let m = round(&afl, &mut s, &mut w, t, &ups);
                assert!(in_simplex(&s.lambda, 1e-9), "{:?} round {t}: {:?}", afl.solver, s.lambda);
                assert_eq!(s.lambda.len(), N);
                assert!((m["lambda_max"] - s.lambda.iter().copied().fold(0.0, f64::max)).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn equal_losses_keep_lambda_uniform() {
        let afl = Afl { lambda_lr: 0.5, ..Afl::default() };
        let (mut s, mut w) = (AflServer::default(), params([0.0; 3]));
        for t in 1..=30 {
            let ups: Vec<Update> = (0..N as u32).map(|c| update(c, [0.1, 0.0, -0.1], 1.0, Some(0.7))).collect();
            let m = round(&afl, &mut s, &mut w, t, &ups);
            assert!(s.lambda.iter().all(|l| (l - 0.2).abs() < 1e-12), "round {t}: {:?}", s.lambda);
            assert!((m["lambda_entropy"] - (N as f64).ln()).abs() < 1e-9);
            assert_eq!(m["worst_client_loss"], 0.7);
        }
    }

    #[test]
    fn the_client_with_the_highest_loss_gains_the_mixture_weight() {
        for afl in all_solvers(0.05) {
            let (mut s, mut w) = (AflServer::default(), params([0.0; 3]));
            let mut prev = 1.0 / N as f64;
            for t in 1..=200 {
                let ups: Vec<Update> =
                    (0..N as u32).map(|c| update(c, [0.0; 3], 1.0, Some(if c == 3 { 2.0 } else { 1.0 }))).collect();
                round(&afl, &mut s, &mut w, t, &ups);
                // Never decreasing (strictly increasing each full iteration until it saturates).
                assert!(s.lambda[3] >= prev - 1e-12, "{:?} round {t}: {} < {prev}", afl.solver, s.lambda[3]);
                prev = s.lambda[3];
            }
            assert!(s.lambda[3] > 0.999, "{:?}: lambda = {:?}", afl.solver, s.lambda);
        }
    }

    #[test]
    fn gda_moves_the_model_by_the_lambda_weighted_mean_of_the_deltas() {
        let afl = Afl { lambda_lr: 0.1, ..Afl::default() };
        let (mut s, mut w) = (AflServer::default(), params([1.0, 1.0, 1.0]));
        // Round 1: lambda uniform; sample counts (weights 1 and 9) must not matter.
        let ups = vec![update(1, [1.0, 0.0, 0.0], 1.0, Some(1.0)), update(4, [0.0, 2.0, 0.0], 9.0, Some(3.0))];
        round(&afl, &mut s, &mut w, 1, &ups);
        assert_eq!(w.as_slice(), &[1.5, 2.0, 1.0]);
        // Lambda ascended on the scaled losses (N / |C| = 2.5): clients 1, 4 gain 0.25, 0.75 before
        // the projection subtracts the mean gain 0.2: lambda = (0, 0.25, 0, 0, 0.75).
        let want = [0.0, 0.25, 0.0, 0.0, 0.75];
        assert!(s.lambda.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{:?}", s.lambda);
        // Round 2: the deltas combine with lambda renormalised over the cohort {1, 4}.
        let lambda = s.lambda.clone();
        let ups = vec![update(1, [4.0, 0.0, 0.0], 1.0, Some(1.0)), update(4, [0.0, 4.0, 0.0], 1.0, Some(1.0))];
        round(&afl, &mut s, &mut w, 2, &ups);
        let (a, b) = (lambda[1] / (lambda[1] + lambda[4]), lambda[4] / (lambda[1] + lambda[4]));
        let want = [1.5 + 4.0 * a, 2.0 + 4.0 * b, 1.0];
        assert!(w.as_slice().iter().zip(want).all(|(g, w)| (*g as f64 - w).abs() < 1e-6), "{w:?} vs {want:?}");
    }

    #[test]
    fn extragradient_steps_from_the_anchor_with_the_gradients_at_the_extrapolation_point() {
        let afl = Afl { lambda_lr: 0.1, solver: SolverKind::Extragradient, ..Afl::default() };
        let (mut s, mut w) = (AflServer::default(), params([0.0; 3]));
        let full = |d: [f32; 3], l: [f64; N]| -> Vec<Update> {
            (0..N as u32).map(|c| update(c, d, 1.0, Some(l[c as usize]))).collect()
        };
        round(&afl, &mut s, &mut w, 1, &full([1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]));
        assert_eq!(w.as_slice(), &[1.0, 0.0, 0.0], "odd rounds move to the extrapolation point");
        let lambda_bar = s.lambda.clone();
        assert!(lambda_bar[0] > 0.2);
        round(&afl, &mut s, &mut w, 2, &full([0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]));
        assert_eq!(w.as_slice(), &[0.0, 2.0, 0.0], "even rounds step from the anchor w = 0");
        // lambda = P(uniform + 0.1 * loss gradient at the extrapolation point): client 1 gains.
        let want = project(&[0.2, 0.3, 0.2, 0.2, 0.2]);
        assert!(s.lambda.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{:?}", s.lambda);
        assert!(s.solver.anchor_x.is_none());
    }

    fn project(v: &[f64]) -> Vec<f64> {
        crate::minimax::project_simplex(v).unwrap()
    }

    #[test]
    fn clients_report_their_loss_at_the_received_model() {
        let data = labelled_clients(&[2], 6);
        let global = params([0.0; 3]);
        let (extras, train) = (fedkit_core::Extras::default(), fedkit_core::LocalTrain::default());
        let cx = ClientCtx {
            round: 1,
            client: 0,
            seed: 0,
            global: &global,
            broadcast: &extras,
            train: &train,
            epochs: 1,
            malicious: false,
            step: &fedkit_core::PlainStep,
            loss: &fedkit_core::CrossEntropyLoss,
            train_hook: None,
        };
        let u = Afl::default().client_update(&cx, &mut LinReg::new(2), &data[0], &mut ()).unwrap();
        // At w = 0 every sample's loss is 2^2 / 2.
        assert_eq!(u.metrics["loss_at_global"], 2.0);
        assert!(u.delta.l2() > 0.0, "the client also trains");
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(Afl { lambda_lr: 0.0, ..Afl::default() }.validated().is_err());
        assert!(Afl { server_lr: f64::NAN, ..Afl::default() }.validated().is_err());
        assert!(Afl { smoothing_beta: 1.5, ..Afl::default() }.validated().is_err());
        assert!(Afl { smoothing_p: -1.0, ..Afl::default() }.validated().is_err());
        assert!(Afl::default().validated().is_ok());
    }
}
