//! The extension points: [`Algorithm`] (a paper's client rule + server rule), [`Aggregator`]
//! (mean or a robust rule), [`Stage`] (clipping, DP, compression, attacks, filters) and
//! [`Transport`] (in-process or networked), with the contexts they receive.

use std::any::Any;
use std::cell::RefCell;

use serde::{Serialize, de::DeserializeOwned};

use crate::loss::{Loss, LossRun, WithHead};
use crate::model::{GradHook, LocalStep, Model, NoHook, TrainStats, local_train};
use crate::update::{Aggregate, ClientFailure, ClientId, Downlink, Extras, Metrics, PersonalDownlink, Update};
use crate::{ClientData, Error, LocalTrain, Params, Result, RngStream};

/// What the engine knows about one client's work in a round.
pub struct ClientCtx<'a> {
    pub round: u32,
    pub client: ClientId,
    /// The run seed: draw randomness with [`ClientCtx::rng`], never from elsewhere.
    pub seed: u64,
    pub global: &'a Params,
    pub broadcast: &'a Extras,
    pub train: &'a LocalTrain,
    /// Local epochs for this client this round (fewer than `train.epochs` for a straggler doing
    /// partial work).
    pub epochs: usize,
    /// True when the threat model marks this client malicious.
    pub malicious: bool,
    /// The local step rule (`[local]`): plain, SAM, WRM, FedNAR, ...
    pub step: &'a dyn LocalStep,
    /// The training loss (`[loss]`): cross-entropy, logit adjustment, LDAM, ...
    pub loss: &'a dyn Loss,
    /// The pipeline stages' training-time hooks for this client (Neurotoxin's projection,
    /// constrain-and-scale's anomaly term), run after the algorithm's hook at every local step;
    /// `None` when no stage has one.
    pub train_hook: Option<&'a (dyn SharedHook + 'a)>,
}

/// A [`GradHook`] called through a shared reference (interior mutability): how the stages'
/// training-time hooks travel in a [`ClientCtx`].
pub trait SharedHook {
    fn on_grad(&self, step: usize, w: &Params, g: &mut Params);
    fn after_step(&self, step: usize, w: &mut Params);
}

impl<H: GradHook> SharedHook for RefCell<H> {
    fn on_grad(&self, step: usize, w: &Params, g: &mut Params) {
        self.borrow_mut().on_grad(step, w, g);
    }
    fn after_step(&self, step: usize, w: &mut Params) {
        self.borrow_mut().after_step(step, w);
    }
}

impl ClientCtx<'_> {
    /// The random stream for `purpose` of this client in this round.
    pub fn rng(&self, purpose: &str) -> RngStream {
        RngStream::derive(self.seed, purpose, self.round as u64, self.client as u64)
    }
}

/// What the engine knows about a round on the server.
pub struct RoundCtx<'a> {
    pub round: u32,
    pub cohort: &'a [ClientId],
    pub global: &'a Params,
    pub seed: u64,
    /// Clients in the federation.
    pub population: usize,
    /// The threat model: `malicious[c]` for every client c (server-side attacks and detection
    /// metrics read it; defences must not).
    pub malicious: &'a [bool],
    /// How many times each member of `cohort` was drawn (same order): all 1 for the uniform
    /// draw without replacement; an [`Algorithm::cohort`] that samples with replacement (DRFA)
    /// may draw a client several times, it then trains once and its update counts that often.
    pub draws: &'a [u32],
}

impl RoundCtx<'_> {
    /// How many times `client` was drawn this round (0 if it is not in the cohort).
    pub fn draws_of(&self, client: ClientId) -> u32 {
        match self.cohort.binary_search(&client) {
            Ok(i) => self.draws.get(i).copied().unwrap_or(1),
            Err(_) => 0,
        }
    }
    /// The random stream for `purpose` on the server this round.
    pub fn rng(&self, purpose: &str) -> RngStream {
        RngStream::derive(self.seed, purpose, self.round as u64, u64::MAX)
    }
}

/// What the server knows when it picks a round's cohort.
#[derive(Clone, Copy, Debug)]
pub struct SampleCtx {
    pub round: u32,
    pub seed: u64,
    /// Clients in the federation.
    pub population: usize,
    /// `sampling.per_round`, capped at the population.
    pub per_round: usize,
}

impl SampleCtx {
    /// The random stream for `purpose` of the sampler this round.
    pub fn rng(&self, purpose: &str) -> RngStream {
        RngStream::derive(self.seed, purpose, self.round as u64, u64::MAX - 1)
    }
}

/// What a server rule may look at beyond the aggregate: the cohort's individual updates (after
/// the cohort stages, and only those the aggregator accepted: a robust aggregator's rejections
/// hold for every server rule), a model object to evaluate parameters with, and the clients'
/// data (for methods with a server-side proxy set, e.g. FedLAW; simulation only).
pub struct ServerView<'a> {
    /// The accepted updates, sorted by client id.
    pub updates: &'a [Update],
    pub model: &'a mut dyn Model,
    pub clients: &'a [ClientData],
    /// Training samples that no client holds (with `data.subsample < 1`; `data.unlabeled_share`
    /// of them): the server's unlabeled data for distillation (FedDF); `None` outside the engine.
    pub unlabeled: Option<&'a ClientData>,
    /// The model groups' architectures (`[[model.per_client]]`, empty without them); `model` is the
    /// `[model]` one.
    pub architectures: &'a mut [Architecture],
}

/// One architecture of `[[model.per_client]]`: a model object and the initial parameters its
/// clients start from (`ClientCtx::global`) unless the algorithm sends them a model.
pub struct Architecture {
    pub model: Box<dyn Model>,
    pub init: Params,
}

impl ServerView<'_> {
    /// The model object whose layout is `layout`: `model`, or one of `architectures`'.
    pub fn model_for(&mut self, layout: &crate::Layout) -> Option<&mut dyn Model> {
        if *self.model.layout() == *layout {
            return Some(&mut *self.model);
        }
        self.architectures.iter_mut().find(|a| *a.model.layout() == *layout).map(|a| a.model.as_mut() as &mut dyn Model)
    }
}

/// Persistent state of an algorithm (per client or on the server): serialisable, so it survives
/// checkpoints and can live on a remote client.
pub trait State: Serialize + DeserializeOwned + Default + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Default + Send + Sync + 'static> State for T {}

/// What happens to the clients that the straggler model marks slow this round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StragglerPolicy {
    /// Their updates are discarded (FedAvg in the FedProx paper).
    Drop,
    /// They send what they have after fewer local epochs (FedProx).
    Partial,
}

/// Train locally from the global model with `hook` and return the delta as an update weighted by
/// the client's sample count: the FedAvg client step that most algorithms build on.
pub fn local_update(
    cx: &ClientCtx,
    m: &mut dyn Model,
    d: &ClientData,
    hook: &mut dyn GradHook,
) -> Result<(Update, Params)> {
    local_update_from(cx, cx.global.clone(), BATCH_STREAM, m, d, hook)
}

/// The purpose of the random stream that orders a client's local mini-batches in
/// [`local_update`]: `RngStream::derive(seed, BATCH_STREAM, round, client)`; each epoch's order is
/// the stream's next `permutation(n)` (as long as nothing else draws from it: no feature noise,
/// no randomised model or step rule). `fedkit data export` replays it for the peer benchmarks.
pub const BATCH_STREAM: &str = "batches";

/// [`local_update`] from parameters `start` (e.g. the global model with the client's own norm
/// layers), drawing batches from the stream `purpose`: methods that train twice in a round use a
/// distinct purpose for each run. The delta is still taken against the global model.
pub fn local_update_from(
    cx: &ClientCtx,
    start: Params,
    purpose: &str,
    m: &mut dyn Model,
    d: &ClientData,
    hook: &mut dyn GradHook,
) -> Result<(Update, Params)> {
    let mut w = start;
    let mut rng = cx.rng(purpose);
    let mut chained = Chain { first: hook, second: cx.train_hook };
    let hook: &mut dyn GradHook = &mut chained;
    let stats: TrainStats = if cx.loss.is_cross_entropy() {
        local_train(m, &mut w, d, cx.train, cx.epochs, hook, cx.step, cx.round, &mut rng)?
    } else {
        let head = cx.loss.head(&mut LossRun { round: cx.round, global: cx.global, data: d, model: &mut *m })?;
        let mut with = WithHead { inner: m, head };
        local_train(&mut with, &mut w, d, cx.train, cx.epochs, hook, cx.step, cx.round, &mut rng)?
    };
    let delta = w.sub(cx.global);
    let mut metrics = Metrics::new();
    metrics.insert("loss".into(), stats.loss);
    metrics.insert("steps".into(), stats.steps as f64);
    let u = Update { client: cx.client, delta, weight: d.len() as f32, extras: Extras::default(), metrics };
    Ok((u, w))
}

/// The algorithm's hook, then the stages' training-time hooks.
struct Chain<'a, 'b> {
    first: &'a mut dyn GradHook,
    second: Option<&'b (dyn SharedHook + 'b)>,
}

impl GradHook for Chain<'_, '_> {
    fn on_grad(&mut self, step: usize, w: &Params, g: &mut Params) {
        self.first.on_grad(step, w, g);
        if let Some(s) = self.second {
            s.on_grad(step, w, g);
        }
    }
    fn after_step(&mut self, step: usize, w: &mut Params) {
        self.first.after_step(step, w);
        if let Some(s) = self.second {
            s.after_step(step, w);
        }
    }
}

/// A paper's federated algorithm: its client rule and its server rule, in one impl.
pub trait Algorithm: Send + Sync + 'static {
    /// Per-client persistent state (`()` when stateless).
    type Client: State;
    /// Server state (`()` when stateless).
    type Server: State;
    /// What this algorithm does with stragglers.
    fn straggler_policy(&self) -> StragglerPolicy {
        StragglerPolicy::Drop
    }
    /// True when the server rule reads individual updates (`ServerView::updates`), which
    /// secure aggregation hides: such an algorithm refuses to run under it.
    fn reads_updates(&self) -> bool {
        false
    }
    /// The round's cohort; `None` (the default): `per_round` clients uniformly without
    /// replacement. DRFA samples by its mixture weights, with replacement: a client listed k
    /// times trains once and is counted k times ([`RoundCtx::draws`]).
    fn cohort(&self, _sc: &SampleCtx, _s: &Self::Server) -> Option<Vec<ClientId>> {
        None
    }
    /// Side payloads sent to every client of the round.
    fn broadcast(&self, _r: &RoundCtx, _s: &Self::Server) -> Extras {
        Extras::default()
    }
    /// True when clients keep models of their own and need not receive the global model
    /// (RFFL, FedFomo, standalone training): downlink compression of the global model is then
    /// refused when the config is read.
    fn keeps_client_models(&self) -> bool {
        false
    }
    /// True when the server rule needs unlabeled data (`ServerView::unlabeled`: FedDF's
    /// distillation set); the engine refuses a run that leaves none when the config is read.
    fn needs_unlabeled_data(&self) -> bool {
        false
    }
    /// True when the server rule combines the accepted updates itself instead of applying the
    /// aggregate, or pulls the model towards the individual updates (IFCA per cluster, HeteroFL
    /// per coordinate, RFFL by reputation, FedDF and FedBE by distillation, FedGen's generator):
    /// noise a server-side DP stage adds to the aggregate would be lost or bypassed, so the
    /// engine refuses such stages when the config is read.
    fn combines_updates_itself(&self) -> bool {
        false
    }
    /// Refuse a model or a training loss this algorithm cannot run with (HeteroFL needs hidden
    /// widths to scale, FedAwS its own loss in place of the configured one), with an error that
    /// names the key; the engine calls it when the config is read. `loss_is_cross_entropy`
    /// says whether `[loss]` is the default cross-entropy. Default: anything goes.
    fn check_setup(&self, _m: &dyn Model, _loss_is_cross_entropy: bool) -> Result<()> {
        Ok(())
    }
    /// True when clients may train models of different architectures (`[[model.per_client]]`):
    /// a group's clients get that architecture's model object in [`Algorithm::client_update`]
    /// and, as `ClientCtx::global`, its initial parameters (unless the algorithm sends a model of
    /// its own); their updates have that layout. The engine refuses model groups for the other
    /// algorithms, whose rules average one layout. Default: false.
    fn supports_architectures(&self) -> bool {
        false
    }
    /// False when the client rule cannot train under a `[compress]` mask: its own hook tracks an
    /// iterate the mask would contradict (FedMid's and FedDualAvg's proximal points), or it
    /// trains sub-models the mask does not index (HeteroFL). The engine refuses `[compress]`
    /// for those. Default: true.
    fn supports_masks(&self) -> bool {
        true
    }
    /// The server's model of the group architecture `layout` (FedDF's prototype of it), which
    /// the engine evaluates on the test set as `test_acc_group<g>` and `test_loss_group<g>`;
    /// `None` (the default): the server keeps no model of it.
    fn architecture_model(&self, _s: &Self::Server, _layout: &crate::Layout) -> Option<Params> {
        None
    }
    /// What the server sends `client` alone this round, beyond the broadcast: RFFL's
    /// reputation-sized reward, FedFomo's peer models, HeteroFL's sub-model. The client sees its
    /// payloads merged over the broadcast's in `ClientCtx::broadcast`, and `bytes_down` counts
    /// each client's own message; `m` is the client's architecture: the global model's
    /// (HeteroFL sizes a sub-model by it), or its group's under `[[model.per_client]]`. `None` (the
    /// default): the broadcast alone.
    fn personal_downlink(
        &self,
        _r: &RoundCtx,
        _s: &Self::Server,
        _client: ClientId,
        _m: &dyn Model,
    ) -> Result<Option<PersonalDownlink>> {
        Ok(None)
    }
    /// The client rule; default: FedAvg (plain local SGD, delta weighted by sample count).
    fn client_update(
        &self,
        cx: &ClientCtx,
        m: &mut dyn Model,
        d: &ClientData,
        _st: &mut Self::Client,
    ) -> Result<Update> {
        Ok(local_update(cx, m, d, &mut NoHook)?.0)
    }
    /// After the client-side stages have run on the update this client's rule returned: `sent`
    /// is what goes on the wire (clipped, compressed, noised...). A rule whose client state
    /// tracks what the server receives (SCAFFOLD's c_i, FedDyn's grad_k) updates it here, so
    /// the client's and the server's copies agree whatever the pipeline does. Default: nothing.
    fn commit(&self, _cx: &ClientCtx, _sent: &Update, _st: &mut Self::Client) -> Result<()> {
        Ok(())
    }
    /// The server rule; default: `w += aggregated delta`.
    fn server_update(&self, _r: &RoundCtx, w: &mut Params, _s: &mut Self::Server, agg: &Aggregate) -> Result<Metrics> {
        w.axpy(1.0, &agg.delta);
        Ok(Metrics::new())
    }
    /// The server rule with the cohort's individual updates and a model at hand (the engine
    /// calls this); default: [`Algorithm::server_update`]. Methods that weight or group clients
    /// individually (AFL, FedLAW, hierarchical SGD) override this one.
    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut Self::Server,
        agg: &Aggregate,
        _view: &mut ServerView,
    ) -> Result<Metrics> {
        self.server_update(r, w, s, agg)
    }
    /// The model this client would use, from the global model and its state (FedBN: with its own
    /// norm layers); `None`: the global model. Per-client evaluation (`eval.clients`) uses it.
    fn personalize(&self, _global: &Params, _st: &Self::Client) -> Option<Params> {
        None
    }
    /// The model a client would use, computed on its own training data `d` with the server
    /// state at hand: Per-FedAvg's adaptation step, IFCA's lowest-loss cluster model. `st` is
    /// `None` for a client that never trained. Per-client evaluation calls this; default:
    /// [`Algorithm::personalize`].
    fn adapt(
        &self,
        a: &AdaptCtx,
        _server: &Self::Server,
        st: Option<&Self::Client>,
        _m: &mut dyn Model,
        _d: &ClientData,
    ) -> Result<Option<Params>> {
        Ok(st.and_then(|s| self.personalize(a.global, s)))
    }
}

/// What [`Algorithm::adapt`] knows: the evaluation round, the client, the global model and the
/// local training settings.
pub struct AdaptCtx<'a> {
    pub round: u32,
    pub client: ClientId,
    pub seed: u64,
    pub global: &'a Params,
    pub train: &'a LocalTrain,
}

impl AdaptCtx<'_> {
    /// A random stream for `purpose`, derived from (seed, purpose, round, client).
    pub fn rng(&self, purpose: &str) -> RngStream {
        RngStream::derive(self.seed, purpose, self.round as u64, self.client as u64)
    }
}

/// A type-erased algorithm state.
pub trait AnyState: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Serialise (for checkpoints and the wire).
    fn to_bytes(&self) -> Result<Vec<u8>>;
}

impl<T: State> AnyState for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn to_bytes(&self) -> Result<Vec<u8>> {
        crate::codec::to_bytes(self, "state")
    }
}

/// An [`Algorithm`] behind a trait object, so the registry can build one by name. Implemented
/// for every `Algorithm`; engines use this.
pub trait DynAlgorithm: Send + Sync {
    fn straggler_policy(&self) -> StragglerPolicy;
    fn reads_updates(&self) -> bool;
    fn new_client_state(&self) -> Box<dyn AnyState>;
    fn new_server_state(&self) -> Box<dyn AnyState>;
    fn client_state_from_bytes(&self, b: &[u8]) -> Result<Box<dyn AnyState>>;
    fn server_state_from_bytes(&self, b: &[u8]) -> Result<Box<dyn AnyState>>;
    fn cohort(&self, sc: &SampleCtx, s: &dyn AnyState) -> Result<Option<Vec<ClientId>>>;
    fn broadcast(&self, r: &RoundCtx, s: &dyn AnyState) -> Result<Extras>;
    fn personal_downlink(
        &self,
        r: &RoundCtx,
        s: &dyn AnyState,
        client: ClientId,
        m: &dyn Model,
    ) -> Result<Option<PersonalDownlink>>;
    fn keeps_client_models(&self) -> bool;
    fn needs_unlabeled_data(&self) -> bool;
    fn combines_updates_itself(&self) -> bool;
    fn check_setup(&self, m: &dyn Model, loss_is_cross_entropy: bool) -> Result<()>;
    fn supports_architectures(&self) -> bool;
    fn supports_masks(&self) -> bool;
    fn architecture_model(&self, s: &dyn AnyState, layout: &crate::Layout) -> Result<Option<Params>>;
    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, st: &mut dyn AnyState)
    -> Result<Update>;
    fn commit(&self, cx: &ClientCtx, sent: &Update, st: &mut dyn AnyState) -> Result<()>;
    fn server_update(&self, r: &RoundCtx, w: &mut Params, s: &mut dyn AnyState, agg: &Aggregate) -> Result<Metrics>;
    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut dyn AnyState,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics>;
    fn personalize(&self, global: &Params, st: &dyn AnyState) -> Result<Option<Params>>;
    fn adapt(
        &self,
        a: &AdaptCtx,
        server: &dyn AnyState,
        st: Option<&dyn AnyState>,
        m: &mut dyn Model,
        d: &ClientData,
    ) -> Result<Option<Params>>;
}

fn downcast<T: 'static>(s: &dyn AnyState) -> Result<&T> {
    s.as_any().downcast_ref::<T>().ok_or_else(|| Error::Method("algorithm state of the wrong type".into()))
}
fn downcast_mut<T: 'static>(s: &mut dyn AnyState) -> Result<&mut T> {
    s.as_any_mut().downcast_mut::<T>().ok_or_else(|| Error::Method("algorithm state of the wrong type".into()))
}
fn from_bytes<T: State>(b: &[u8]) -> Result<Box<dyn AnyState>> {
    if b.is_empty() {
        // A stateless rule's saved state (e.g. a checkpoint from before the rule kept one).
        return Ok(Box::new(T::default()));
    }
    let v: T = crate::codec::from_bytes(b, "saved state")?;
    Ok(Box::new(v))
}

impl<A: Algorithm> DynAlgorithm for A {
    fn straggler_policy(&self) -> StragglerPolicy {
        Algorithm::straggler_policy(self)
    }
    fn reads_updates(&self) -> bool {
        Algorithm::reads_updates(self)
    }
    fn new_client_state(&self) -> Box<dyn AnyState> {
        Box::new(A::Client::default())
    }
    fn new_server_state(&self) -> Box<dyn AnyState> {
        Box::new(A::Server::default())
    }
    fn client_state_from_bytes(&self, b: &[u8]) -> Result<Box<dyn AnyState>> {
        from_bytes::<A::Client>(b)
    }
    fn server_state_from_bytes(&self, b: &[u8]) -> Result<Box<dyn AnyState>> {
        from_bytes::<A::Server>(b)
    }
    fn cohort(&self, sc: &SampleCtx, s: &dyn AnyState) -> Result<Option<Vec<ClientId>>> {
        Ok(Algorithm::cohort(self, sc, downcast::<A::Server>(s)?))
    }
    fn broadcast(&self, r: &RoundCtx, s: &dyn AnyState) -> Result<Extras> {
        Ok(Algorithm::broadcast(self, r, downcast::<A::Server>(s)?))
    }
    fn personal_downlink(
        &self,
        r: &RoundCtx,
        s: &dyn AnyState,
        client: ClientId,
        m: &dyn Model,
    ) -> Result<Option<PersonalDownlink>> {
        Algorithm::personal_downlink(self, r, downcast::<A::Server>(s)?, client, m)
    }
    fn keeps_client_models(&self) -> bool {
        Algorithm::keeps_client_models(self)
    }
    fn needs_unlabeled_data(&self) -> bool {
        Algorithm::needs_unlabeled_data(self)
    }
    fn combines_updates_itself(&self) -> bool {
        Algorithm::combines_updates_itself(self)
    }
    fn check_setup(&self, m: &dyn Model, loss_is_cross_entropy: bool) -> Result<()> {
        Algorithm::check_setup(self, m, loss_is_cross_entropy)
    }
    fn supports_architectures(&self) -> bool {
        Algorithm::supports_architectures(self)
    }
    fn supports_masks(&self) -> bool {
        Algorithm::supports_masks(self)
    }
    fn architecture_model(&self, s: &dyn AnyState, layout: &crate::Layout) -> Result<Option<Params>> {
        Ok(Algorithm::architecture_model(self, downcast::<A::Server>(s)?, layout))
    }
    fn client_update(
        &self,
        cx: &ClientCtx,
        m: &mut dyn Model,
        d: &ClientData,
        st: &mut dyn AnyState,
    ) -> Result<Update> {
        Algorithm::client_update(self, cx, m, d, downcast_mut::<A::Client>(st)?)
    }
    fn commit(&self, cx: &ClientCtx, sent: &Update, st: &mut dyn AnyState) -> Result<()> {
        Algorithm::commit(self, cx, sent, downcast_mut::<A::Client>(st)?)
    }
    fn server_update(&self, r: &RoundCtx, w: &mut Params, s: &mut dyn AnyState, agg: &Aggregate) -> Result<Metrics> {
        Algorithm::server_update(self, r, w, downcast_mut::<A::Server>(s)?, agg)
    }
    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut dyn AnyState,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        Algorithm::server_step(self, r, w, downcast_mut::<A::Server>(s)?, agg, view)
    }
    fn personalize(&self, global: &Params, st: &dyn AnyState) -> Result<Option<Params>> {
        Ok(Algorithm::personalize(self, global, downcast::<A::Client>(st)?))
    }
    fn adapt(
        &self,
        a: &AdaptCtx,
        server: &dyn AnyState,
        st: Option<&dyn AnyState>,
        m: &mut dyn Model,
        d: &ClientData,
    ) -> Result<Option<Params>> {
        let st = st.map(downcast::<A::Client>).transpose()?;
        Algorithm::adapt(self, a, downcast::<A::Server>(server)?, st, m, d)
    }
}

/// What an aggregator may look at beyond the updates: a model object, the pooled training data
/// (a server root set or probe inputs are drawn from it: simulation only) and the clients'
/// local training settings (FLTrust trains a server update like a client).
pub struct AggregatorView<'a> {
    pub model: &'a mut dyn Model,
    pub server_data: &'a ClientData,
    pub train: &'a LocalTrain,
    /// Worker threads with models of their own, for model work on many updates (DeepSight's
    /// DDifs); `None` runs that work on `model`, one job after another.
    pub workers: Option<&'a mut dyn ModelPool>,
}

impl AggregatorView<'_> {
    /// `job(model, i)` for i in 0..n, on the workers when there are some; results in job order,
    /// so they never depend on the thread count.
    pub fn map_models<T: Send>(&mut self, n: usize, job: impl Fn(&mut dyn Model, usize) -> T + Sync) -> Vec<T> {
        let Some(pool) = self.workers.as_deref_mut() else {
            return (0..n).map(|i| job(&mut *self.model, i)).collect();
        };
        let slots: Vec<std::sync::Mutex<Option<T>>> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
        pool.run(n, &|m: &mut dyn Model, i: usize| {
            let out = job(m, i);
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
        });
        slots
            .into_iter()
            .map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner()).expect("ModelPool::run ran every job"))
            .collect()
    }
}

/// Parallel model work (the engine's workers): `run(n, job)` calls `job(model, i)` exactly once
/// for every i in 0..n, across threads, each thread with a model object of its own.
pub trait ModelPool {
    fn run(&mut self, n: usize, job: &(dyn Fn(&mut dyn Model, usize) + Sync));
}

/// Combines the cohort's updates: a mean, or a robust rule. Fills `accepted`.
pub trait Aggregator: Send {
    fn aggregate(&mut self, r: &RoundCtx, updates: &[Update]) -> Result<Aggregate>;
    /// [`Aggregator::aggregate`] with the server's view (the engine calls this); default: the
    /// view is not used. FLTrust (a root-set update) and DeepSight (the model's outputs on probe
    /// inputs) override it.
    fn aggregate_with(&mut self, r: &RoundCtx, updates: &[Update], _view: &mut AggregatorView) -> Result<Aggregate> {
        self.aggregate(r, updates)
    }
    /// True when the rule keeps or rejects whole updates (Krum, FLAME, ...): its `accepted` is
    /// then a detection decision, and runs log `detect_tpr` and `detect_fpr` against the threat
    /// model. Coordinate-wise rules (median, trimmed mean) reject no one and return false.
    fn filters(&self) -> bool {
        false
    }
    /// Check that the rule can aggregate cohorts of `n` updates (Krum needs n > 2f + 2), with
    /// an error naming the key; called with `sampling.per_round` when the config is read.
    fn check_cohort(&self, _n: usize) -> Result<()> {
        Ok(())
    }
    /// State kept across rounds (momentum, client histories), saved in checkpoints.
    fn state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restore what [`Aggregator::state`] saved.
    fn load_state(&mut self, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// A pipeline stage: clipping, DP, compression, attacks, filters. Client-side hooks run in the
/// declared order; server-side hooks in reverse order. `mem` is this stage's persistent memory
/// for this client (e.g. an error-feedback residual), saved in checkpoints.
pub trait Stage: Send + Sync {
    /// On the server, before the round's clients run: the cohort and each member's sample
    /// count (`sizes[i]` for `r.cohort[i]`). A stage that plans the round (DAdaQuant's levels)
    /// sets it here; in a deployment the plan travels with the broadcast.
    fn on_round_start(&mut self, _r: &RoundCtx, _sizes: &[usize]) -> Result<()> {
        Ok(())
    }
    /// Before local training, on the client's data.
    fn on_data(&self, _cx: &ClientCtx, _d: &mut ClientData, _mem: &mut Extras) -> Result<()> {
        Ok(())
    }
    /// Before local training, with the client's model object (the architecture the global
    /// model runs on): a stage that probes the shared model first (GAN leakage's generator)
    /// overrides this. The engine calls this one; the default is [`Stage::on_data`].
    fn on_data_with_model(
        &self,
        cx: &ClientCtx,
        _model: &mut dyn Model,
        d: &mut ClientData,
        mem: &mut Extras,
    ) -> Result<()> {
        self.on_data(cx, d, mem)
    }
    /// After local training, on the client's update.
    fn on_update(&self, _cx: &ClientCtx, _u: &mut Update, _mem: &mut Extras) -> Result<()> {
        Ok(())
    }
    /// On the server, on the whole cohort before aggregation.
    fn on_cohort(&mut self, _r: &RoundCtx, _us: &mut Vec<Update>) -> Result<()> {
        Ok(())
    }
    /// On the server, on the aggregate before the server rule.
    fn on_aggregate(&mut self, _r: &RoundCtx, _a: &mut Aggregate) -> Result<()> {
        Ok(())
    }
    /// A training-time hook for this client's local training (it sees every gradient after the
    /// algorithm's hook, and the weights after every optimiser step): Neurotoxin's projection,
    /// constrain-and-scale's anomaly term. Default: none.
    fn train_hook<'a>(&'a self, _cx: &ClientCtx<'a>, _mem: &'a Extras) -> Result<Option<Box<dyn GradHook + 'a>>> {
        Ok(None)
    }
    /// A local step rule for this client that replaces the configured one (`inner`, which it
    /// may call): the blind backdoor's two-task loss. At most one stage per client may return
    /// one. Default: none.
    fn local_step<'a>(
        &'a self,
        _cx: &ClientCtx<'a>,
        _inner: &'a dyn LocalStep,
    ) -> Result<Option<Box<dyn LocalStep + 'a>>> {
        Ok(None)
    }
    /// Evaluation sets this stage defines, built from the global test set: a backdoor attack's
    /// triggered test images (`backdoor_acc`). Every evaluation round records the global
    /// model's accuracy on each, under its name.
    fn evals(&self, _test: &ClientData) -> Result<Vec<(String, ClientData)>> {
        Ok(Vec::new())
    }
    /// Once, before the first round: what the run looks like (population, cohort sampling,
    /// rounds, aggregator). A stage whose correctness depends on it checks it here (DP's
    /// accountant must match the sampling) and refuses a mismatch with an error naming the key.
    fn prepare(&mut self, _run: &RunInfo) -> Result<()> {
        Ok(())
    }
    /// True for a stage that makes every round's release differentially private: the engine
    /// then runs the server stages on rounds whose (Poisson) cohort is empty too, so that those
    /// rounds are noised like the others.
    fn noises_every_round(&self) -> bool {
        false
    }
    /// Server-side state kept across rounds (an accountant, a residual), saved in checkpoints.
    fn state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Restore what [`Stage::state`] saved.
    fn load_state(&mut self, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// How each round's cohort is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CohortSampling {
    /// A uniform subset of exactly `per_round` clients (without replacement).
    FixedSize { per_round: usize },
    /// Each client independently with probability `rate`.
    Poisson { rate: f64 },
}

/// What a stage learns about the run before the first round ([`Stage::prepare`]).
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Clients in the federation.
    pub population: usize,
    pub sampling: CohortSampling,
    pub rounds: u32,
    /// The registered names of the configured algorithm and aggregator.
    pub algorithm: String,
    pub aggregator: String,
    /// The registered name of the local step rule (`[local] use`).
    pub local_step: String,
}

/// Moves a round's work to clients and their updates back: in-process (rayon) or networked.
pub trait Transport: Send {
    fn run_clients(
        &mut self,
        r: &RoundCtx,
        down: &Downlink,
        ids: &[ClientId],
    ) -> Result<Vec<std::result::Result<Update, ClientFailure>>>;
}
