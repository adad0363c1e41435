//! The critical sample ratio of Arpit et al., "A Closer Look at Memorization in Deep Networks",
//! ICML 2017 (section 3.2): the fraction of data points that have an adversarial example within
//! an L-infinity box of radius r, a measure of how complex the learned decision boundary is
//! around the data (it rises as a network memorises noise).
//!
//! The paper searches the box with Langevin adversarial sample search; here the search is
//! projected sign-gradient ascent (PGD) on the cross-entropy of the model's own prediction:
//! x <- clip_box(x + (r / 4) sign(grad_x CE(f(x), y_hat))) for `steps` steps, and a point is
//! critical when the predicted class changes at some step. PGD is a stronger search than a
//! random walk, so the ratio is an upper-side estimate of the paper's at the same radius.

use crate::model::{Mode, Model, Outputs, argmax};
use crate::{Batch, ClientData, Error, Params, Result, RngStream};

/// The fraction of `samples` points of `data` (a seeded random subset, clean features) that
/// are critical at L-infinity radius `radius` for `params`.
pub fn critical_sample_ratio(
    model: &mut dyn Model,
    params: &Params,
    data: &ClientData,
    samples: usize,
    radius: f32,
    steps: usize,
    rng: &mut RngStream,
) -> Result<f64> {
    if data.is_empty() || samples == 0 || !(radius > 0.0) || steps == 0 {
        return Err(Error::Method("critical_sample_ratio needs data, samples > 0, radius > 0 and steps > 0".into()));
    }
    if data.data.positions() > 0 {
        return Err(Error::Method(format!(
            "critical_sample_ratio flips one class per sample; {} has a target per position (sequence data)",
            data.data.name
        )));
    }
    let clean = data.without_transforms();
    let mut pick = rng.choose(clean.len(), samples.min(clean.len()));
    pick.sort_unstable();
    let (mut critical, mut total) = (0usize, 0usize);
    let mut out = Outputs::default();
    let mut gx = Vec::new();
    for chunk in pick.chunks(64) {
        let mut batch = Batch::default();
        batch.fill(&clean, chunk, &mut RngStream::new(0));
        model.forward(params, &batch, Mode::Eval, &mut out)?;
        let predicted: Vec<u32> = (0..chunk.len()).map(|i| argmax(out.logits_of(i)) as u32).collect();
        let x0 = batch.x.clone();
        let d = x0.len() / chunk.len().max(1);
        let mut flipped = vec![false; chunk.len()];
        batch.y.clone_from(&predicted);
        for _ in 0..steps {
            model.input_grad(params, &batch, &mut gx)?;
            for (j, ((x, g), x0)) in batch.x.iter_mut().zip(&gx).zip(&x0).enumerate() {
                if !flipped[j / d] {
                    let step = radius / 4.0 * g.signum() * (*g != 0.0) as u8 as f32;
                    *x = (*x + step).clamp(x0 - radius, x0 + radius);
                }
            }
            model.forward(params, &batch, Mode::Eval, &mut out)?;
            for (i, f) in flipped.iter_mut().enumerate() {
                *f |= argmax(out.logits_of(i)) as u32 != predicted[i];
            }
        }
        critical += flipped.iter().filter(|&&f| f).count();
        total += chunk.len();
    }
    Ok(critical as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{CrossEntropy, Head, OutputGrads};
    use crate::{Dataset, Layout, ParamKind};

    /// One feature, two classes, logits (x - 0.5, 0): the decision boundary is x = 0.5.
    struct Threshold {
        layout: Arc<Layout>,
    }

    impl Model for Threshold {
        fn clone_box(&self) -> Box<dyn Model> {
            Box::new(Threshold { layout: self.layout.clone() })
        }
        fn layout(&self) -> Arc<Layout> {
            self.layout.clone()
        }
        fn init(&self, _: &mut RngStream) -> Params {
            Params::zeros(self.layout.clone())
        }
        fn forward(&mut self, _: &Params, b: &Batch, _: Mode, out: &mut Outputs) -> Result<()> {
            out.logits = b.x.iter().flat_map(|&x| [x - 0.5, 0.0]).collect();
            out.classes = 2;
            out.features = b.x.clone();
            out.feature_dim = 1;
            Ok(())
        }
        fn input_grad(&mut self, p: &Params, b: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
            let mut out = Outputs::default();
            self.forward(p, b, Mode::Eval, &mut out)?;
            let mut g = OutputGrads::default();
            let l = CrossEntropy.value_grad(&out, b, &mut g)?;
            gx.clear();
            gx.extend(g.logits.chunks(2).map(|z| z[0]));
            Ok(l)
        }
    }

    // With the boundary at 0.5, exactly the points within the radius of it are critical.
    #[test]
    fn points_within_the_radius_of_the_boundary_are_critical() {
        let n = 1000;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32).collect();
        let data = Arc::new(Dataset {
            name: "t".into(),
            x,
            y: vec![0; n],
            feature_shape: vec![1],
            classes: 2,
            users: None,
            targets: Vec::new(),
        });
        let mut l = Layout::new();
        l.push("w", &[1], ParamKind::Weight);
        let mut m = Threshold { layout: Arc::new(l) };
        let p = m.init(&mut RngStream::new(0));
        for r in [0.05f32, 0.1, 0.2] {
            let ratio =
                critical_sample_ratio(&mut m, &p, &ClientData::whole(data.clone()), n, r, 10, &mut RngStream::new(1))
                    .unwrap();
            assert!((ratio - 2.0 * r as f64).abs() < 0.005, "radius {r}: {ratio}");
        }
        assert!(
            critical_sample_ratio(&mut m, &p, &ClientData::whole(data), n, 0.0, 10, &mut RngStream::new(1)).is_err()
        );
    }
}
