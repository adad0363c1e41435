//! `deepsight`: Rieger, Nguyen, Miettinen, Sadeghi, "DeepSight: Mitigating Backdoor Attacks in
//! Federated Learning Through Deep Model Inspection", NDSS 2022.
//!
//! Each round, for the n updates of the cohort (the output layer is the model's last weight
//! [in, P] and bias [P], P classes):
//! 1. **NEUPs and threshold exceedings.** The update energy of output neuron j is
//!    e_j = |db_j| + sum_k |dW_kj|; NEUP_j = e_j^2 / sum_l e_l^2. The threshold exceedings TE
//!    count the NEUPs above max(`threshold_factor`, 1/P) * max_j NEUP_j. Backdoored models
//!    concentrate their energy on few labels, so an update with TE <= median(TE) / 2 is labelled
//!    suspicious.
//! 2. **Three views of the updates**: DDifs (division differences: for `probe_seeds` sets of
//!    `probe_samples` uniform-noise inputs, the mean over the inputs of p_i(x) / p_G(x), the
//!    local model's softmax over the global model's; the model runs on the server's view), the
//!    NEUPs, and the cosine distances of the output-layer bias updates.
//! 3. **Ensemble clustering.** HDBSCAN clusters each view (DDifs per seed, Euclidean; NEUPs,
//!    Euclidean; bias cosine distances); each clustering gives the distance 0 between two
//!    updates in one cluster and 1 otherwise (a noise point is its own cluster); their mean
//!    (the DDif seeds averaged first) is clustered once more. Every clustering allows a single
//!    cluster, so that a tight benign majority is one cluster and a lone outlier is noise (a
//!    reference reimplementation treats all noise points as one cluster instead, which merges
//!    a lone attacker with the benign updates whenever no view splits them).
//! 4. **Poisoned-cluster identification.** A cluster is accepted when fewer than `tau` of its
//!    members are suspicious; the others, and noise points, are rejected (runs log
//!    `detect_tpr` / `detect_fpr`).
//! 5. **Clipping.** The accepted updates are clipped to the median L2 norm of all updates and
//!    averaged (uniformly). With none accepted the global model stays.
//!
//! HDBSCAN uses Python hdbscan's conventions (`min_cluster_size`, default 5, its default;
//! `min_samples`, default 3, the reference reimplementation's). Departures: the probe sets are
//! 200 noise inputs per seed (the reimplementation's 20000 make a round cost 100x more) and are
//! drawn from the run seed, so rounds are deterministic. The DDifs need the model: simulation
//! runs it on the server; a deployment would run it where the updates are decrypted. The DDifs
//! of the n updates are n jobs on the engine's worker threads (`threads`), each on a model of
//! its own; the result is the same bits for any thread count.
//!
//! Parameters: `probe_samples` (default 200), `probe_seeds` (3), `threshold_factor` (0.01),
//! `tau` (1/3), `min_cluster_size` (5), `min_samples` (3).
//!
//! ```toml
//! [aggregator]
//! use = "deepsight"
//! probe_samples = 200
//! probe_seeds = 3
//! threshold_factor = 0.01
//! tau = 0.3333
//! min_cluster_size = 5
//! min_samples = 3
//! ```

use fedkit_core::{
    Aggregate, Aggregator, AggregatorView, Batch, Error, Extras, Layout, Metrics, Mode, Model, Outputs, Params, Result,
    RngStream, RoundCtx, Update, Weighting,
};
use serde::{Deserialize, Serialize};

use super::clustering::{euclidean, hdbscan_labels};
use super::geometry::{aggregate_of, by_client};

/// DeepSight.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepSight {
    pub probe_samples: usize,
    pub probe_seeds: usize,
    pub threshold_factor: f64,
    pub tau: f64,
    pub min_cluster_size: usize,
    pub min_samples: usize,
}

impl Default for DeepSight {
    fn default() -> Self {
        DeepSight {
            probe_samples: 200,
            probe_seeds: 3,
            threshold_factor: 0.01,
            tau: 1.0 / 3.0,
            min_cluster_size: 5,
            min_samples: 3,
        }
    }
}

impl DeepSight {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if self.probe_samples == 0 || self.probe_seeds == 0 {
            return Err(Error::config("aggregator.probe_samples", "probe_samples and probe_seeds must be at least 1"));
        }
        if !(self.tau > 0.0 && self.tau <= 1.0) {
            return Err(Error::config("aggregator.tau", format!("must be in (0, 1], got {}", self.tau)));
        }
        if !(self.threshold_factor >= 0.0 && self.threshold_factor < 1.0) {
            return Err(Error::config(
                "aggregator.threshold_factor",
                format!("must be in [0, 1), got {}", self.threshold_factor),
            ));
        }
        Ok(self)
    }
}

/// The value ranges of the output layer's weight [in, P] and bias [P] in `layout`.
pub fn output_layer(layout: &Layout) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>, usize)> {
    layout.output_layer().map_err(|e| Error::Method(format!("deepsight: {e}")))
}

/// Each update's NEUPs and threshold exceedings.
pub fn neups(
    deltas: &[&[f32]],
    w: &std::ops::Range<usize>,
    b: &std::ops::Range<usize>,
    p: usize,
    factor: f64,
) -> (Vec<Vec<f64>>, Vec<usize>) {
    deltas
        .iter()
        .map(|d| {
            let mut energy: Vec<f64> = d[b.clone()].iter().map(|v| (*v as f64).abs()).collect();
            for (k, v) in d[w.clone()].iter().enumerate() {
                energy[k % p] += (*v as f64).abs();
            }
            let sq: Vec<f64> = energy.iter().map(|e| e * e).collect();
            let total: f64 = sq.iter().sum();
            let neup: Vec<f64> =
                if total > 0.0 { sq.iter().map(|e| e / total).collect() } else { vec![1.0 / p as f64; p] };
            let threshold = factor.max(1.0 / p as f64) * neup.iter().copied().fold(0.0, f64::max);
            let te = neup.iter().filter(|v| **v > threshold).count();
            (neup, te)
        })
        .unzip()
}

/// Row-wise softmax of the logits (n x P).
fn softmax_rows(logits: &[f32], p: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(p) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|z| (*z as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| v / s));
    }
    out
}

/// The softmax outputs of `params` on the probe inputs.
fn probabilities(model: &mut dyn Model, params: &Params, probe: &Batch) -> Result<(Vec<f64>, usize)> {
    let mut out = Outputs::default();
    model.forward(params, probe, Mode::Eval, &mut out)?;
    Ok((softmax_rows(&out.logits, out.classes), out.classes))
}

/// The co-membership distances of a clustering: 0 within a cluster, 1 across (noise points are
/// singletons).
fn co_membership(labels: &[i32]) -> Vec<f64> {
    let n = labels.len();
    (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if i == j || (labels[i] >= 0 && labels[i] == labels[j]) { 0.0 } else { 1.0 }
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

impl Aggregator for DeepSight {
    fn aggregate(&mut self, _r: &RoundCtx, _updates: &[Update]) -> Result<Aggregate> {
        Err(Error::Method("deepsight needs the server's view (the model, for the DDifs): run it in the engine".into()))
    }
    fn aggregate_with(&mut self, r: &RoundCtx, updates: &[Update], view: &mut AggregatorView) -> Result<Aggregate> {
        let order = by_client(updates, 1, "deepsight")?;
        let n = order.len();
        let deltas: Vec<&[f32]> = order.iter().map(|u| u.delta.as_slice()).collect();
        let (w_range, b_range, p) = output_layer(order[0].delta.layout())?;
        let (neup, te) = neups(&deltas, &w_range, &b_range, p, self.threshold_factor);
        let te_median = median(&te.iter().map(|t| *t as f64).collect::<Vec<_>>());
        let suspicious: Vec<bool> = te.iter().map(|t| (*t as f64) <= te_median / 2.0).collect();

        // The bias updates' cosine distances.
        let bias: Vec<&[f32]> = deltas.iter().map(|d| &d[b_range.clone()]).collect();
        let norm: Vec<f64> = bias.iter().map(|b| b.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()).collect();
        let cos: Vec<f64> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                if i == j {
                    return 0.0;
                }
                let dot: f64 = bias[i].iter().zip(bias[j]).map(|(a, b)| *a as f64 * *b as f64).sum();
                (1.0 - dot / (norm[i] * norm[j]).max(f64::MIN_POSITIVE)).max(0.0)
            })
            .collect();

        // DDifs on the probe sets: the global model's outputs once per set, then every local
        // model on every set (one job per update, on the workers when the engine has them).
        let shape = view.server_data.feature_shape().to_vec();
        let flen: usize = shape.iter().product();
        let probes: Vec<Batch> = (0..self.probe_seeds)
            .map(|s| {
                let mut rng = RngStream::derive(r.seed, "deepsight_probe", 0, s as u64);
                Batch {
                    x: (0..self.probe_samples * flen).map(|_| rng.uniform() as f32).collect(),
                    y: vec![0; self.probe_samples],
                    feature_shape: shape.clone(),
                    classes: view.server_data.data.classes,
                    targets: Vec::new(),
                }
            })
            .collect();
        let global_p =
            probes.iter().map(|probe| probabilities(view.model, r.global, probe)).collect::<Result<Vec<_>>>()?;
        let samples = self.probe_samples as f64;
        let ddifs = view.map_models(n, |model, i| -> Result<Vec<Vec<f64>>> {
            let mut local = r.global.clone();
            local.as_mut_slice().iter_mut().zip(deltas[i].iter()).for_each(|(a, b)| *a += b);
            probes
                .iter()
                .zip(&global_p)
                .map(|(probe, (pg, classes))| {
                    let (pl, _) = probabilities(model, &local, probe)?;
                    let mut v = vec![0.0f64; *classes];
                    for (k, (a, g)) in pl.iter().zip(pg).enumerate() {
                        v[k % classes] += a / (g + 1e-6) / samples;
                    }
                    Ok(v)
                })
                .collect()
        });
        let ddifs = ddifs.into_iter().collect::<Result<Vec<_>>>()?;
        let mut ddif_dist = vec![0.0f64; n * n];
        for s in 0..self.probe_seeds {
            let per_seed: Vec<Vec<f64>> = ddifs.iter().map(|d| d[s].clone()).collect();
            let labels =
                hdbscan_labels(&euclidean(&per_seed), n, self.min_cluster_size, self.min_samples, true, "deepsight")?;
            ddif_dist.iter_mut().zip(co_membership(&labels)).for_each(|(a, b)| *a += b / self.probe_seeds as f64);
        }
        let cluster = |d: &[f64], single: bool| {
            hdbscan_labels(d, n, self.min_cluster_size, self.min_samples, single, "deepsight")
        };
        let neup_dist = co_membership(&cluster(&euclidean(&neup), true)?);
        let cos_dist = co_membership(&cluster(&cos, true)?);
        let merged: Vec<f64> = (0..n * n).map(|k| (ddif_dist[k] + neup_dist[k] + cos_dist[k]) / 3.0).collect();
        let labels = cluster(&merged, true)?;

        let mut admitted = Vec::new();
        for c in 0..=labels.iter().copied().max().unwrap_or(-1) {
            let members: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
            let bad = members.iter().filter(|&&i| suspicious[i]).count();
            if (bad as f64) < self.tau * members.len() as f64 {
                admitted.extend(members);
            }
        }
        admitted.sort_unstable();
        let norms: Vec<f64> =
            deltas.iter().map(|d| d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()).collect();
        let bound = median(&norms);
        let dlen = deltas[0].len();
        let mut metrics = Metrics::new();
        metrics.insert("deepsight_suspicious".into(), suspicious.iter().filter(|s| **s).count() as f64);
        if admitted.is_empty() {
            return Ok(Aggregate {
                delta: order[0].delta.zeros_like(),
                weight: 0.0,
                extras: Extras::default(),
                accepted: Vec::new(),
                metrics,
                weighting: Weighting::Robust,
            });
        }
        let mut values = vec![0.0f64; dlen];
        for &i in &admitted {
            let k = if norms[i] > bound { bound / norms[i] } else { 1.0 } / admitted.len() as f64;
            values.iter_mut().zip(deltas[i]).for_each(|(a, v)| *a += k * *v as f64);
        }
        let kept: Vec<&Update> = admitted.iter().map(|&i| order[i]).collect();
        let mut agg = aggregate_of(&order[0].delta, values, &kept, Weighting::Robust)?;
        agg.metrics = metrics;
        Ok(agg)
    }
    fn filters(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::ParamKind;
    use fedkit_core::{ClientData, Dataset, LocalTrain, ModelPool};
    use std::sync::Arc;

    /// Logistic regression on 4 features and 3 classes: weight [4, 3] then bias [3].
    struct Linear;

    fn layout() -> Arc<Layout> {
        let mut l = Layout::new();
        l.push("w", &[4, 3], ParamKind::Weight);
        l.push("b", &[3], ParamKind::Bias);
        Arc::new(l)
    }

    impl Model for Linear {
        fn clone_box(&self) -> Box<dyn Model> {
            Box::new(Linear)
        }
        fn layout(&self) -> Arc<Layout> {
            layout()
        }
        fn init(&self, _: &mut RngStream) -> Params {
            Params::zeros(layout())
        }
        fn forward(&mut self, p: &Params, b: &Batch, _: Mode, out: &mut Outputs) -> Result<()> {
            let w = p.as_slice();
            out.classes = 3;
            out.logits =
                b.x.chunks_exact(4)
                    .flat_map(|x| (0..3).map(move |c| (0..4).map(|k| x[k] * w[k * 3 + c]).sum::<f32>() + w[12 + c]))
                    .collect();
            Ok(())
        }
    }

    fn update(client: u32, v: Vec<f32>) -> Update {
        Update {
            client,
            delta: Params::from_vec(layout(), v).unwrap(),
            weight: 1.0,
            extras: Extras::default(),
            metrics: Metrics::new(),
        }
    }

    /// Nine benign updates around one direction that spreads its energy over all 3 classes, and
    /// one backdoor-like update that pushes class 2 only.
    fn cohort() -> Vec<Update> {
        let mut rng = RngStream::new(3);
        let base: Vec<f32> = (0..15).map(|k| if k % 2 == 0 { 0.1 } else { -0.08 }).collect();
        let mut us: Vec<Update> =
            (0..9).map(|c| update(c, base.iter().map(|b| b + (0.01 * rng.normal()) as f32).collect())).collect();
        let mut bad = vec![0.0f32; 15];
        for k in 0..4 {
            bad[k * 3 + 2] = 0.5;
        }
        bad[14] = 0.5;
        us.push(update(9, bad));
        us
    }

    /// A pool that runs the jobs last to first, each on a fresh copy of the model.
    struct Backwards;
    impl ModelPool for Backwards {
        fn run(&mut self, n: usize, job: &(dyn Fn(&mut dyn Model, usize) + Sync)) {
            for i in (0..n).rev() {
                job(Linear.clone_box().as_mut(), i);
            }
        }
    }

    fn run(us: &[Update]) -> Aggregate {
        run_on(us, false)
    }

    fn run_on(us: &[Update], pooled: bool) -> Aggregate {
        let mut pool = Backwards;
        let data = ClientData::whole(Arc::new(Dataset {
            name: "t".into(),
            x: vec![0.5; 4 * 3],
            y: vec![0, 1, 2],
            feature_shape: vec![4],
            classes: 3,
            users: None,
            targets: Vec::new(),
        }));
        let train = LocalTrain::default();
        let mut model = Linear;
        let mut view = AggregatorView {
            model: &mut model,
            server_data: &data,
            train: &train,
            workers: pooled.then_some(&mut pool as &mut dyn ModelPool),
        };
        let global = Params::zeros(layout());
        let malicious = [false; 16];
        let cohort: Vec<u32> = (0..10).collect();
        let r = RoundCtx {
            round: 1,
            cohort: &cohort,
            global: &global,
            seed: 1,
            population: 16,
            malicious: &malicious,
            draws: &[],
        };
        DeepSight::default().validated().unwrap().aggregate_with(&r, us, &mut view).unwrap()
    }

    #[test]
    fn the_update_with_concentrated_energy_is_suspicious_and_rejected() {
        let us = cohort();
        let deltas: Vec<&[f32]> = us.iter().map(|u| u.delta.as_slice()).collect();
        let (neup, te) = neups(&deltas, &(0..12), &(12..15), 3, 0.01);
        assert_eq!(te[9], 1, "the backdoor's energy sits on one label: {:?}", neup[9]);
        assert!(te[..9].iter().all(|t| *t >= 2), "{te:?}");
        let a = run(&us);
        assert!(!a.accepted.contains(&9), "{:?}", a.accepted);
        assert!(a.accepted.len() >= 5, "the benign majority is kept: {:?}", a.accepted);
    }

    #[test]
    fn identical_updates_are_all_accepted_and_returned_and_order_does_not_matter() {
        let us = cohort();
        let same: Vec<Update> = us.iter().map(|u| Update { delta: us[0].delta.clone(), ..u.clone() }).collect();
        let a = run(&same);
        assert_eq!(a.accepted.len(), 10);
        assert!(a.delta.as_slice().iter().zip(us[0].delta.as_slice()).all(|(x, y)| (x - y).abs() < 1e-6));
        let mut reversed = us.clone();
        reversed.reverse();
        let (x, y) = (run(&us), run(&reversed));
        assert_eq!(x.accepted, y.accepted);
        assert_eq!(x.delta.as_slice(), y.delta.as_slice());
    }

    #[test]
    fn workers_running_the_ddifs_in_any_order_give_the_same_aggregate() {
        let us = cohort();
        let (serial, pooled) = (run(&us), run_on(&us, true));
        assert_eq!(serial.accepted, pooled.accepted);
        assert_eq!(serial.delta.as_slice(), pooled.delta.as_slice());
    }

    #[test]
    fn the_output_layer_is_found_from_the_layout() {
        assert_eq!(output_layer(&layout()).unwrap(), (0..12, 12..15, 3));
        let mut l = Layout::new();
        l.push("w", &[5], ParamKind::Weight);
        assert!(output_layer(&l).is_err());
    }
}
