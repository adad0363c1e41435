//! End-to-end properties of FedBN (on the registry's mlp with batch norm, clients with different
//! feature noise) and FedLAW (on the registry's logreg), run round by round as the engine does.

use fedkit_core::registry::Kind;
use fedkit_core::{
    AnyState, ClientData, ClientId, DynAlgorithm, Extras, LocalTrain, Model, NoHook, Params, RngStream, ServerView,
    Update, evaluate_range, local_update, local_update_from,
};
use fedkit_methods::aggregators::mean::weighted_mean;
use fedkit_methods::algorithms;
use fedkit_methods::algorithms::fedbn::is_local;
use fedkit_testkit::{CLASSES, FEATURES, SEED, build, build_default, client_ctx, logreg, round_ctx, toy_clients};

/// The registry's `mlp` with one hidden layer of 8 and batch norm, for the toy data.
fn mlp_bn() -> Box<dyn Model> {
    let table: toml::Table = "use = 'mlp'\nhidden = [8]\nnorm = 'batch'".parse().expect("valid TOML");
    let (spec, _) = build(fedkit_models::models(), Kind::Model, &table);
    spec.instantiate(&[FEATURES], CLASSES).expect("mlp fits the toy data")
}

/// The values of `p` on the entries FedBN keeps local (`local = true`) or shares.
fn part(p: &Params, local: bool) -> Vec<f32> {
    p.tensors().filter(|(e, _)| is_local(e.kind) == local).flat_map(|(_, v)| v.iter().copied()).collect()
}

/// Run the server step of `algo` for `round` on the mean of `ups`.
fn server_step(
    algo: &dyn DynAlgorithm,
    round: u32,
    global: &mut Params,
    server: &mut dyn AnyState,
    ups: &[Update],
    model: &mut dyn Model,
    data: &[ClientData],
) -> fedkit_core::Metrics {
    let ids: Vec<ClientId> = ups.iter().map(|u| u.client).collect();
    let agg = weighted_mean(ups, true).expect("mean of the updates");
    let before = global.clone();
    let mut view = ServerView { updates: ups, model, clients: data, unlabeled: None, architectures: &mut [] };
    algo.server_step(&round_ctx(round, &ids, &before), global, server, &agg, &mut view).expect("server step")
}

// FedBN over 3 rounds of 3 clients with feature noise 0, 0.5 and 1:
// - BN parameters and running statistics never leave a client: every delta is exactly 0 on them,
//   and the global model's BN entries stay bit for bit at their initial values;
// - the shared entries follow FedAvg: in round 1 (no client state yet) each update equals
//   FedAvg's on them bit for bit, and every round the server adds the weighted mean of the deltas;
// - a client's later rounds start from its own BN values: its state after round 1 is the BN part
//   of its trained model, and its round-2 update is that of local training from the global model
//   with those BN values (which differs from training from the global model's own).
#[test]
fn fedbn_keeps_batch_norm_local() {
    let fedbn = build_default(algorithms(), Kind::Algorithm, "fedbn").0;
    let fedavg = build_default(algorithms(), Kind::Algorithm, "fedavg").0;
    let mut model = mlp_bn();
    let data: Vec<ClientData> =
        toy_clients(3).into_iter().enumerate().map(|(k, d)| ClientData { noise_std: 0.5 * k as f32, ..d }).collect();
    let train = LocalTrain { lr: 0.1, epochs: 2, batch_size: 5, ..LocalTrain::default() };
    let init = model.init(&mut RngStream::new(SEED));
    assert!(!part(&init, true).is_empty(), "the model has BN entries");
    let mut global = init.clone();
    let mut server = fedbn.new_server_state();
    let mut states: Vec<Box<dyn AnyState>> = (0..3).map(|_| fedbn.new_client_state()).collect();
    let none = Extras::default();
    for round in 1..=3u32 {
        let mut ups = Vec::new();
        for (c, (d, st)) in data.iter().zip(states.iter_mut()).enumerate() {
            let cx = client_ctx(round, c as ClientId, &global, &none, &train);
            let start = fedbn.personalize(&global, st.as_ref()).expect("state of the right type");
            assert_eq!(start.is_none(), round == 1, "round {round}: personalised model exists after training");
            let u = fedbn.client_update(&cx, model.as_mut(), d, st.as_mut()).expect("fedbn client update");
            let what = format!("round {round} client {c}");
            assert!(part(&u.delta, true).iter().all(|&v| v == 0.0), "{what}: BN values left the client");
            assert!(part(&u.delta, false).iter().any(|&v| v != 0.0), "{what}: no shared delta");
            if round == 1 {
                let mut fa_state = fedavg.new_client_state();
                let fa = fedavg.client_update(&cx, model.as_mut(), d, fa_state.as_mut()).unwrap();
                assert_eq!(part(&fa.delta, false), part(&u.delta, false), "{what}: shared part differs from FedAvg");
                assert!(part(&fa.delta, true).iter().any(|&v| v != 0.0), "{what}: training left the BN entries");
                let (_, w) = local_update(&cx, model.as_mut(), d, &mut NoHook).unwrap();
                let own = fedbn.personalize(&global, st.as_ref()).unwrap().expect("state after round 1");
                assert_eq!(part(&own, true), part(&w, true), "{what}: state is not the trained BN values");
                assert_eq!(part(&own, false), part(&global, false), "{what}: personalised shared part");
            } else if let Some(start) = start {
                let (want, _) = local_update_from(&cx, start, "batches", model.as_mut(), d, &mut NoHook).unwrap();
                assert_eq!(part(&u.delta, false), part(&want.delta, false), "{what}: not trained from own BN");
                let (from_global, _) = local_update(&cx, model.as_mut(), d, &mut NoHook).unwrap();
                assert_ne!(part(&u.delta, false), part(&from_global.delta, false), "{what}: own BN made no difference");
            }
            ups.push(u);
        }
        let before = global.clone();
        server_step(fedbn.as_ref(), round, &mut global, server.as_mut(), &ups, model.as_mut(), &data);
        assert_eq!(part(&global, true), part(&init, true), "round {round}: the global BN entries changed");
        let mut fedavg_global = before.clone();
        fedavg_global.axpy(1.0, &weighted_mean(&ups, true).unwrap().delta);
        assert_eq!(part(&global, false), part(&fedavg_global, false), "round {round}: shared part is not FedAvg's");
    }
    let bn = |c: usize| part(&fedbn.personalize(&global, states[c].as_ref()).unwrap().unwrap(), true);
    assert_ne!(bn(0), bn(2), "clients with different feature noise ended with the same BN values");
}

// FedLAW learns aggregation weights that favour the client whose model fits the proxy data: of
// two equally weighted clients, one trains on the data and the other sends a random model;
// lambda moves away from 1/2 toward the good client and the new global model has a lower loss on
// the clients' data than FedAvg's mean; it reports gamma and lambda_max.
#[test]
fn fedlaw_favours_the_client_that_fits_the_proxy_data() {
    let table: toml::Table = "use = 'fedlaw'\nserver_lr = 0.05".parse().unwrap();
    let fedlaw = build(algorithms(), Kind::Algorithm, &table).0;
    let mut model = logreg();
    let data = toy_clients(2);
    let global = model.init(&mut RngStream::new(SEED));
    let train = LocalTrain { lr: 0.1, epochs: 5, batch_size: 5, ..LocalTrain::default() };
    let none = Extras::default();
    let cx = client_ctx(1, 0, &global, &none, &train);
    let good = fedlaw.client_update(&cx, model.as_mut(), &data[0], fedlaw.new_client_state().as_mut()).unwrap();
    let mut rng = RngStream::new(7);
    let noise: Vec<f32> = (0..global.len()).map(|_| rng.gaussian(0.0, 2.0) as f32).collect();
    let bad = Update { client: 1, delta: Params::from_vec(global.layout().clone(), noise).unwrap(), ..good.clone() };
    let ups = [good, bad];
    let mut w = global.clone();
    let m = server_step(fedlaw.as_ref(), 1, &mut w, fedlaw.new_server_state().as_mut(), &ups, model.as_mut(), &data);
    assert!(m["fedlaw_lambda_max"] > 0.6, "lambda_max {}", m["fedlaw_lambda_max"]);
    assert!(m["fedlaw_gamma"] > 0.0 && m["fedlaw_gamma"].is_finite());
    let mut avg = global.clone();
    avg.axpy(1.0, &weighted_mean(&ups, true).unwrap().delta);
    let all = ClientData::whole(data[0].data.clone());
    let mut loss = |p: &Params| evaluate_range(model.as_mut(), p, &all, 0..all.len(), 64).unwrap().loss();
    let (fedlaw_loss, fedavg_loss) = (loss(&w), loss(&avg));
    assert!(fedlaw_loss < fedavg_loss, "fedlaw loss {fedlaw_loss} vs fedavg {fedavg_loss}");
    let mut good_model = global.clone();
    good_model.axpy(1.0, &ups[0].delta);
    assert!(
        w.sub(&good_model).l2() < avg.sub(&good_model).l2(),
        "the global model did not move toward the good client"
    );
}
