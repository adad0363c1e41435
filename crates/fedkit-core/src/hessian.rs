//! Sharpness analysis: the top eigenvalue of the Hessian of the training loss, as PyHessian
//! computes it (Yao, Gholami, Keutzer, Mahoney, "PyHessian: Neural Networks Through the Lens of the
//! Hessian", IEEE BigData 2020): power iteration v <- Hv / ||Hv|| on Hessian-vector products, the
//! eigenvalue estimate being the Rayleigh quotient v'Hv.
//!
//! fedkit's models give gradients, not second derivatives, so each product is a central finite
//! difference of gradients: Hv ~ (grad L(w + eps v) - grad L(w - eps v)) / (2 eps), exact for a
//! quadratic loss and O(eps^2) off otherwise, with eps = sqrt(f32 epsilon) (1 + ||w||). L is the
//! mean training loss over a fixed random subset of the data (training-mode forward passes, clean
//! features); only trainable entries are perturbed (never `ParamKind::Buffer`).

use crate::{Batch, ClientData, Error, Model, Params, Result, RngStream};

/// Samples per forward pass when evaluating the loss over the subset.
const CHUNK: usize = 256;
/// Relative change of the eigenvalue estimate below which the iteration stops early.
const TOL: f64 = 1e-5;

/// The largest-magnitude eigenvalue of the Hessian of the mean loss of `model` at `params` over
/// `samples` samples of `data` (drawn once from `rng`; all of them when there are fewer), by at
/// most `iters` power iterations (fewer when the estimate settles). For a model at a minimum the
/// Hessian is positive semi-definite and this is its top eigenvalue, the usual sharpness measure.
/// Costs two gradient passes over the subset per iteration.
pub fn hessian_top_eigenvalue(
    model: &mut dyn Model,
    params: &Params,
    data: &ClientData,
    samples: usize,
    iters: usize,
    rng: &mut RngStream,
) -> Result<f64> {
    if iters == 0 {
        return Err(Error::Method("hessian_top_eigenvalue needs iters > 0".into()));
    }
    let mut h = HessianVectorProduct::new(model, params, data, samples, rng)?;
    let mut v = h.gaussian(rng);
    normalise(&mut v);
    let mut lambda = f64::NAN;
    for _ in 0..iters {
        let hv = h.apply(&v)?;
        let next: f64 = hv.iter().zip(&v).map(|(a, b)| a * b).sum();
        if !next.is_finite() {
            return Err(Error::Method("hessian_top_eigenvalue: non-finite Hessian-vector product".into()));
        }
        let settled = (next - lambda).abs() <= TOL * next.abs();
        lambda = next;
        v = hv;
        if normalise(&mut v) == 0.0 || settled {
            break;
        }
    }
    Ok(lambda)
}

/// Hessian-vector products of the mean training loss of a model at fixed parameters over a
/// fixed random subset of the data, by central differences of gradients (module docs): the
/// operator PyHessian's analyses (top eigenvalues, trace, spectral density) are built on.
/// Vectors have the parameters' length and are zero on buffer entries.
pub struct HessianVectorProduct<'a> {
    loss: SubsetLoss<'a>,
    params: &'a Params,
    ranges: Vec<std::ops::Range<usize>>,
    eps: f64,
    shifted: Params,
    g_hi: Vec<f64>,
    g_lo: Vec<f64>,
}

impl<'a> HessianVectorProduct<'a> {
    /// The operator at `params` over `samples` samples of `data` drawn from `rng` (all of them
    /// when there are fewer).
    pub fn new(
        model: &'a mut dyn Model,
        params: &'a Params,
        data: &ClientData,
        samples: usize,
        rng: &mut RngStream,
    ) -> Result<Self> {
        if data.is_empty() || samples == 0 {
            return Err(Error::Method(format!(
                "Hessian-vector products need data and samples > 0 (got {} samples available, samples {samples})",
                data.len()
            )));
        }
        let mut ids = rng.choose(data.len(), samples);
        ids.sort_unstable();
        // The loss surface is that of the clean features: per-client transforms are dropped.
        let clean = data.without_transforms();
        let mut unused = RngStream::new(0);
        let batches: Vec<Batch> = ids
            .chunks(CHUNK)
            .map(|c| {
                let mut b = Batch::default();
                b.fill(&clean, c, &mut unused);
                b
            })
            .collect();
        let loss = SubsetLoss { model, batches, forward_rng: rng.fork("hessian.forward"), total: ids.len() };
        let ranges: Vec<_> = params.layout().trainable_ranges().collect();
        let w_norm =
            ranges.iter().flat_map(|r| &params.as_slice()[r.clone()]).map(|&x| x as f64 * x as f64).sum::<f64>();
        let eps = (f32::EPSILON as f64).sqrt() * (1.0 + w_norm.sqrt());
        let n = params.len();
        Ok(HessianVectorProduct {
            loss,
            params,
            ranges,
            eps,
            shifted: params.clone(),
            g_hi: vec![0.0; n],
            g_lo: vec![0.0; n],
        })
    }

    /// The vectors' length (the parameters').
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True for a model without parameters.
    pub fn is_empty(&self) -> bool {
        self.params.len() == 0
    }

    /// The trainable entries' index ranges (the support of every vector).
    pub fn trainable(&self) -> &[std::ops::Range<usize>] {
        &self.ranges
    }

    /// A standard normal vector on the trainable entries.
    pub fn gaussian(&self, rng: &mut RngStream) -> Vec<f64> {
        let mut v = vec![0.0f64; self.len()];
        self.ranges.iter().flat_map(|r| r.clone()).for_each(|i| v[i] = rng.normal());
        v
    }

    /// H v (two gradient passes over the subset).
    pub fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>> {
        let (eps, params) = (self.eps, self.params);
        for sign in [1.0, -1.0] {
            let s = self.shifted.as_mut_slice();
            for i in self.ranges.iter().flat_map(|r| r.clone()) {
                s[i] = (params.as_slice()[i] as f64 + sign * eps * v[i]) as f32;
            }
            let g = if sign > 0.0 { &mut self.g_hi } else { &mut self.g_lo };
            self.loss.mean_grad(&self.shifted, g)?;
        }
        let hv: Vec<f64> = self.g_hi.iter().zip(&self.g_lo).map(|(a, b)| (a - b) / (2.0 * eps)).collect();
        if hv.iter().any(|x| !x.is_finite()) {
            return Err(Error::Method("non-finite Hessian-vector product".into()));
        }
        Ok(hv)
    }
}

/// Scale `v` to unit norm (unless it is zero); returns its former norm.
pub fn normalise(v: &mut [f64]) -> f64 {
    let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|a| *a /= n);
    }
    n
}

/// The mean loss over a fixed set of batches.
struct SubsetLoss<'a> {
    model: &'a mut dyn Model,
    batches: Vec<Batch>,
    /// Cloned for every forward pass, so any training-time randomness is the same at every point.
    forward_rng: RngStream,
    total: usize,
}

impl SubsetLoss<'_> {
    /// The gradient of the mean loss at `w` into `out` (f64, summed in batch order).
    fn mean_grad(&mut self, w: &Params, out: &mut [f64]) -> Result<()> {
        out.fill(0.0);
        let (mut scratch, mut g) = (w.clone(), w.zeros_like());
        for b in &self.batches {
            // A fresh copy per batch: a training-mode forward may update running statistics.
            scratch.as_mut_slice().copy_from_slice(w.as_slice());
            self.model.loss_grad(&mut scratch, b, &mut g, &mut self.forward_rng.clone())?;
            let share = b.len() as f64 / self.total as f64;
            out.iter_mut().zip(g.as_slice()).for_each(|(o, &x)| *o += share * x as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Dataset, Layout, ParamKind};

    /// Least squares, L(w) = mean_i (x_i . w + b - t_i)^2 / 2 with t_i = y_i: its Hessian is the
    /// constant [X 1]'[X 1] / n. A running count in a buffer entry stands in for running statistics.
    struct LeastSquares {
        layout: Arc<Layout>,
    }

    impl Model for LeastSquares {
        fn clone_box(&self) -> Box<dyn Model> {
            Box::new(LeastSquares { layout: self.layout.clone() })
        }
        fn layout(&self) -> Arc<Layout> {
            self.layout.clone()
        }
        fn init(&self, _: &mut RngStream) -> Params {
            Params::zeros(self.layout.clone())
        }
        fn loss_grad(&mut self, p: &mut Params, b: &Batch, g: &mut Params, _: &mut RngStream) -> Result<f32> {
            let d = b.feature_shape[0];
            let (n, gs) = (b.len() as f32, g.as_mut_slice());
            gs.fill(0.0);
            let mut loss = 0.0;
            for (x, &y) in b.x.chunks(d).zip(&b.y) {
                let w = p.as_slice();
                let r = x.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + w[d] - y as f32;
                loss += 0.5 * r * r / n;
                gs[..d].iter_mut().zip(x).for_each(|(gj, xj)| *gj += r * xj / n);
                gs[d] += r / n;
            }
            p.as_mut_slice()[d + 1] += 1.0;
            Ok(loss)
        }
        fn eval_batch(&mut self, _: &Params, _: &Batch) -> Result<(f64, usize)> {
            Ok((0.0, 0))
        }
    }

    // On least squares, where the Hessian is known in closed form, the estimate matches its top
    // eigenvalue (computed here by 2000 exact f64 power iterations) within 1%, and the parameters'
    // buffer entry is neither perturbed nor changed.
    #[test]
    fn matches_the_closed_form_top_eigenvalue() {
        let (n, d) = (30, 4);
        let mut rng = RngStream::new(3);
        // Correlated features with different scales, so the top eigenvector is not an axis.
        let x: Vec<f32> = (0..n)
            .flat_map(|_| {
                let z: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
                (0..d).map(move |j| (z[j] * (j + 1) as f64 + 0.5 * z[0]) as f32).collect::<Vec<_>>()
            })
            .collect();
        let y: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let data =
            Dataset { name: "ls".into(), x, y, feature_shape: vec![d], classes: 3, users: None, targets: Vec::new() };
        let data = ClientData::whole(Arc::new(data));
        let mut h = vec![vec![0.0f64; d + 1]; d + 1];
        for i in 0..n {
            let row: Vec<f64> = data.data.features(i).iter().map(|&v| v as f64).chain([1.0]).collect();
            for a in 0..=d {
                for b in 0..=d {
                    h[a][b] += row[a] * row[b] / n as f64;
                }
            }
        }
        let mut v = vec![1.0f64; d + 1];
        let mut want = 0.0;
        for _ in 0..2000 {
            let hv: Vec<f64> = h.iter().map(|r| r.iter().zip(&v).map(|(a, b)| a * b).sum()).collect();
            want = hv.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>() / v.iter().map(|a| a * a).sum::<f64>();
            let norm = hv.iter().map(|a| a * a).sum::<f64>().sqrt();
            v = hv.iter().map(|a| a / norm).collect();
        }
        let mut l = Layout::new();
        l.push("w", &[d], ParamKind::Weight);
        l.push("b", &[1], ParamKind::Bias);
        l.push("count", &[1], ParamKind::Buffer);
        let l = Arc::new(l);
        let mut model = LeastSquares { layout: l.clone() };
        let p = Params::from_vec(l, vec![0.3, -0.2, 0.1, 0.5, 0.05, 7.0]).unwrap();
        let before = p.clone();
        let got = hessian_top_eigenvalue(&mut model, &p, &data, n, 100, &mut RngStream::new(1)).unwrap();
        assert!((got - want).abs() <= 0.01 * want, "estimate {got}, closed form {want}");
        assert_eq!(p, before);
        // Fewer samples than requested: all of them; none at all: an error.
        let again = hessian_top_eigenvalue(&mut model, &p, &data, 10 * n, 100, &mut RngStream::new(1)).unwrap();
        assert_eq!(got, again);
        assert!(hessian_top_eigenvalue(&mut model, &p, &data, 0, 10, &mut RngStream::new(1)).is_err());
    }
}
