//! The suites catch broken methods: each deliberately broken method below fails the property it
//! breaks, with a message naming it.

use std::sync::atomic::{AtomicU32, Ordering};

use fedkit_core::{
    Aggregate, Aggregator, Algorithm, ClientCtx, ClientData, Extras, Model, Params, Result, RoundCtx, Stage, Update,
    local_update,
};
use fedkit_methods::aggregators::mean::{Mean, weighted_mean};
use fedkit_testkit::aggregators::{check_aggregator, check_weighted_mean};
use fedkit_testkit::algorithms::{check_plain_sgd, check_state_serde};
use fedkit_testkit::stages::check_stage;

/// Returns the first update it is given.
struct First;
impl Aggregator for First {
    fn aggregate(&mut self, _r: &RoundCtx, us: &[Update]) -> Result<Aggregate> {
        let mut a = weighted_mean(&us[..1], true)?;
        a.accepted = us.iter().map(|u| u.client).collect();
        Ok(a)
    }
}

/// The mean, but claims a client outside the cohort.
struct Stranger;
impl Aggregator for Stranger {
    fn aggregate(&mut self, _r: &RoundCtx, us: &[Update]) -> Result<Aggregate> {
        let mut a = weighted_mean(us, true)?;
        a.accepted.push(999);
        Ok(a)
    }
}

#[test]
#[should_panic(expected = "aggregator `first`: permutation invariance")]
fn order_dependent_aggregator_fails() {
    check_aggregator("first", &|| Box::new(First), true);
}

#[test]
#[should_panic(expected = "aggregator `stranger`: accepted lists client 999")]
fn accepting_a_stranger_fails() {
    check_aggregator("stranger", &|| Box::new(Stranger), true);
}

#[test]
#[should_panic(expected = "aggregator `unweighted`: weights respected")]
fn unweighted_mean_is_not_weighted() {
    check_aggregator("unweighted", &|| Box::new(Mean { weighted: false }), true);
    check_weighted_mean("unweighted", &|| Box::new(Mean { weighted: false }));
}

/// Adds a call counter to the update: not a function of its inputs.
#[derive(Default)]
struct Counter(AtomicU32);
impl Stage for Counter {
    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        u.delta.as_mut_slice()[0] += self.0.fetch_add(1, Ordering::Relaxed) as f32;
        Ok(())
    }
}

#[test]
#[should_panic(expected = "stage `counter`: on_update is deterministic per seed")]
fn hidden_stage_state_fails() {
    check_stage("counter", &|| Box::new(Counter::default()));
}

/// FedAvg whose server state forgets a field on serialisation, and whose server rule doubles the
/// step (`twice`) or whose client takes its local epochs twice (`steps2`).
#[derive(Default)]
struct Broken {
    twice: bool,
    steps2: bool,
}
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Server {
    #[serde(skip)]
    rounds: u32,
}
impl Algorithm for Broken {
    type Client = ();
    type Server = Server;
    fn broadcast(&self, _r: &RoundCtx, s: &Server) -> Extras {
        let mut e = Extras::default();
        e.insert("rounds", fedkit_core::Extra::Scalar(s.rounds as f64));
        e
    }
    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _: &mut ()) -> Result<Update> {
        let mut u = local_update(cx, m, d, &mut fedkit_core::NoHook)?.0;
        if self.steps2 {
            let w: Params = local_update(cx, m, d, &mut fedkit_core::NoHook)?.1;
            let cx2 = ClientCtx { global: &w, ..*cx };
            u.delta.axpy(1.0, &local_update(&cx2, m, d, &mut fedkit_core::NoHook)?.0.delta);
        }
        Ok(u)
    }
    fn server_update(
        &self,
        _r: &RoundCtx,
        w: &mut Params,
        s: &mut Server,
        a: &Aggregate,
    ) -> Result<fedkit_core::Metrics> {
        s.rounds += 1;
        w.axpy(if self.twice { 2.0 } else { 1.0 }, &a.delta);
        Ok(Default::default())
    }
}

#[test]
#[should_panic(expected = "algorithm `forgetful`: state survives serde: broadcast")]
fn lossy_state_fails() {
    check_state_serde("forgetful", &|| Box::new(Broken::default()));
}

#[test]
#[should_panic(expected = "algorithm `steps2`: 1 client x 1 step = plain SGD")]
fn extra_local_steps_fail() {
    check_plain_sgd("steps2", &|| Box::new(Broken { steps2: true, ..Default::default() }), false);
}

#[test]
#[should_panic(expected = "algorithm `twice`: default server rule")]
fn custom_server_rule_is_caught_unless_declared() {
    check_plain_sgd("twice", &|| Box::new(Broken { twice: true, ..Default::default() }), false);
    check_plain_sgd("twice", &|| Box::new(Broken { twice: true, ..Default::default() }), true);
}
