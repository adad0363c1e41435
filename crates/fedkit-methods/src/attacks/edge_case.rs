//! `edge_case`: the edge-case backdoor, Wang, Sreenivasan, Rajput, Vishwakarma, Agarwal, Sohn,
//! Lee, Papailiopoulos, "Attack of the Tails: Yes, You Really Can Backdoor Federated Learning",
//! NeurIPS 2020.
//!
//! The backdoor lives on the tail of the input distribution: inputs that are rare in every
//! benign client's data, so the attacker can relabel them without fighting the benign updates.
//! The paper uses out-of-distribution sets (Southwest airplanes, ARDIS sevens); fedkit defines
//! the edge cases of any image dataset concretely, without a second dataset:
//!
//! **Edge cases of a split**: the `fraction` (default 5%) of the split's images of class
//! `source` farthest (L2) from that split's mean image of the class (ties by index), relabelled
//! `target`. On Fashion-MNIST with the defaults (source 9, ankle boot, to target 7, sneaker; 5%)
//! that is 300 training and 50 test images.
//!
//! - The attacking clients (in their attack rounds) train on their own data plus every training
//!   edge case, relabelled `target` (their own copies of those images, if any, carry the target
//!   too).
//! - Every other client (benign, or malicious outside its attack rounds) has the training edge
//!   cases removed from its data: they are held out from every client, as the paper's edge-case
//!   set is. For this, declare the stage with `on = "all"` (the default scope): it acts on the
//!   attackers only and holds the edge cases out of everyone else's data. (`on = "malicious"`
//!   leaves them, with their true labels, in the benign clients' data.)
//! - The evaluation `backdoor_acc` is the global model's accuracy on the test split's edge cases,
//!   labelled `target` (the attack's success rate on the held-out edge-case test set).
//! - Optional PGD (`pgd_eps` > 0): after every local step the attacker projects its weights onto
//!   the L2 ball of radius eps around the global model, so its update evades norm bounding (the
//!   paper's "PGD" attacker; combine with `model_replacement` for its "PGD with replacement").
//!
//! Parameters: `source` (the class whose tail is used, default 9), `target` (default 7),
//! `fraction` (in (0, 1], default 0.05), `pgd_eps` (>= 0, default 0 = off).
//!
//! ```toml
//! [[pipeline]]
//! use = "edge_case"
//! source = 9
//! target = 7
//! fraction = 0.05
//! pgd_eps = 0.0
//! ```

use std::sync::{Arc, OnceLock};

use fedkit_core::{ClientCtx, ClientData, Dataset, Error, Extras, GradHook, Params, Result, Stage, Stamp};
use serde::{Deserialize, Serialize};

/// The edge-case backdoor.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeCase {
    pub source: u32,
    pub target: u32,
    pub fraction: f64,
    pub pgd_eps: f64,
    /// The training split's edge cases (sample indices, sorted), computed once.
    #[serde(skip)]
    train_edges: OnceLock<Arc<[u32]>>,
}

impl Default for EdgeCase {
    fn default() -> Self {
        EdgeCase { source: 9, target: 7, fraction: 0.05, pgd_eps: 0.0, train_edges: OnceLock::new() }
    }
}

impl EdgeCase {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(Error::config("fraction", format!("must be in (0, 1], got {}", self.fraction)));
        }
        if !(self.pgd_eps >= 0.0 && self.pgd_eps.is_finite()) {
            return Err(Error::config("pgd_eps", format!("must be a finite number >= 0, got {}", self.pgd_eps)));
        }
        if self.source == self.target {
            return Err(Error::config("target", format!("must differ from source ({})", self.source)));
        }
        Ok(self)
    }
    fn check_classes(&self, classes: usize) -> Result<()> {
        for (key, c) in [("source", self.source), ("target", self.target)] {
            if c as usize >= classes {
                return Err(Error::config(key, format!("class {c} does not exist: the dataset has {classes} classes")));
            }
        }
        Ok(())
    }
}

/// The edge cases among `candidates` (indices into `data`, all of one class): the `fraction` of
/// them farthest from their mean image, sorted by index.
pub fn edge_cases(data: &Dataset, candidates: &[u32], fraction: f64) -> Vec<u32> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let f = data.feature_len();
    let mut mean = vec![0.0f64; f];
    for &i in candidates {
        mean.iter_mut().zip(data.features(i as usize)).for_each(|(m, x)| *m += *x as f64);
    }
    mean.iter_mut().for_each(|m| *m /= candidates.len() as f64);
    let mut by_distance: Vec<(f64, u32)> = candidates
        .iter()
        .map(|&i| (data.features(i as usize).iter().zip(&mean).map(|(x, m)| (*x as f64 - m).powi(2)).sum(), i))
        .collect();
    by_distance.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let k = ((candidates.len() as f64 * fraction).round() as usize).clamp(1, candidates.len());
    let mut edges: Vec<u32> = by_distance[..k].iter().map(|p| p.1).collect();
    edges.sort_unstable();
    edges
}

/// Projects the weights onto the ball of radius `eps` around the global model after every step.
struct NormBallPgd<'a> {
    global: &'a Params,
    eps: f64,
}

impl GradHook for NormBallPgd<'_> {
    fn on_grad(&mut self, _: usize, _: &Params, _: &mut Params) {}
    fn after_step(&mut self, _: usize, w: &mut Params) {
        let g = self.global.as_slice();
        let dist = w.as_slice().iter().zip(g).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        if dist > self.eps {
            let k = (self.eps / dist) as f32;
            w.as_mut_slice().iter_mut().zip(g).for_each(|(a, b)| *a = b + (*a - b) * k);
        }
    }
}

impl Stage for EdgeCase {
    fn on_data(&self, cx: &ClientCtx, d: &mut ClientData, _mem: &mut Extras) -> Result<()> {
        self.check_classes(d.data.classes)?;
        let edges = self
            .train_edges
            .get_or_init(|| {
                let of_source: Vec<u32> =
                    (0..d.data.len() as u32).filter(|&i| d.data.y[i as usize] == self.source).collect();
                edge_cases(&d.data, &of_source, self.fraction).into()
            })
            .clone();
        let is_edge = |i: u32| edges.binary_search(&i).is_ok();
        let own: Vec<usize> = (0..d.len()).filter(|&p| !is_edge(d.idx[p])).collect();
        let mut kept = d.subset(&own);
        if !cx.malicious {
            *d = kept;
            return Ok(());
        }
        // The attacker: its own samples, then every edge case labelled `target`.
        let n_own = kept.len();
        let idx: Arc<[u32]> = kept.idx.iter().copied().chain(edges.iter().copied()).collect();
        let labels: Arc<[u32]> =
            (0..n_own).map(|p| kept.label(p)).chain(std::iter::repeat_n(self.target, edges.len())).collect();
        kept.stamp = kept.stamp.take().map(|s| Stamp {
            pixels: s.pixels,
            positions: s.positions.iter().copied().chain(std::iter::repeat_n(false, edges.len())).collect(),
        });
        kept.idx = idx;
        kept.labels = Some(labels);
        kept.validate_labels()?;
        *d = kept;
        Ok(())
    }
    fn train_hook<'a>(&'a self, cx: &ClientCtx<'a>, _mem: &'a Extras) -> Result<Option<Box<dyn GradHook + 'a>>> {
        if self.pgd_eps > 0.0 && cx.malicious {
            return Ok(Some(Box::new(NormBallPgd { global: cx.global, eps: self.pgd_eps })));
        }
        Ok(None)
    }
    fn evals(&self, test: &ClientData) -> Result<Vec<(String, ClientData)>> {
        self.check_classes(test.data.classes)?;
        let of_source: Vec<u32> =
            (0..test.len()).filter(|&p| test.label(p) == self.source).map(|p| test.idx[p]).collect();
        let edges = edge_cases(&test.data, &of_source, self.fraction);
        let positions: Vec<usize> = (0..test.len()).filter(|&p| edges.binary_search(&test.idx[p]).is_ok()).collect();
        let mut set = test.subset(&positions);
        set.labels = Some(vec![self.target; positions.len()].into());
        set.validate_labels()?;
        Ok(vec![("backdoor_acc".into(), set)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::{cx, images};

    /// 1x8x8 images of 3 classes; in class 0, every 10th image is bright (the tail).
    fn data(n: usize) -> ClientData {
        let mut d = images(n);
        let ds = Arc::get_mut(&mut d.data).unwrap();
        for i in (0..n).filter(|i| i % 3 == 0 && i % 10 == 0) {
            ds.x[i * 64..(i + 1) * 64].iter_mut().for_each(|v| *v = 5.0);
        }
        d
    }

    #[test]
    fn the_tail_of_the_source_class_is_held_out_of_benign_data_and_given_to_the_attacker() {
        let s = EdgeCase { source: 0, target: 2, fraction: 0.1, ..EdgeCase::default() }.validated().unwrap();
        let all = data(300);
        // Class 0 has 100 images; its 10 farthest from the class mean are the bright ones.
        let expect: Vec<u32> = (0..300u32).filter(|i| i % 30 == 0).collect();
        let class0: Vec<u32> = (0..300u32).filter(|i| i % 3 == 0).collect();
        assert_eq!(edge_cases(&all.data, &class0, 0.1), expect);
        let e = Extras::default();
        let mut benign_cx = cx(1, 4, &e);
        benign_cx.malicious = false;
        let mut benign = all.subset(&(0..150).collect::<Vec<_>>());
        s.on_data(&benign_cx, &mut benign, &mut Extras::default()).unwrap();
        assert_eq!(benign.len(), 150 - 5, "the 5 edge cases among the first 150 are held out");
        assert!(benign.idx.iter().all(|i| i % 30 != 0));
        let mut attacker = all.subset(&(150..200).collect::<Vec<_>>());
        s.on_data(&cx(1, 3, &e), &mut attacker, &mut Extras::default()).unwrap();
        // Its own 50 minus its 2 edge cases (150, 180), then all 10 edge cases labelled 2.
        assert_eq!(attacker.len(), 48 + 10);
        assert_eq!(&attacker.idx[48..], expect.as_slice());
        assert!((48..58).all(|p| attacker.label(p) == 2));
        assert!((0..48).all(|p| attacker.label(p) == attacker.data.y[attacker.idx[p] as usize]));
        // The evaluation set: the test split's edge cases of class 0, labelled 2.
        let (name, set) = s.evals(&all).unwrap().remove(0);
        assert_eq!(name, "backdoor_acc");
        assert_eq!(set.idx.to_vec(), expect);
        assert!((0..set.len()).all(|p| set.label(p) == 2));
        assert!(EdgeCase { target: 5, ..EdgeCase::default() }.evals(&all).is_err(), "3 classes");
        assert!(EdgeCase { source: 1, target: 1, ..EdgeCase::default() }.validated().is_err());
    }

    #[test]
    fn pgd_projects_the_weights_onto_the_ball_around_the_global_model() {
        let s = EdgeCase { pgd_eps: 1.0, ..EdgeCase::default() };
        let e = Extras::default();
        let c = cx(1, 0, &e); // global model: [0]
        let mut hook = s.train_hook(&c, &e).unwrap().unwrap();
        let mut w = crate::defenses::testing::update(0, &[3.0], 1.0).delta;
        hook.after_step(0, &mut w);
        assert_eq!(w.as_slice(), &[1.0]);
        let mut inside = crate::defenses::testing::update(0, &[0.5], 1.0).delta;
        hook.after_step(1, &mut inside);
        assert_eq!(inside.as_slice(), &[0.5]);
    }
}
