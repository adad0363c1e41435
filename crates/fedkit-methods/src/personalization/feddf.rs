//! FedDF: Lin, Kong, Stich, Jaggi, "Ensemble Distillation for Robust Model Fusion in Federated
//! Learning", NeurIPS 2020 (Algorithm 1, one model prototype).
//!
//! Clients train as in FedAvg. The server first averages their models (FedAvg's x_t), then
//! distils the ensemble of the received client models into it on unlabeled data: for each of
//! `steps` mini-batches d of `batch_size` unlabeled samples, the teacher is the softmax of the
//! clients' averaged logits (AVGLOGITS), p = softmax(mean_k f(x_k, d) / T), and the student x
//! takes an Adam step (lr `lr`, PyTorch's defaults otherwise) on
//!   T^2 KL(p || softmax(f(x, d) / T)),
//! the mean over the batch. The unlabeled data are the training samples that no client holds (a
//! run with `data.subsample < 1` leaves the rest of the data set to the server, whose labels are
//! never read; `data.unlabeled_share` of them), as the paper distils on unlabeled data from the same or another domain. The
//! paper early-stops on a validation set; here the number of steps is fixed. Batches come from
//! the server's stream (seed, "feddf_batch", round). Round metrics: `feddf_kl_start` and
//! `feddf_kl_end` (the mean KL of the first and last ten steps). Clients whose updates the
//! aggregator rejected are not in the ensemble.
//!
//! Across architectures (the paper's section 3, one prototype per architecture): with
//! `[[model.per_client]]`, the server keeps a prototype of every group's architecture beside the
//! global model (`[model]`'s prototype). A client trains its architecture's prototype (the
//! engine sends it `architecture_model`, a group's initial model before the group's first
//! round; `bytes_down` counts it); the server averages each architecture's client models into
//! its prototype, then distils every prototype from the ensemble of all the round's client
//! models, whatever their architecture (the teacher averages the logits of models of every
//! architecture). Without groups this is the one-prototype algorithm above, unchanged. Each
//! group's prototype is evaluated on the test set (`test_acc_group<g>`); its distillation's KL
//! is `feddf_kl_start_group<g>` / `feddf_kl_end_group<g>`. With `steps = 0` the server only
//! averages within each architecture: the "FedAvg per architecture" baseline.
//!
//! Parameters: `steps` (distillation steps per round, default 200; the paper's up to 10^4 with
//! early stopping), `batch_size` (default 64), `lr` (Adam's, default 1e-3 as the paper),
//! `temperature` (T, default 1).
//!
//! ```toml
//! [algorithm]
//! use = "feddf"
//! steps = 200
//! batch_size = 64
//! lr = 0.001
//! temperature = 1.0
//!
//! # Optional: a second architecture for half of the clients.
//! [[model.per_client]]
//! use = "lenet"
//! share = 0.5
//! ```

use std::collections::BTreeMap;

use fedkit_core::optim::Optimizer;
use fedkit_core::wire::layout_id;
use fedkit_core::{
    Aggregate, Algorithm, Batch, ClientData, Error, Layout, LocalTrain, Metrics, Mode, Model, OptimizerKind,
    OutputGrads, Outputs, Params, Result, RngStream, RoundCtx, ServerView, Update,
};
use serde::{Deserialize, Serialize};

use super::sample_batch;

/// FedDF's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FedDf {
    /// Server distillation steps per round.
    pub steps: usize,
    /// Unlabeled samples per distillation step.
    pub batch_size: usize,
    /// Adam's learning rate for the distillation.
    pub lr: f64,
    /// The softmax temperature T.
    pub temperature: f64,
}

impl Default for FedDf {
    fn default() -> Self {
        FedDf { steps: 200, batch_size: 64, lr: 1e-3, temperature: 1.0 }
    }
}

impl FedDf {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::config("lr", format!("must be a finite number > 0, got {}", self.lr)));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::config("temperature", format!("must be a finite number > 0, got {}", self.temperature)));
        }
        Ok(self)
    }
}

/// Row-wise softmax of `z / t`.
pub(crate) fn softmax_rows(z: &[f32], classes: usize, t: f64) -> Vec<f64> {
    let mut p = Vec::with_capacity(z.len());
    for row in z.chunks_exact(classes) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
        let e: Vec<f64> = row.iter().map(|&v| ((v as f64 - max) / t).exp()).collect();
        let s: f64 = e.iter().sum();
        p.extend(e.into_iter().map(|v| v / s));
    }
    p
}

/// The teacher of a batch: softmax of the teachers' averaged logits over `t`.
fn teacher(m: &mut dyn Model, teachers: &[&Params], batch: &Batch, t: f64) -> Result<(Vec<f64>, usize)> {
    mixed_teacher(&mut [m], teachers, batch, t)
}

/// [`teacher`] over models of several architectures: each teacher is evaluated by the model
/// of `models` with its layout.
fn mixed_teacher(
    models: &mut [&mut dyn Model],
    teachers: &[&Params],
    batch: &Batch,
    t: f64,
) -> Result<(Vec<f64>, usize)> {
    let mut out = Outputs::default();
    let mut sum: Vec<f64> = Vec::new();
    for p in teachers {
        let m = models
            .iter_mut()
            .find(|m| m.layout() == *p.layout())
            .ok_or_else(|| Error::Method("feddf: a client model of an architecture the run does not have".into()))?;
        m.forward(p, batch, Mode::Eval, &mut out)?;
        if !sum.is_empty() && sum.len() != out.logits.len() {
            return Err(Error::Shape(format!(
                "feddf: teachers give {} and {} logits for one batch",
                sum.len(),
                out.logits.len()
            )));
        }
        sum.resize(out.logits.len(), 0.0);
        sum.iter_mut().zip(&out.logits).for_each(|(s, &z)| *s += z as f64);
    }
    let avg: Vec<f32> = sum.iter().map(|s| (s / teachers.len() as f64) as f32).collect();
    Ok((softmax_rows(&avg, out.classes, t), out.classes))
}

/// Distil the ensemble `teachers` (their averaged logits) into `student` with `cfg.steps` Adam
/// steps on batches of `data` drawn from `rng`; returns the mean KL of the first and of the
/// last ten steps.
pub fn distil(
    m: &mut dyn Model,
    student: &mut Params,
    teachers: &[&Params],
    data: &ClientData,
    cfg: &FedDf,
    rng: &mut RngStream,
) -> Result<(f64, f64)> {
    let t = cfg.temperature;
    distil_with(m, student, data, cfg, None, rng, &mut |m: &mut dyn Model, b: &Batch| teacher(m, teachers, b, t))
}

/// A teacher: the target class probabilities of a batch (row-major) and the class count.
pub type Teacher<'a> = dyn FnMut(&mut dyn Model, &Batch) -> Result<(Vec<f64>, usize)> + 'a;

/// The distillation loop shared by FedDF and FedBE: `cfg.steps` Adam steps of the student on
/// T^2 KL(teacher || softmax(student / T)) over batches of `data`. With `swa = Some(every)`, the
/// result is the average of the student's iterates taken every `every` steps over the second
/// half of the run (stochastic weight averaging, as FedBE distils). Returns the mean KL of the
/// first and of the last ten steps.
pub fn distil_with(
    m: &mut dyn Model,
    student: &mut Params,
    data: &ClientData,
    cfg: &FedDf,
    swa: Option<usize>,
    rng: &mut RngStream,
    teacher: &mut Teacher,
) -> Result<(f64, f64)> {
    let train = LocalTrain { lr: cfg.lr, optimizer: OptimizerKind::Adam, ..LocalTrain::default() };
    let mut opt = Optimizer::new(&train, student.layout());
    let mut grad = student.zeros_like();
    let t = cfg.temperature;
    let mut kls = Vec::with_capacity(cfg.steps);
    let (mut avg, mut taken) = (vec![0.0f64; student.len()], 0usize);
    for step in 0..cfg.steps {
        let batch = sample_batch(data, cfg.batch_size, rng);
        let (p, classes) = teacher(m, &batch)?;
        let mut head = |out: &Outputs, _b: &Batch, g: &mut OutputGrads| -> Result<f32> {
            if out.logits.len() != p.len() {
                return Err(Error::Shape(format!(
                    "distillation: {} student logits for {} teacher ones",
                    out.logits.len(),
                    p.len()
                )));
            }
            let q = softmax_rows(&out.logits, classes, t);
            let n = (p.len() / classes).max(1) as f64;
            g.logits = q.iter().zip(&p).map(|(q, p)| (t * (q - p) / n) as f32).collect();
            g.features.clear();
            let kl: f64 = p.iter().zip(&q).filter(|(p, _)| **p > 0.0).map(|(p, q)| p * (p / q.max(1e-300)).ln()).sum();
            Ok((t * t * kl / n) as f32)
        };
        let kl = m.vjp(student, &batch, Mode::Train, &mut head, Some(&mut grad), None, rng)?;
        kls.push(kl as f64);
        opt.step(student.as_mut_slice(), grad.as_slice(), cfg.lr as f32);
        if let Some(every) = swa
            && step >= cfg.steps / 2
            && (step + 1 - cfg.steps / 2) % every.max(1) == 0
        {
            avg.iter_mut().zip(student.as_slice()).for_each(|(a, &w)| *a += w as f64);
            taken += 1;
        }
    }
    if taken > 0 {
        student.as_mut_slice().iter_mut().zip(&avg).for_each(|(w, a)| *w = (a / taken as f64) as f32);
    }
    let k = kls.len().clamp(1, 10);
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    Ok((mean(&kls[..k.min(kls.len())]), mean(&kls[kls.len().saturating_sub(k)..])))
}

/// The server's unlabeled data, or an error naming `data.subsample` when there is none.
fn unlabeled<'a>(name: &str, view: &ServerView<'a>) -> Result<&'a ClientData> {
    view.unlabeled.filter(|d| !d.is_empty()).ok_or_else(|| {
        Error::config(
            "data.subsample",
            format!(
                "{name} distils on the training samples no client holds, and there are none: set data.subsample < 1"
            ),
        )
    })
}

/// What a distilling server rule starts from: the unlabeled data and the round's client models
/// (global + delta of every accepted update); `None` when there is nothing to distil (no
/// steps, no updates).
pub(crate) fn distillation_inputs<'a>(
    name: &str,
    steps: usize,
    r: &RoundCtx,
    view: &ServerView<'a>,
) -> Result<Option<(&'a ClientData, Vec<Params>)>> {
    if steps == 0 || view.updates.is_empty() {
        return Ok(None);
    }
    let data = unlabeled(name, view)?;
    let models = view
        .updates
        .iter()
        .map(|u| {
            let mut p = r.global.clone();
            p.axpy(1.0, &u.delta);
            p
        })
        .collect();
    Ok(Some((data, models)))
}

/// The prototypes of the `[[model.per_client]]` architectures, by layout id (the global model is
/// `[model]`'s); a group's is absent until its clients first trained.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Prototypes(pub BTreeMap<u64, Params>);

/// Each group architecture's prototype after the round: its start (the kept prototype, or the
/// architecture's initial model: what the engine sent its clients) plus the sample-weighted
/// mean of its clients' deltas. Returns (group index, layout id, start, new prototype) for the
/// groups with updates or a prototype.
fn group_prototypes(s: &Prototypes, view: &ServerView) -> Result<Vec<(usize, u64, Params, Params)>> {
    let mut out = Vec::new();
    for (g, a) in view.architectures.iter().enumerate() {
        let id = layout_id(a.init.layout());
        let start = s.0.get(&id).cloned().unwrap_or_else(|| a.init.clone());
        let ups: Vec<&Update> = view.updates.iter().filter(|u| *u.delta.layout() == *a.init.layout()).collect();
        let total: f64 = ups.iter().map(|u| u.weight as f64).sum();
        if ups.is_empty() && !s.0.contains_key(&id) {
            continue;
        }
        let mut next = start.clone();
        if total > 0.0 {
            let mut acc = vec![0.0f64; start.len()];
            for u in &ups {
                let w = u.weight as f64 / total;
                acc.iter_mut().zip(u.delta.as_slice()).for_each(|(a, &d)| *a += w * d as f64);
            }
            next.as_mut_slice().iter_mut().zip(&acc).for_each(|(p, a)| *p += *a as f32);
        }
        out.push((g, id, start, next));
    }
    Ok(out)
}

impl FedDf {
    /// The server rule across architectures: average within each, then distil every prototype
    /// from the ensemble of all the round's client models.
    fn server_step_groups(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut Prototypes,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        w.axpy(1.0, &agg.delta);
        let protos = group_prototypes(s, view)?;
        let mut metrics = Metrics::new();
        // Every client model: its architecture's start plus its delta.
        let teachers: Vec<Params> = view
            .updates
            .iter()
            .map(|u| {
                let start = if *u.delta.layout() == *r.global.layout() {
                    r.global
                } else {
                    protos.iter().find(|p| *p.2.layout() == *u.delta.layout()).map(|p| &p.2).ok_or_else(|| {
                        Error::Method(format!("feddf: client {}'s update has no architecture of the run", u.client))
                    })?
                };
                let mut p = start.clone();
                p.axpy(1.0, &u.delta);
                Ok(p)
            })
            .collect::<Result<_>>()?;
        let mut students: Vec<(Option<usize>, Params)> = vec![(None, w.clone())];
        for p in &protos {
            students.push((Some(p.0), p.3.clone()));
        }
        if self.steps > 0 && !teachers.is_empty() {
            let data = unlabeled("feddf", view)?;
            let refs: Vec<&Params> = teachers.iter().collect();
            // The teachers' model objects: copies, so that the student's stays free.
            let mut objects: Vec<Box<dyn Model>> = vec![view.model.clone_box()];
            objects.extend(view.architectures.iter().map(|a| a.model.clone_box()));
            for (g, student) in students.iter_mut() {
                let m = view
                    .model_for(&student.layout().clone())
                    .ok_or_else(|| Error::Method("feddf: a prototype of no architecture".into()))?;
                let t = self.temperature;
                let mut teach = |_: &mut dyn Model, b: &Batch| {
                    let mut of: Vec<&mut dyn Model> =
                        objects.iter_mut().map(|o| o.as_mut() as &mut dyn Model).collect();
                    mixed_teacher(&mut of, &refs, b, t)
                };
                let purpose = match g {
                    None => "feddf_batch".to_string(),
                    Some(i) => format!("feddf_batch_group{i}"),
                };
                let (start, end) = distil_with(m, student, data, self, None, &mut r.rng(&purpose), &mut teach)?;
                let suffix = g.map_or(String::new(), |i| format!("_group{i}"));
                metrics.insert(format!("feddf_kl_start{suffix}"), start);
                metrics.insert(format!("feddf_kl_end{suffix}"), end);
            }
        }
        let mut it = students.into_iter();
        if let Some((_, g0)) = it.next() {
            *w = g0;
        }
        for ((_, p), (_, id, _, _)) in it.zip(&protos) {
            s.0.insert(*id, p);
        }
        Ok(metrics)
    }
}

impl Algorithm for FedDf {
    type Client = ();
    type Server = Prototypes;

    fn reads_updates(&self) -> bool {
        true
    }

    fn supports_architectures(&self) -> bool {
        true
    }

    fn architecture_model(&self, s: &Prototypes, layout: &Layout) -> Option<Params> {
        s.0.get(&layout_id(layout)).cloned()
    }

    fn combines_updates_itself(&self) -> bool {
        true
    }

    fn needs_unlabeled_data(&self) -> bool {
        self.steps > 0
    }

    fn server_step(
        &self,
        r: &RoundCtx,
        w: &mut Params,
        s: &mut Prototypes,
        agg: &Aggregate,
        view: &mut ServerView,
    ) -> Result<Metrics> {
        if !view.architectures.is_empty() {
            return self.server_step_groups(r, w, s, agg, view);
        }
        w.axpy(1.0, &agg.delta);
        let mut metrics = Metrics::new();
        let Some((data, teachers)) = distillation_inputs("feddf", self.steps, r, view)? else { return Ok(metrics) };
        let refs: Vec<&Params> = teachers.iter().collect();
        let (start, end) = distil(&mut *view.model, w, &refs, data, self, &mut r.rng("feddf_batch"))?;
        metrics.insert("feddf_kl_start".into(), start);
        metrics.insert("feddf_kl_end".into(), end);
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::{SoftmaxReg, dataset, split};

    fn unlabeled(n: usize) -> ClientData {
        let mut rng = RngStream::new(4);
        let x: Vec<Vec<f32>> = (0..n).map(|_| vec![rng.normal() as f32, rng.normal() as f32]).collect();
        let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        split(&dataset(&x, &y), &[n]).remove(0)
    }

    // With one client, distillation to convergence recovers that client's predictions from any
    // start: the student's KL to the teacher falls to ~0.
    #[test]
    fn one_teacher_is_recovered_by_distillation() {
        let mut m = SoftmaxReg::new(2, 3);
        let teacher = m.params(&[2.0, -1.0, 0.5, 1.0, -1.5, 0.3], &[0.2, -0.1, 0.0]);
        let mut student = m.params(&[0.0; 6], &[0.0; 3]);
        let cfg = FedDf { steps: 3000, batch_size: 32, lr: 0.05, temperature: 1.0 };
        let (start, end) =
            distil(&mut m, &mut student, &[&teacher], &unlabeled(200), &cfg, &mut RngStream::new(1)).unwrap();
        assert!(start > 0.1 && end < 1e-3, "KL from {start} to {end}");
        // Softmax is shift-invariant per sample: compare the logit differences.
        let (s, t) = (student.as_slice(), teacher.as_slice());
        for j in 0..2 {
            for (a, b) in [(0, 1), (1, 2)] {
                let (ds, dt) = (s[a * 2 + j] - s[b * 2 + j], t[a * 2 + j] - t[b * 2 + j]);
                assert!((ds - dt).abs() < 0.1, "weight {j}: {ds} vs {dt}");
            }
        }
    }

    // A student equal to the only teacher gets a zero gradient and stays put, bit for bit.
    #[test]
    fn a_student_equal_to_its_teacher_does_not_move() {
        let mut m = SoftmaxReg::new(2, 3);
        let teacher = m.params(&[2.0, -1.0, 0.5, 1.0, -1.5, 0.3], &[0.2, -0.1, 0.0]);
        let mut student = teacher.clone();
        let cfg = FedDf { steps: 20, ..FedDf::default() };
        distil(&mut m, &mut student, &[&teacher], &unlabeled(50), &cfg, &mut RngStream::new(1)).unwrap();
        assert_eq!(student, teacher);
    }

    #[test]
    fn the_teacher_averages_logits_not_probabilities() {
        let mut m = SoftmaxReg::new(2, 3);
        let (a, b) = (m.params(&[4.0, 0.0, 0.0, 0.0, 0.0, 0.0], &[0.0; 3]), m.params(&[0.0; 6], &[0.0, 4.0, 0.0]));
        let d = unlabeled(4);
        let mut batch = Batch::default();
        batch.fill(&d, &[0, 1, 2, 3], &mut RngStream::new(0));
        let (p, classes) = teacher(&mut m, &[&a, &b], &batch, 1.0).unwrap();
        let mut out = Outputs::default();
        let mean = m.params(&[2.0, 0.0, 0.0, 0.0, 0.0, 0.0], &[0.0, 2.0, 0.0]);
        m.forward(&mean, &batch, Mode::Eval, &mut out).unwrap();
        let want = softmax_rows(&out.logits, classes, 1.0);
        p.iter().zip(&want).for_each(|(x, y)| assert!((x - y).abs() < 1e-6, "{x} vs {y}"));
    }

    #[test]
    fn without_unlabeled_data_it_says_what_to_set() {
        let mut f = crate::algorithms::testing::small_fed(FedDf::default(), &[12, 12], 6);
        let ups = f.clients_round(1, &[0, 1]).1;
        let agg = crate::aggregators::mean::weighted_mean(&ups, true).unwrap();
        let g = f.global.clone();
        let r = RoundCtx { round: 1, cohort: &[0, 1], global: &g, seed: 7, population: 2, malicious: &[], draws: &[] };
        let mut view = ServerView {
            updates: &ups,
            model: &mut f.model,
            clients: &f.data,
            unlabeled: None,
            architectures: &mut [],
        };
        let e = f.algo.server_step(&r, &mut f.global, &mut Prototypes::default(), &agg, &mut view).unwrap_err();
        assert!(e.to_string().contains("data.subsample"), "{e}");
    }
}
