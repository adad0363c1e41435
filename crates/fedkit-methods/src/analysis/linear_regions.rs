//! Linear regions of a ReLU network along a line through input space (Serra, Tjandraatmadja,
//! Ramalingam, "Bounding and Counting Linear Regions of Deep Neural Networks", ICML 2018; the
//! count Hanin and Rolnick, "Complexity of Linear Regions in Deep Networks", ICML 2019, take
//! along lines between inputs). On the segment x(t) = a + t (b - a), t in [0, 1], the network is
//! piecewise affine: the count is the number of pieces on which every hidden unit's on/off
//! pattern is constant.
//!
//! Exact, layer by layer: on a piece where the layers below are affine in t, a unit's
//! pre-activation is affine too, so its sign changes at most once, where the line between its
//! values at the piece's ends (a forward pass: ReLU is continuous) crosses 0; each crossing splits
//! the piece. Works on the `mlp` without normalisation (entries `fc<k>.weight` `[in, out]` and
//! `fc<k>.bias`).
//!
//! ```text
//! fedkit analyze linear_regions --run runs/mlp --lines 20 --out regions
//! ```

use fedkit_core::{Error, Params, Result};

/// A ReLU multilayer perceptron read from `mlp` parameters.
pub struct ReluMlp {
    /// Per linear layer: weight `[in, out]` row-major, bias, in, out.
    layers: Vec<(Vec<f64>, Vec<f64>, usize, usize)>,
}

impl ReluMlp {
    /// The network of `mlp` parameters; errors on other layouts (normalisation, convolutions).
    pub fn from_params(params: &Params) -> Result<ReluMlp> {
        let layout = params.layout();
        let e = layout.entries();
        if e.len() < 2 || e.len() % 2 != 0 {
            return Err(Error::Method("linear regions are counted on the mlp without normalisation".into()));
        }
        let mut layers = Vec::new();
        for (k, pair) in e.chunks(2).enumerate() {
            let (w, b) = (&pair[0], &pair[1]);
            if w.name != format!("fc{}.weight", k + 1) || b.name != format!("fc{}.bias", k + 1) || w.shape.len() != 2 {
                return Err(Error::Method(format!(
                    "linear regions are counted on the mlp without normalisation; this model has {}",
                    w.name
                )));
            }
            let vals = |r: std::ops::Range<usize>| params.as_slice()[r].iter().map(|&v| v as f64).collect();
            layers.push((vals(w.range()), vals(b.range()), w.shape[0], w.shape[1]));
        }
        Ok(ReluMlp { layers })
    }

    /// Inputs.
    pub fn inputs(&self) -> usize {
        self.layers[0].2
    }

    /// The pre-activations of hidden layer `depth` (0-based) at input `x`.
    fn pre_activation(&self, x: &[f64], depth: usize) -> Vec<f64> {
        let mut h = x.to_vec();
        for (l, (w, b, i, o)) in self.layers.iter().enumerate().take(depth + 1) {
            let mut z = b.clone();
            for r in 0..*i {
                let hr = h[r];
                if hr != 0.0 {
                    z.iter_mut().zip(&w[r * o..(r + 1) * o]).for_each(|(zj, wj)| *zj += hr * wj);
                }
            }
            if l == depth {
                return z;
            }
            h = z.into_iter().map(|v| v.max(0.0)).collect();
        }
        unreachable!("depth < layers")
    }

    fn point(a: &[f64], b: &[f64], t: f64) -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| x + t * (y - x)).collect()
    }

    /// The number of linear regions on the segment from `a` to `b`.
    pub fn regions_on_segment(&self, a: &[f64], b: &[f64]) -> usize {
        let mut pieces = vec![(0.0f64, 1.0f64)];
        for depth in 0..self.layers.len() - 1 {
            let mut next = Vec::with_capacity(pieces.len());
            for &(t0, t1) in &pieces {
                let (z0, z1) = (
                    self.pre_activation(&Self::point(a, b, t0), depth),
                    self.pre_activation(&Self::point(a, b, t1), depth),
                );
                let mut cuts: Vec<f64> = z0
                    .iter()
                    .zip(&z1)
                    .filter(|(u, v)| (**u < 0.0 && **v > 0.0) || (**u > 0.0 && **v < 0.0))
                    .map(|(u, v)| t0 + (t1 - t0) * u / (u - v))
                    .filter(|&t| t > t0 && t < t1)
                    .collect();
                cuts.sort_by(f64::total_cmp);
                cuts.dedup();
                let mut start = t0;
                for c in cuts {
                    next.push((start, c));
                    start = c;
                }
                next.push((start, t1));
            }
            pieces = next;
        }
        pieces.len()
    }

    /// The number of runs of equal activation patterns at `steps + 1` evenly spaced points of the
    /// segment (a lower bound on the regions that is exact once no region is shorter than a step).
    pub fn patterns_on_sweep(&self, a: &[f64], b: &[f64], steps: usize) -> usize {
        let pattern = |t: f64| -> Vec<bool> {
            let x = Self::point(a, b, t);
            (0..self.layers.len() - 1).flat_map(|d| self.pre_activation(&x, d).into_iter().map(|z| z > 0.0)).collect()
        };
        let mut last = pattern(0.0);
        let mut runs = 1;
        for i in 1..=steps {
            let p = pattern(i as f64 / steps as f64);
            if p != last {
                runs += 1;
                last = p;
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::{Layout, ParamKind, RngStream};
    use std::sync::Arc;

    fn net(widths: &[usize], rng: &mut RngStream) -> Params {
        let mut l = Layout::new();
        for (k, w) in widths.windows(2).enumerate() {
            l.push(&format!("fc{}.weight", k + 1), &[w[0], w[1]], ParamKind::Weight);
            l.push(&format!("fc{}.bias", k + 1), &[w[1]], ParamKind::Bias);
        }
        let l = Arc::new(l);
        let v = (0..l.total()).map(|_| rng.normal() as f32).collect();
        Params::from_vec(l, v).unwrap()
    }

    #[test]
    fn exact_count_equals_a_dense_sweep_of_activation_patterns() {
        let mut rng = RngStream::new(13);
        for widths in [&[2, 12, 3][..], &[3, 8, 8, 2]] {
            let m = ReluMlp::from_params(&net(widths, &mut rng)).unwrap();
            for _ in 0..5 {
                let a: Vec<f64> = (0..widths[0]).map(|_| 3.0 * rng.normal()).collect();
                let b: Vec<f64> = (0..widths[0]).map(|_| 3.0 * rng.normal()).collect();
                let exact = m.regions_on_segment(&a, &b);
                assert_eq!(exact, m.patterns_on_sweep(&a, &b, 100_000), "{widths:?}");
                assert!(exact >= 1);
            }
        }
        // a single hidden layer of h units: at most h + 1 regions on a line
        let m = ReluMlp::from_params(&net(&[2, 12, 3], &mut rng)).unwrap();
        assert!(m.regions_on_segment(&[-50.0, -50.0], &[50.0, 50.0]) <= 13);
        let mut l = Layout::new();
        l.push("conv1.weight", &[2, 1, 5, 5], ParamKind::Weight);
        l.push("conv1.bias", &[2], ParamKind::Bias);
        let l = Arc::new(l);
        assert!(ReluMlp::from_params(&Params::zeros(l)).is_err());
    }
}
