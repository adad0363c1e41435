//! The algorithm suite: client and server state survive an encode-decode round trip (fedkit_core::codec), and 1 client x 1
//! local step is plain SGD.
//!
//! Runs on the toy data with the registry's `logreg` model. [`check_algorithm`] runs both checks;
//! an algorithm that is not FedAvg-like in its first round (the plain-SGD property does not hold
//! by design) calls [`check_state_serde`] alone.

use fedkit_core::{
    AnyState, Batch, ClientData, ClientId, DynAlgorithm, Extras, LocalTrain, Model, Params, ServerView, Update,
};
use fedkit_methods::aggregators::mean::weighted_mean;

use crate::{SEED, assert_close, assert_same_bits, client_ctx, logreg, round_ctx, toy_clients};

/// Check both properties; `default_server_rule`: the algorithm keeps the default server rule
/// `w += aggregated delta` (false for FedOpt and other server optimisers).
pub fn check_algorithm(name: &str, make: &dyn Fn() -> Box<dyn DynAlgorithm>, default_server_rule: bool) {
    check_state_serde(name, make);
    check_plain_sgd(name, make, default_server_rule);
}

/// The toy federation's state: the global model, the server state and one state per client.
struct Fed {
    algo: Box<dyn DynAlgorithm>,
    model: Box<dyn Model>,
    data: Vec<ClientData>,
    train: LocalTrain,
    global: Params,
    server: Box<dyn AnyState>,
    clients: Vec<Box<dyn AnyState>>,
}

impl Fed {
    fn new(make: &dyn Fn() -> Box<dyn DynAlgorithm>, clients: usize, train: LocalTrain) -> Fed {
        let (algo, model) = (make(), logreg());
        let global = model.init(&mut fedkit_core::RngStream::new(SEED));
        let (server, clients_st) = (algo.new_server_state(), (0..clients).map(|_| algo.new_client_state()).collect());
        Fed { data: toy_clients(clients), model, train, global, server, clients: clients_st, algo }
    }

    /// What every client receives (the broadcast with its personal downlink) and every
    /// client's update for `round`.
    fn clients_round(&mut self, name: &str, round: u32) -> (Vec<Extras>, Vec<Update>) {
        let ids: Vec<ClientId> = (0..self.clients.len() as ClientId).collect();
        let r = round_ctx(round, &ids, &self.global);
        let b = self
            .algo
            .broadcast(&r, self.server.as_ref())
            .unwrap_or_else(|e| panic!("algorithm `{name}`: broadcast failed: {e}"));
        let received: Vec<Extras> = ids
            .iter()
            .map(|&c| {
                let mut e = b.clone();
                let p = self.algo.personal_downlink(&r, self.server.as_ref(), c, self.model.as_ref());
                if let Some(p) = p.unwrap_or_else(|e| panic!("algorithm `{name}`: personal_downlink failed: {e}")) {
                    e.0.extend(p.extras.0);
                }
                e
            })
            .collect();
        let ups = (self.clients.iter_mut().zip(&self.data).zip(ids).zip(&received))
            .map(|(((st, d), c), b)| {
                let cx = client_ctx(round, c, &self.global, b, &self.train);
                let u = self
                    .algo
                    .client_update(&cx, self.model.as_mut(), d, st.as_mut())
                    .unwrap_or_else(|e| panic!("algorithm `{name}`: client_update failed: {e}"));
                self.algo
                    .commit(&cx, &u, st.as_mut())
                    .unwrap_or_else(|e| panic!("algorithm `{name}`: commit failed: {e}"));
                u
            })
            .collect();
        (received, ups)
    }

    /// The server rule for `round` with the mean of `ups`; returns its metrics.
    fn server_round(&mut self, name: &str, round: u32, ups: &[Update]) -> fedkit_core::Metrics {
        let ids: Vec<ClientId> = ups.iter().map(|u| u.client).collect();
        let agg = weighted_mean(ups, true).expect("mean of the toy updates");
        let global = self.global.clone();
        let mut view = ServerView {
            updates: ups,
            model: self.model.as_mut(),
            clients: &self.data,
            unlabeled: self.data.first(),
            architectures: &mut [],
        };
        self.algo
            .server_step(&round_ctx(round, &ids, &global), &mut self.global, self.server.as_mut(), &agg, &mut view)
            .unwrap_or_else(|e| panic!("algorithm `{name}`: server_step failed: {e}"))
    }

    /// A copy of this federation whose states went through `to_bytes` and `*_state_from_bytes`.
    fn restored(&self, name: &str, make: &dyn Fn() -> Box<dyn DynAlgorithm>) -> Fed {
        let what = |w: &str| format!("algorithm `{name}`: {w} state survives serde");
        let rt = |s: &dyn AnyState, w: &str, from: &dyn Fn(&[u8]) -> fedkit_core::Result<Box<dyn AnyState>>| {
            let b = s.to_bytes().unwrap_or_else(|e| panic!("{}: {e}", what(w)));
            let r = from(&b).unwrap_or_else(|e| panic!("{}: {e}", what(w)));
            assert!(r.to_bytes().ok() == Some(b), "{}: bytes change in a round trip", what(w));
            r
        };
        let mut f = Fed::new(make, 0, self.train.clone());
        f.global = self.global.clone();
        f.data = self.data.clone();
        f.server = rt(self.server.as_ref(), "server", &|b| f.algo.server_state_from_bytes(b));
        f.clients =
            self.clients.iter().map(|s| rt(s.as_ref(), "client", &|b| f.algo.client_state_from_bytes(b))).collect();
        f
    }

    fn states(&self) -> Vec<Vec<u8>> {
        std::iter::once(&self.server).chain(&self.clients).map(|s| s.to_bytes().expect("serialised before")).collect()
    }
}

/// Check that client and server state survive an encode-decode round trip (fedkit_core::codec): after a first round of two
/// clients (several local steps each), the second round from restored state gives the same
/// broadcast, updates, global model and states, bit for bit.
pub fn check_state_serde(name: &str, make: &dyn Fn() -> Box<dyn DynAlgorithm>) {
    let mut a = Fed::new(make, 2, LocalTrain { lr: 0.1, epochs: 2, batch_size: 8, ..LocalTrain::default() });
    let (_, ups) = a.clients_round(name, 1);
    a.server_round(name, 1, &ups);
    let mut b = a.restored(name, make);
    let what = |p: &str| format!("algorithm `{name}`: state survives serde: {p} from restored state (round 2)");
    let (ra, rb) = (a.clients_round(name, 2), b.clients_round(name, 2));
    assert_same_bits(&ra.0, &rb.0, &what("broadcast"));
    assert_same_bits(&ra.1, &rb.1, &what("client_update"));
    let (ma, mb) = (a.server_round(name, 2, &ra.1), b.server_round(name, 2, &ra.1));
    assert_same_bits(&(&a.global, &ma), &(&b.global, &mb), &what("server_update (global model and metrics)"));
    assert!(a.states() == b.states(), "{}", what("client and server state after the round"));
}

/// Check that one client taking one local SGD step (one epoch, one full batch) from the global
/// model w returns delta with w + delta = w - lr * grad(w) (within 1e-7 relative), and, when
/// `default_server_rule`, that the server rule with the mean of that update moves w by exactly
/// delta.
pub fn check_plain_sgd(name: &str, make: &dyn Fn() -> Box<dyn DynAlgorithm>, default_server_rule: bool) {
    let mut f =
        Fed::new(make, 1, LocalTrain { lr: 0.1, epochs: 1, batch_size: crate::SAMPLES, ..LocalTrain::default() });
    let w0 = f.global.clone();
    let (_, mut ups) = f.clients_round(name, 1);
    let u = ups.remove(0);

    let (d, mut batch) = (&f.data[0], Batch::default());
    batch.fill(d, &(0..d.len()).collect::<Vec<_>>(), &mut fedkit_core::RngStream::new(0));
    let (mut want, mut grad) = (w0.clone(), w0.zeros_like());
    f.model
        .loss_grad(&mut want, &batch, &mut grad, &mut fedkit_core::RngStream::new(0))
        .expect("logreg gradient of the toy data");
    want.axpy(-(f.train.lr as f32), &grad);
    let mut got = w0.clone();
    got.axpy(1.0, &u.delta);
    let what = format!("algorithm `{name}`: 1 client x 1 step = plain SGD (global + delta vs global - lr * grad)");
    assert_close(got.as_slice(), want.as_slice(), 1e-7, &what);

    if default_server_rule {
        f.server_round(name, 1, std::slice::from_ref(&u));
        let mut want = w0.clone();
        want.axpy(1.0, &weighted_mean(&[u], true).expect("mean of one").delta);
        let what = format!("algorithm `{name}`: default server rule moves the global model by exactly the aggregate");
        assert_same_bits(&f.global, &want, &what);
    }
}
