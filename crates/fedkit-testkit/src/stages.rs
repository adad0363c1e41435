//! The stage suite: every hook is deterministic per seed, and the per-client memory (`Extras`)
//! survives an encode-decode round trip (fedkit_core::codec).
//!
//! Client hooks (`on_data`, `on_update`) run for three rounds with the memory carried over, for a
//! benign and a malicious client; in every round the same inputs are run twice on one stage (so
//! hidden state in the stage shows), and once more from the memory after an encode-decode round trip (fedkit_core::codec).
//! Server hooks (`on_cohort`, `on_aggregate`) run for two rounds on two fresh stages, on updates
//! that went through the stage's client hook.

use fedkit_core::{
    ClientCtx, ClientData, ClientId, CohortSampling, Extras, LocalTrain, Params, RunInfo, Stage, Update,
};
use fedkit_methods::aggregators::mean::weighted_mean;

use crate::{
    COHORT, assert_same_bits, client_ctx, image_logreg, round_ctx, round_ctx_attacked, toy_cohort, toy_images,
    toy_layout, toy_values,
};

/// Values per toy update.
const N: usize = 12;
/// The client the client hooks run for.
const CLIENT: ClientId = COHORT[2];

/// A client's data (features, the labels it trains on, indices, noise, affine scale and shift,
/// the batch it draws of all its samples), bit for bit.
type DataBits = (Vec<u32>, Vec<u32>, Vec<u32>, u32, [u32; 2], Vec<u32>);

/// The client data's contents, bit for bit.
fn data_bits(d: &ClientData) -> DataBits {
    let mut b = fedkit_core::Batch::default();
    b.fill(d, &(0..d.len()).collect::<Vec<_>>(), &mut fedkit_core::RngStream::new(0));
    (
        d.data.x.iter().map(|v| v.to_bits()).collect(),
        (0..d.len()).map(|p| d.label(p)).collect(),
        d.idx.to_vec(),
        d.noise_std.to_bits(),
        [d.affine.scale.to_bits(), d.affine.shift.to_bits()],
        b.x.iter().map(|v| v.to_bits()).collect(),
    )
}

/// One round of the client hooks from memory `mem`: the data and update after the stage, and the
/// memory after.
fn client_hooks(name: &str, stage: &dyn Stage, cx: &ClientCtx, mem: &Extras) -> (Update, Extras, DataBits) {
    let (mut mem, mut data) = (mem.clone(), toy_images());
    // The data hook sees a model of the toy images and a global model of that architecture.
    let mut model = image_logreg();
    let global = model.init(&mut fedkit_core::RngStream::new(crate::SEED));
    stage
        .on_data_with_model(&ClientCtx { global: &global, ..*cx }, model.as_mut(), &mut data, &mut mem)
        .unwrap_or_else(|e| panic!("stage `{name}`: on_data failed: {e}"));
    let mut u = toy_cohort(cx.round, &[cx.client], N).remove(0);
    stage.on_update(cx, &mut u, &mut mem).unwrap_or_else(|e| panic!("stage `{name}`: on_update failed: {e}"));
    (u, mem, data_bits(&data))
}

/// The run the stages are prepared for, as the engine does before the first round: fixed-size
/// cohorts of the toy cohort's size, FedAvg, the mean.
fn run_info() -> RunInfo {
    RunInfo {
        population: crate::POPULATION,
        sampling: CohortSampling::FixedSize { per_round: COHORT.len() },
        rounds: 3,
        algorithm: "fedavg".into(),
        aggregator: "mean".into(),
        local_step: "plain".into(),
    }
}

/// A stage from `make`, prepared.
fn prepared(name: &str, make: &dyn Fn() -> Box<dyn Stage>) -> Box<dyn Stage> {
    let mut s = make();
    s.prepare(&run_info()).unwrap_or_else(|e| panic!("stage `{name}`: prepare failed: {e}"));
    s
}

/// Check the properties every stage must have (panics naming `name` and the property).
pub fn check_stage(name: &str, make: &dyn Fn() -> Box<dyn Stage>) {
    let global = Params::from_vec(toy_layout(N), toy_values(N, 0, 0)).expect("fits");
    let (broadcast, train) = (Extras::default(), LocalTrain::default());
    let stage = prepared(name, make);
    for malicious in [false, true] {
        let mut mem = Extras::default();
        for round in 1..=3 {
            let cx = ClientCtx { malicious, ..client_ctx(round, CLIENT, &global, &broadcast, &train) };
            let what = |p: &str| format!("stage `{name}`: {p} (round {round}, malicious {malicious})");
            let (u, next, data) = client_hooks(name, stage.as_ref(), &cx, &mem);
            let (u2, next2, data2) = client_hooks(name, stage.as_ref(), &cx, &mem);
            assert!(data == data2, "{}", what("on_data is deterministic per seed"));
            assert_same_bits(&(&u, &next), &(&u2, &next2), &what("on_update is deterministic per seed"));

            let restored: Extras = fedkit_core::codec::from_bytes(&crate::bits(&mem), "stage memory")
                .unwrap_or_else(|e| panic!("{}: {e}", what("memory survives serde")));
            assert_same_bits(&restored, &mem, &what("memory survives serde"));
            let (u3, next3, data3) = client_hooks(name, stage.as_ref(), &cx, &restored);
            assert!(data == data3, "{}", what("on_data from deserialised memory gives the same data"));
            assert_same_bits(&(&u, &next), &(&u3, &next3), &what("continuing from deserialised memory"));
            mem = next;
        }
    }

    let server = |mut stage: Box<dyn Stage>| {
        (1..=2)
            .map(|round| {
                let r = if round == 2 {
                    round_ctx_attacked(round, &COHORT, &global)
                } else {
                    round_ctx(round, &COHORT, &global)
                };
                // What reaches the server went through the stage's client hook (as in the engine).
                let mut us = toy_cohort(round, &COHORT[..COHORT.len() - 1], N);
                for u in us.iter_mut() {
                    let cx = client_ctx(round, u.client, &global, &broadcast, &train);
                    stage
                        .on_update(&cx, u, &mut Extras::default())
                        .unwrap_or_else(|e| panic!("stage `{name}`: on_update failed: {e}"));
                }
                stage.on_cohort(&r, &mut us).unwrap_or_else(|e| panic!("stage `{name}`: on_cohort failed: {e}"));
                let mut agg = weighted_mean(&toy_cohort(round, &COHORT[..4], N), true).expect("mean of 4");
                stage.on_aggregate(&r, &mut agg).unwrap_or_else(|e| panic!("stage `{name}`: on_aggregate failed: {e}"));
                (us, agg)
            })
            .collect::<Vec<_>>()
    };
    let what = format!("stage `{name}`: on_cohort and on_aggregate are deterministic per seed");
    assert_same_bits(&server(prepared(name, make)), &server(prepared(name, make)), &what);
}
