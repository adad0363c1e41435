//! HeteroFL: Diao, Ding, Tarokh, "HeteroFL: Computation and Communication Efficient Federated
//! Learning for Heterogeneous Clients", ICLR 2021.
//!
//! Clients have capability levels: a client at level k trains the sub-model of width rate r_k,
//! the first ⌈r_k c⌉ units of every hidden layer ([`fedkit_core::Model::width_scaled`]; the
//! full model is r = 1). Each round:
//! - the server sends client i the leading blocks of the global model at its rate
//!   (`bytes_down` counts the sub-model's values);
//! - the client trains it with the Scaler (each hidden layer's output divided by r in
//!   training, so the sub-model's activations have the full model's scale) and the masked
//!   label loss ("Masking CE", as the reference code does it: the logits of the classes it has
//!   no sample of are set to 0, a constant in the softmax, and get no gradient), and sends the
//!   change of its sub-model as one wire `Slice` block per tensor (`bytes_up` is the
//!   sub-model's size), with the list of its classes under the mask;
//! - the server averages every coordinate over the clients whose sub-model holds it
//!   (per-coordinate counts, weighted as the aggregator weighted the round: by sample count,
//!   or uniformly): `w[j] += Σ_{i∋j} n_i Δ_i[j] / Σ_{i∋j} n_i`; under the mask, a class's
//!   output weights and bias count only the clients that have that class; a coordinate no
//!   client of the round holds keeps its value.
//!
//! The global model is the one inference model (`test_acc`: full width, no Scaler, no mask).
//! Round metrics: `heterofl_rate_mean` (the mean rate of the accepted updates) and
//! `heterofl_covered` (the fraction of coordinates some accepted update held).
//!
//! The global model is the widest clients' model (as in the paper): `[model]` gives its widths,
//! and some level with a share must have rate 1 (else part of it would never train).
//!
//! Parameters: `rates` (r_k, default the paper's levels a-e: 1, 1/2, 1/4, 1/8, 1/16);
//! `shares` (the fraction of clients at each level, default equal); `assignment`: `"fixed"`
//! (default: a client draws its level once, from the stream (seed, "heterofl_level", client),
//! by the shares) or `"dynamic"` (a fresh draw every round, the paper's dynamic mode);
//! `masked_labels` (default true); `sbn_samples` (default 2048).
//!
//! Static batch norm (sBN, for `norm = "batch"`): running statistics are never averaged; after
//! each round the server sets the global model's to the batch statistics of one training-mode
//! pass over up to `sbn_samples` samples of the round's clients (equal numbers from each), as
//! the paper's server queries the clients for their statistics. The clients train with batch
//! statistics, as sBN does.
//!
//! With every rate 1 and `masked_labels = false` HeteroFL is FedAvg under `mean` bit for bit
//! (tested). The aggregator filters the updates, but its own combination (a median, server-side
//! noise) is not used, as in IFCA: DP stages are refused when the config is read, and an
//! aggregator's own noise (`weak_dp`, `crfl`) is dropped. A filtering aggregator scores the
//! zero-padded updates, in which sub-model clients look alike. Not built: sub-models of
//! convolutional models (only `mlp` has [`fedkit_core::Model::width_scaled`]). A compressor stage after a sub-model client (its
//! update is already its wire form) and pipeline stages with training-time hooks (they see the
//! full model's coordinates) are refused for rates below 1.
//!
//! ```toml
//! [algorithm]
//! use = "heterofl"
//! rates = [1.0, 0.25]
//! shares = [0.5, 0.5]
//! assignment = "fixed"
//! masked_labels = true
//! sbn_samples = 2048
//!
//! [model]
//! use = "mlp"
//! ```

use fedkit_core::{
    Aggregate, Algorithm, BATCH_STREAM, ClientCtx, ClientData, ClientId, Error, Extra, Extras, Head, Loss, LossRun,
    Metrics, Model, NoHook, OutputGrads, Outputs, ParamKind, Params, PersonalDownlink, Result, RngStream, RoundCtx,
    ServerView, SubModel, Update, Weighting, local_update_from,
};
use serde::{Deserialize, Serialize};

/// The update extra listing the classes a client trained under the label mask (1 or 0 each).
const CLASSES: &str = "heterofl_classes";

/// How clients get their capability level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    /// Drawn once per client.
    #[default]
    Fixed,
    /// Drawn afresh every round.
    Dynamic,
}

/// HeteroFL's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeteroFl {
    /// The width rate r_k of each level.
    pub rates: Vec<f64>,
    /// The fraction of clients at each level (empty: equal).
    pub shares: Vec<f64>,
    pub assignment: Assignment,
    /// The masked label loss.
    pub masked_labels: bool,
    /// Samples of static batch norm's pass (models with batch norm).
    pub sbn_samples: usize,
}

impl Default for HeteroFl {
    fn default() -> Self {
        HeteroFl {
            rates: vec![1.0, 0.5, 0.25, 0.125, 0.0625],
            shares: Vec::new(),
            assignment: Assignment::Fixed,
            masked_labels: true,
            sbn_samples: 2048,
        }
    }
}

impl HeteroFl {
    /// Check the parameters (equal shares when none are given).
    pub fn validated(mut self) -> Result<Self> {
        if self.rates.is_empty() || self.rates.iter().any(|&r| !(r > 0.0 && r <= 1.0)) {
            return Err(Error::config("rates", format!("{:?}: give one or more rates in (0, 1]", self.rates)));
        }
        if self.shares.is_empty() {
            self.shares = vec![1.0 / self.rates.len() as f64; self.rates.len()];
        }
        let sum: f64 = self.shares.iter().sum();
        let widest =
            self.rates.iter().zip(&self.shares).filter(|(_, s)| **s > 0.0).map(|(r, _)| *r).fold(0.0, f64::max);
        if self.shares.len() == self.rates.len() && widest < 1.0 {
            return Err(Error::config(
                "rates",
                format!(
                    "{:?}: no level with a share has rate 1, so part of the global model would never train; the global model is the widest clients' model: set model.hidden to their widths and their rate to 1",
                    self.rates
                ),
            ));
        }
        if self.shares.len() != self.rates.len() || self.shares.iter().any(|&s| !(s >= 0.0)) || (sum - 1.0).abs() > 1e-6
        {
            return Err(Error::config(
                "shares",
                format!(
                    "{:?}: one non-negative share per rate ({} rates), summing to 1",
                    self.shares,
                    self.rates.len()
                ),
            ));
        }
        Ok(self)
    }

    /// The width rate of `client` in `round`.
    pub fn rate_of(&self, seed: u64, round: u32, client: ClientId) -> f64 {
        let when = if self.assignment == Assignment::Dynamic { round as u64 } else { 0 };
        let u = RngStream::derive(seed, "heterofl_level", when, client as u64).uniform();
        let mut below = 0.0;
        for (r, s) in self.rates.iter().zip(&self.shares) {
            below += s;
            if u < below {
                return *r;
            }
        }
        // Rounding left u above the last cumulative share: the last level with a share.
        let last = self.shares.iter().rposition(|&s| s > 0.0).unwrap_or(0);
        self.rates[last]
    }

    /// The sub-model of `m` at `rate`, or `None` at rate 1.
    fn sub_model(m: &dyn Model, rate: f64) -> Result<Option<(Box<dyn Model>, SubModel)>> {
        if rate >= 1.0 {
            return Ok(None);
        }
        let sub = m.width_scaled(rate)?;
        let map = SubModel::new(m.layout(), sub.layout())?;
        Ok(Some((sub, map)))
    }
}

/// HeteroFL's static batch norm (sBN): the global model's running statistics become the batch
/// statistics of one training-mode pass over `batch` (the round's clients' samples), instead of
/// an average of the sub-models' running statistics. The model API records
/// `r <- (1 - m) r + m s`; two passes, from r = 0 and from r = 1, recover the momentum m and the
/// statistic s without knowing m.
pub fn static_batch_norm(m: &mut dyn Model, w: &mut Params, batch: &fedkit_core::Batch) -> Result<()> {
    let layout = w.layout().clone();
    let buffers: Vec<std::ops::Range<usize>> =
        layout.entries().iter().filter(|e| e.kind == ParamKind::Buffer).map(|e| e.range()).collect();
    if buffers.is_empty() || batch.is_empty() {
        return Ok(());
    }
    let pass = |m: &mut dyn Model, fill: f32| -> Result<Params> {
        let mut p = w.clone();
        buffers.iter().for_each(|r| p.as_mut_slice()[r.clone()].fill(fill));
        let mut nothing = |out: &Outputs, _: &fedkit_core::Batch, g: &mut OutputGrads| -> Result<f32> {
            g.logits.clear();
            g.logits.resize(out.logits.len(), 0.0);
            g.features.clear();
            Ok(0.0)
        };
        m.vjp(&mut p, batch, fedkit_core::Mode::Train, &mut nothing, None, None, &mut RngStream::new(0))?;
        Ok(p)
    };
    let (a, b) = (pass(m, 0.0)?, pass(m, 1.0)?);
    for r in &buffers {
        for j in r.clone() {
            let momentum = 1.0 - (b.as_slice()[j] - a.as_slice()[j]);
            if momentum > 0.0 {
                w.as_mut_slice()[j] = a.as_slice()[j] / momentum;
            }
        }
    }
    Ok(())
}

impl HeteroFl {
    /// The samples static batch norm passes the global model over: up to `sbn_samples` from
    /// the accepted clients' training data, the same number from each (as the server queries
    /// the clients for their statistics), drawn from the stream (seed, "heterofl_sbn", round).
    fn sbn_batch(&self, r: &RoundCtx, view: &ServerView) -> Result<fedkit_core::Batch> {
        let mut rng = RngStream::derive(r.seed, "heterofl_sbn", r.round as u64, 0);
        let mut batch = fedkit_core::Batch::default();
        let holders: Vec<&ClientData> =
            view.updates.iter().filter_map(|u| view.clients.get(u.client as usize)).filter(|d| !d.is_empty()).collect();
        let each = self.sbn_samples.div_ceil(holders.len().max(1));
        let mut part = fedkit_core::Batch::default();
        for d in holders {
            let ids = rng.choose(d.len(), each.min(d.len()));
            part.fill(d, &ids, &mut rng);
            batch.x.extend_from_slice(&part.x);
            batch.y.extend_from_slice(&part.y);
            batch.feature_shape.clone_from(&part.feature_shape);
            batch.classes = part.classes;
        }
        Ok(batch)
    }
}

/// The classes `d` has samples of.
fn present_classes(d: &ClientData) -> Vec<bool> {
    let mut present = vec![false; d.data.classes];
    for p in 0..d.len() {
        present[d.label(p) as usize] = true;
    }
    present
}

/// A loss whose logits of absent classes are 0 and get no gradient (HeteroFL's Masking CE
/// around any configured loss).
struct MaskedLabels<'a> {
    inner: &'a dyn Loss,
    present: Vec<bool>,
}

struct MaskedHead<'a> {
    inner: Box<dyn Head + Send + 'a>,
    present: &'a [bool],
    masked: Outputs,
}

impl Head for MaskedHead<'_> {
    fn value_grad(&mut self, out: &Outputs, batch: &fedkit_core::Batch, g: &mut OutputGrads) -> Result<f32> {
        let c = out.classes;
        if c != self.present.len() {
            return Err(Error::Shape(format!("{c} logits for a mask of {} classes", self.present.len())));
        }
        self.masked.clone_from(out);
        let keep = |k: usize| self.present[k % c];
        self.masked.logits.iter_mut().enumerate().filter(|(k, _)| !keep(*k)).for_each(|(_, z)| *z = 0.0);
        let value = self.inner.value_grad(&self.masked, batch, g)?;
        g.logits.iter_mut().enumerate().filter(|(k, _)| !keep(*k)).for_each(|(_, v)| *v = 0.0);
        Ok(value)
    }
}

impl Loss for MaskedLabels<'_> {
    fn head(&self, run: &mut LossRun) -> Result<Box<dyn Head + Send + '_>> {
        Ok(Box::new(MaskedHead { inner: self.inner.head(run)?, present: &self.present, masked: Outputs::default() }))
    }
}

impl Algorithm for HeteroFl {
    type Client = ();
    type Server = ();

    fn reads_updates(&self) -> bool {
        true
    }

    fn supports_masks(&self) -> bool {
        false
    }

    fn combines_updates_itself(&self) -> bool {
        true
    }

    fn check_setup(&self, m: &dyn Model, _loss_is_cross_entropy: bool) -> Result<()> {
        for &r in self.rates.iter().filter(|&&r| r < 1.0) {
            Self::sub_model(m, r).map_err(|e| Error::config("model.use", e.to_string()))?;
        }
        Ok(())
    }

    fn personal_downlink(
        &self,
        r: &RoundCtx,
        _s: &(),
        client: ClientId,
        m: &dyn Model,
    ) -> Result<Option<PersonalDownlink>> {
        Ok(Self::sub_model(m, self.rate_of(r.seed, r.round, client))?
            .map(|(_, map)| PersonalDownlink { extras: Extras::default(), model_values: Some(map.len()) }))
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, _st: &mut ()) -> Result<Update> {
        let masked = self.masked_labels.then(|| MaskedLabels { inner: cx.loss, present: present_classes(d) });
        let loss: &dyn Loss = masked.as_ref().map_or(cx.loss, |l| l as &dyn Loss);
        // The server averages the output layer's class k over the clients that train it.
        let classes = masked.as_ref().map(|l| Extra::Vector(l.present.iter().map(|&p| p as u8 as f32).collect()));
        let Some((mut sub, map)) = Self::sub_model(m, self.rate_of(cx.seed, cx.round, cx.client))? else {
            let cx = ClientCtx { loss, ..*cx };
            let mut u = local_update_from(&cx, cx.global.clone(), BATCH_STREAM, m, d, &mut NoHook)?.0;
            if let Some(c) = classes {
                u.extras.insert(CLASSES, c);
            }
            return Ok(u);
        };
        if cx.train_hook.is_some() {
            return Err(Error::config(
                "pipeline",
                "a stage's training-time hook sees the full model's coordinates, and a heterofl client below rate 1 trains a sub-model: drop the stage or use rates = [1.0]",
            ));
        }
        let start = map.extract(cx.global)?;
        let sub_cx = ClientCtx { global: &start, loss, ..*cx };
        let (mut u, _) = local_update_from(&sub_cx, start.clone(), BATCH_STREAM, sub.as_mut(), d, &mut NoHook)?;
        if let Some(c) = classes {
            u.extras.insert(CLASSES, c);
        }
        let blocks = map.wire_blocks(&u.delta)?;
        u.delta = map.scatter(&u.delta)?;
        crate::compression::send(&mut u, blocks)?;
        Ok(u)
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        _s: &mut (),
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        let weighted = agg.weighting == Weighting::UpdateWeights;
        let n = w.len();
        let output = if self.masked_labels { Some(w.layout().output_layer()?) } else { None };
        // Running statistics are not averaged: static batch norm recomputes them below.
        let buffer: Vec<bool> = {
            let mut b = vec![false; n];
            for e in w.layout().entries().iter().filter(|e| e.kind == ParamKind::Buffer) {
                b[e.range()].iter_mut().for_each(|v| *v = true);
            }
            b
        };
        let (mut acc, mut total) = (vec![0.0f64; n], vec![0.0f64; n]);
        let mut maps: Vec<(u64, Option<SubModel>)> = Vec::new();
        let mut rate_sum = 0.0;
        for u in view.updates {
            if u.delta.len() != n {
                return Err(Error::Shape(format!("client {}: {} values for a model of {n}", u.client, u.delta.len())));
            }
            let rate = self.rate_of(r.seed, r.round, u.client);
            rate_sum += rate;
            let at = match maps.iter().position(|(b, _)| *b == rate.to_bits()) {
                Some(i) => i,
                None => {
                    maps.push((rate.to_bits(), Self::sub_model(&*view.model, rate)?.map(|(_, m)| m)));
                    maps.len() - 1
                }
            };
            let ranges: Vec<std::ops::Range<usize>> = match &maps[at].1 {
                Some(m) => m.covered().collect(),
                None => vec![0..n],
            };
            // Under the label mask, the output weights and biases of the classes the client
            // has no sample of are not its to average (their delta is 0 by the mask).
            let absent = |j: usize| -> Result<bool> {
                let Some((ow, ob, c)) = &output else { return Ok(false) };
                let k = if ow.contains(&j) {
                    (j - ow.start) % c
                } else if ob.contains(&j) {
                    j - ob.start
                } else {
                    return Ok(false);
                };
                match u.extras.get(CLASSES) {
                    Some(Extra::Vector(p)) if p.len() == *c => Ok(p[k] == 0.0),
                    _ => Err(Error::Method(format!(
                        "heterofl: client {}'s update carries no class list (`{CLASSES}`); a pipeline stage removed its extras",
                        u.client
                    ))),
                }
            };
            let wt = if weighted { u.weight as f64 } else { 1.0 };
            let d = u.delta.as_slice();
            for range in ranges {
                for j in range {
                    if buffer[j] || absent(j)? {
                        continue;
                    }
                    acc[j] += wt * d[j] as f64;
                    total[j] += wt;
                }
            }
        }
        let mut delta = w.zeros_like();
        let mut covered = 0usize;
        for (j, v) in delta.as_mut_slice().iter_mut().enumerate() {
            if total[j] > 0.0 {
                *v = (acc[j] / total[j]) as f32;
                covered += 1;
            }
        }
        w.axpy(1.0, &delta);
        if buffer.contains(&true) {
            let batch = self.sbn_batch(r, view)?;
            static_batch_norm(&mut *view.model, w, &batch)?;
        }
        let mut m = Metrics::new();
        m.insert("heterofl_covered".into(), covered as f64 / n.max(1) as f64);
        m.insert("heterofl_rate_mean".into(), rate_sum / view.updates.len().max(1) as f64);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::fedavg::FedAvg;
    use crate::algorithms::testing::small_fed;
    use fedkit_core::{Batch, CrossEntropy, Layout, RngStream};
    use std::sync::Arc;

    fn full_width() -> HeteroFl {
        HeteroFl { rates: vec![1.0], shares: vec![1.0], masked_labels: false, ..HeteroFl::default() }
    }

    #[test]
    fn every_rate_one_is_fedavg_bit_for_bit() {
        let (mut a, mut b) = (small_fed(full_width(), &[8, 8, 8], 4), small_fed(FedAvg {}, &[8, 8, 8], 4));
        for round in 1..=3 {
            let (_, ua) = a.clients_round(round, &[0, 2]);
            let (_, ub) = b.clients_round(round, &[0, 2]);
            for (x, y) in ua.iter().zip(&ub) {
                assert_eq!(x.delta, y.delta);
            }
            a.server_round(round, &ua);
            b.server_round(round, &ub);
            assert_eq!(a.global, b.global, "round {round}");
        }
    }

    /// A two-tensor test model whose sub-model at rate r keeps the first ⌈4r⌉ columns.
    struct Sliceable(usize);

    impl Model for Sliceable {
        fn clone_box(&self) -> Box<dyn Model> {
            Box::new(Sliceable(self.0))
        }
        fn layout(&self) -> Arc<Layout> {
            let mut l = Layout::new();
            l.push("w", &[2, self.0], ParamKind::Weight);
            l.push("b", &[self.0], ParamKind::Bias);
            Arc::new(l)
        }
        fn init(&self, _rng: &mut RngStream) -> Params {
            Params::zeros(self.layout())
        }
        fn width_scaled(&self, rate: f64) -> Result<Box<dyn Model>> {
            Ok(Box::new(Sliceable((self.0 as f64 * rate).ceil() as usize)))
        }
    }

    // Client 0 (rate 1) and client 1 (rate 1/2) with 1 and 3 samples: the coordinates both
    // hold get the weighted mean of both deltas, the rest client 0's delta alone.
    #[test]
    fn each_coordinate_averages_over_the_clients_that_hold_it() {
        let algo =
            HeteroFl { rates: vec![1.0, 0.5], shares: vec![0.5, 0.5], ..HeteroFl::default() }.validated().unwrap();
        let seed = (0..200u64)
            .find(|&s| algo.rate_of(s, 1, 0) == 1.0 && algo.rate_of(s, 1, 1) == 0.5)
            .expect("a seed with one client at each level");
        let mut model = Sliceable(4);
        let layout = model.layout();
        let map = SubModel::new(layout.clone(), model.width_scaled(0.5).unwrap().layout()).unwrap();
        let big = Params::from_vec(layout.clone(), vec![1.0; 12]).unwrap();
        let small = map.scatter(&Params::from_vec(map.layout().clone(), vec![5.0; 6]).unwrap()).unwrap();
        let ups = vec![
            Update { client: 0, delta: big, weight: 1.0, extras: classes(&[1.0; 4]), metrics: Metrics::new() },
            Update { client: 1, delta: small, weight: 3.0, extras: classes(&[1.0; 4]), metrics: Metrics::new() },
        ];
        let agg = crate::aggregators::mean::weighted_mean(&ups, true).unwrap();
        let mut w = Params::zeros(layout);
        let r =
            RoundCtx { round: 1, cohort: &[0, 1], global: &w.clone(), seed, population: 2, malicious: &[], draws: &[] };
        let mut view =
            ServerView { updates: &ups, model: &mut model, clients: &[], unlabeled: None, architectures: &mut [] };
        let m = algo.server_step(&r, &mut w, &mut (), &agg, &mut view).unwrap();
        // w rows [c0 c1 c2 c3] x 2, then b [c0..c3]: columns 0-1 are shared.
        let shared = (1.0 + 3.0 * 5.0) / 4.0;
        let want = [shared, shared, 1.0, 1.0, shared, shared, 1.0, 1.0, shared, shared, 1.0, 1.0];
        assert_eq!(w.as_slice(), &want);
        assert_eq!((m["heterofl_covered"], m["heterofl_rate_mean"]), (1.0, 0.75));
    }

    fn classes(present: &[f32]) -> Extras {
        let mut e = Extras::default();
        e.insert(CLASSES, Extra::Vector(present.to_vec()));
        e
    }

    // Under the label mask each class's output weights and bias average over the clients that
    // have the class (the test model is all output layer: w [2, 4], b [4]); without the mask,
    // over every client.
    #[test]
    fn masked_classes_average_over_the_clients_that_have_them() {
        let mut model = Sliceable(4);
        let layout = model.layout();
        let ups = vec![
            Update {
                client: 0,
                delta: Params::from_vec(layout.clone(), vec![2.0; 12]).unwrap(),
                weight: 1.0,
                extras: classes(&[1.0, 1.0, 0.0, 0.0]),
                metrics: Metrics::new(),
            },
            Update {
                client: 1,
                delta: Params::from_vec(layout.clone(), vec![4.0; 12]).unwrap(),
                weight: 1.0,
                extras: classes(&[0.0, 0.0, 1.0, 1.0]),
                metrics: Metrics::new(),
            },
        ];
        let agg = crate::aggregators::mean::weighted_mean(&ups, true).unwrap();
        let step = |algo: HeteroFl, model: &mut Sliceable| {
            let mut w = Params::zeros(layout.clone());
            let r = RoundCtx {
                round: 1,
                cohort: &[0, 1],
                global: &w.clone(),
                seed: 1,
                population: 2,
                malicious: &[],
                draws: &[],
            };
            let mut view = ServerView { updates: &ups, model, clients: &[], unlabeled: None, architectures: &mut [] };
            algo.server_step(&r, &mut w, &mut (), &agg, &mut view).unwrap();
            w
        };
        let masked = step(full_width_masked(), &mut model);
        assert_eq!(masked.as_slice(), &[2.0, 2.0, 4.0, 4.0, 2.0, 2.0, 4.0, 4.0, 2.0, 2.0, 4.0, 4.0]);
        let plain = step(full_width(), &mut model);
        assert!(plain.as_slice().iter().all(|&v| v == 3.0));
    }

    fn full_width_masked() -> HeteroFl {
        HeteroFl { masked_labels: true, ..full_width() }
    }

    #[test]
    fn levels_follow_the_shares_and_dynamic_levels_change() {
        let algo = HeteroFl { rates: vec![1.0, 0.25], shares: vec![0.25, 0.75], ..HeteroFl::default() };
        let small = (0..4000).filter(|&c| algo.rate_of(1, 1, c) == 0.25).count();
        assert!((small as f64 / 4000.0 - 0.75).abs() < 0.03, "{small} of 4000 at rate 1/4");
        assert!((0..50).all(|c| algo.rate_of(1, 1, c) == algo.rate_of(1, 9, c)), "fixed levels never change");
        let dynamic = HeteroFl { assignment: Assignment::Dynamic, ..algo };
        assert!((0..50).any(|c| dynamic.rate_of(1, 1, c) != dynamic.rate_of(1, 9, c)));
    }

    #[test]
    fn bad_levels_are_refused_with_the_field() {
        for (rates, shares, field) in
            [(vec![], vec![], "rates"), (vec![0.0], vec![], "rates"), (vec![1.0, 0.5], vec![0.6, 0.6], "shares")]
                .into_iter()
                .chain([(vec![0.5], vec![], "model.hidden"), (vec![1.0, 0.5], vec![0.0, 1.0], "model.hidden")])
        {
            let e = HeteroFl { rates, shares, ..HeteroFl::default() }.validated().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        assert_eq!(HeteroFl::default().validated().unwrap().shares, vec![0.2; 5]);
    }

    // The masked loss: absent classes' logits are 0 and get no gradient; present classes'
    // gradient is the cross-entropy's over the masked logits.
    #[test]
    fn the_masked_label_loss_ignores_absent_classes() {
        let present = vec![true, false, true];
        let mut head = MaskedHead { inner: Box::new(CrossEntropy), present: &present, masked: Outputs::default() };
        let out = Outputs { logits: vec![1.0, 9.0, -1.0, 0.5, -3.0, 2.0], classes: 3, ..Outputs::default() };
        let batch = Batch { x: vec![0.0; 2], y: vec![0, 2], feature_shape: vec![1], classes: 3, targets: Vec::new() };
        let mut g = OutputGrads::default();
        let v = head.value_grad(&out, &batch, &mut g).unwrap();
        assert_eq!((g.logits[1], g.logits[4]), (0.0, 0.0));
        let mut plain = OutputGrads::default();
        let masked = Outputs { logits: vec![1.0, 0.0, -1.0, 0.5, 0.0, 2.0], classes: 3, ..Outputs::default() };
        let want = CrossEntropy.value_grad(&masked, &batch, &mut plain).unwrap();
        assert_eq!(v, want);
        assert_eq!((g.logits[0], g.logits[5]), (plain.logits[0], plain.logits[5]));
    }
}
