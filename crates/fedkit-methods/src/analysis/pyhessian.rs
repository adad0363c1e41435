//! PyHessian's analyses of the loss curvature (Yao, Gholami, Keutzer, Mahoney, "PyHessian:
//! Neural Networks Through the Lens of the Hessian", IEEE BigData 2020), all from Hessian-vector
//! products ([`fedkit_core::HessianVectorProduct`]: central differences of gradients of the mean
//! training loss over a fixed random subset):
//!
//! - **Top-k eigenvalues**: power iteration v <- Hv / ||Hv|| with deflation, each iterate
//!   orthogonalised against the eigenvectors already found, stopped when the Rayleigh quotient
//!   changes by less than `tol` (relative), as PyHessian's `eigenvalues(maxIter, tol, top_n)`.
//!   Each is the largest in magnitude of the deflated operator once converged; with eigenvalues
//!   of near-equal magnitude and opposite sign the stopping rule can end early, so the list is
//!   not always in decreasing magnitude.
//! - **Trace** (Hutchinson): the mean of v^T H v over Rademacher v, stopped when the running
//!   mean changes by less than `tol` (relative), as PyHessian's `trace(maxIter, tol)`.
//! - **Spectral density** (stochastic Lanczos quadrature): m Lanczos steps from a normalised
//!   Rademacher v with full reorthogonalisation give a tridiagonal T; its eigenvalues theta_j
//!   are the nodes and the squared first components of its eigenvectors tau_j^2 the weights
//!   (summing to 1); runs are averaged. The density is the weighted nodes smoothed by a Gaussian
//!   of variance sigma^2 = 1e-5 x max(1, lambda_max - lambda_min) on a grid padded by 0.01, as
//!   PyHessian's `density_generate`.
//!
//! ```text
//! fedkit analyze hessian --run runs/sam --top 3 --samples 1000 --out hessian
//! ```

use fedkit_core::hessian::normalise;
use fedkit_core::{Error, HessianVectorProduct, Result, RngStream};
use serde::Serialize;

use super::linalg::{Mat, sym_eigen};

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// v -= sum (v . u) u over the orthonormal `basis`.
fn orthogonalise(v: &mut [f64], basis: &[Vec<f64>]) {
    for u in basis {
        let d = dot(v, u);
        v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
    }
}

/// The `k` eigenvalues of largest magnitude (PyHessian's order: each the top of the deflated
/// operator), by at most `iters` power iterations each.
pub fn top_eigenvalues(
    h: &mut HessianVectorProduct,
    k: usize,
    iters: usize,
    tol: f64,
    rng: &mut RngStream,
) -> Result<Vec<f64>> {
    if k == 0 || iters == 0 {
        return Err(Error::Method("top_eigenvalues needs k >= 1 and iters >= 1".into()));
    }
    let (mut values, mut vectors): (Vec<f64>, Vec<Vec<f64>>) = (Vec::new(), Vec::new());
    for _ in 0..k {
        let mut v = h.gaussian(rng);
        orthogonalise(&mut v, &vectors);
        normalise(&mut v);
        let mut lambda = f64::NAN;
        for _ in 0..iters {
            let mut hv = h.apply(&v)?;
            let next = dot(&hv, &v);
            orthogonalise(&mut hv, &vectors);
            let settled = (next - lambda).abs() <= tol * (next.abs() + 1e-12);
            lambda = next;
            if normalise(&mut hv) == 0.0 {
                break;
            }
            v = hv;
            if settled {
                break;
            }
        }
        values.push(lambda);
        vectors.push(v);
    }
    Ok(values)
}

/// A Rademacher vector (+-1) on the trainable entries.
fn rademacher(h: &HessianVectorProduct, rng: &mut RngStream) -> Vec<f64> {
    let mut v = vec![0.0; h.len()];
    for i in h.trainable().iter().flat_map(|r| r.clone()) {
        v[i] = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
    }
    v
}

/// Hutchinson's trace estimate and the number of probes it took (at most `iters`).
pub fn trace(h: &mut HessianVectorProduct, iters: usize, tol: f64, rng: &mut RngStream) -> Result<(f64, usize)> {
    if iters == 0 {
        return Err(Error::Method("trace needs iters >= 1".into()));
    }
    let (mut sum, mut mean) = (0.0, f64::NAN);
    for i in 1..=iters {
        let v = rademacher(h, rng);
        sum += dot(&h.apply(&v)?, &v);
        let next = sum / i as f64;
        if (next - mean).abs() <= tol * (next.abs() + 1e-12) {
            return Ok((next, i));
        }
        mean = next;
    }
    Ok((mean, iters))
}

/// SLQ's nodes and weights, `runs` Lanczos runs of `steps` steps (fewer when the Krylov space
/// closes), each run's weights summing to 1.
#[derive(Clone, Debug, Serialize)]
pub struct Spectrum {
    pub nodes: Vec<Vec<f64>>,
    pub weights: Vec<Vec<f64>>,
}

/// Stochastic Lanczos quadrature.
pub fn spectrum(h: &mut HessianVectorProduct, steps: usize, runs: usize, rng: &mut RngStream) -> Result<Spectrum> {
    if steps == 0 || runs == 0 {
        return Err(Error::Method("spectrum needs steps >= 1 and runs >= 1".into()));
    }
    let mut out = Spectrum { nodes: Vec::new(), weights: Vec::new() };
    for _ in 0..runs {
        let mut v = rademacher(h, rng);
        normalise(&mut v);
        let (mut alpha, mut beta, mut basis) = (Vec::new(), Vec::new(), vec![v]);
        for j in 0..steps {
            let mut w = h.apply(&basis[j])?;
            let a = dot(&w, &basis[j]);
            alpha.push(a);
            // full reorthogonalisation (twice is enough)
            orthogonalise(&mut w, &basis);
            orthogonalise(&mut w, &basis);
            let b = normalise(&mut w);
            if j + 1 == steps || b <= 1e-10 * (a.abs() + 1e-30) {
                break;
            }
            beta.push(b);
            basis.push(w);
        }
        let m = alpha.len();
        let mut t = Mat::zeros(m, m);
        for i in 0..m {
            t.data[i * m + i] = alpha[i];
            if i + 1 < m {
                t.data[i * m + i + 1] = beta[i];
                t.data[(i + 1) * m + i] = beta[i];
            }
        }
        let e = sym_eigen(&t)?;
        out.nodes.push(e.values.clone());
        out.weights.push((0..m).map(|j| e.vectors.at(0, j).powi(2)).collect());
    }
    Ok(out)
}

/// PyHessian's smoothed density of `s` on `bins` grid points: (grid, density), the density
/// integrating to 1 over the grid.
pub fn density(s: &Spectrum, bins: usize) -> (Vec<f64>, Vec<f64>) {
    let all = s.nodes.iter().flatten();
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let (lo, hi) = (lo - 0.01, hi + 0.01);
    let sigma2 = 1e-5 * (hi - lo).max(1.0);
    let bins = bins.max(2);
    let grid: Vec<f64> = (0..bins).map(|i| lo + (hi - lo) * i as f64 / (bins - 1) as f64).collect();
    let step = (hi - lo) / (bins - 1) as f64;
    let mut dens = vec![0.0; bins];
    for (nodes, weights) in s.nodes.iter().zip(&s.weights) {
        let mut run = vec![0.0; bins];
        for (&t, &w) in nodes.iter().zip(weights) {
            for (d, &x) in run.iter_mut().zip(&grid) {
                *d += w * (-(x - t).powi(2) / (2.0 * sigma2)).exp() / (2.0 * std::f64::consts::PI * sigma2).sqrt();
            }
        }
        // normalise each run on the grid, as PyHessian does
        let total: f64 = run.iter().sum::<f64>() * step;
        if total > 0.0 {
            dens.iter_mut().zip(&run).for_each(|(d, r)| *d += r / total / s.nodes.len() as f64);
        }
    }
    (grid, dens)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::local_steps::test_model::LeastSquares;
    use fedkit_core::{ClientData, Dataset, Model, Params};

    /// A least-squares problem with d features (constant Hessian mean [x; 1][x; 1]^T) and its
    /// exact Hessian's eigenvalues.
    fn problem(d: usize) -> (LeastSquares, Params, ClientData, Vec<f64>) {
        let n = 40;
        let mut rng = RngStream::new(9);
        let x: Vec<f32> = (0..n * d).map(|i| (rng.normal() * (1.0 + (i % d) as f64)) as f32).collect();
        let k = d + 1;
        let mut h = Mat::zeros(k, k);
        for row in x.chunks(d) {
            let r: Vec<f64> = row.iter().map(|&v| v as f64).chain([1.0]).collect();
            for a in 0..k {
                for b in 0..k {
                    h.data[a * k + b] += r[a] * r[b] / n as f64;
                }
            }
        }
        let exact = sym_eigen(&h).unwrap().values;
        let data = Dataset {
            name: "ls".into(),
            x,
            y: vec![0; n],
            feature_shape: vec![d],
            classes: 1,
            users: None,
            targets: Vec::new(),
        };
        let model = LeastSquares::new(d);
        let p = Params::from_vec(model.layout(), vec![0.1; d + 2]).unwrap();
        (model, p, ClientData::whole(Arc::new(data)), exact)
    }

    #[test]
    fn top_eigenvalues_trace_and_density_match_the_exact_hessian() {
        let d = 6;
        let (mut model, p, data, exact) = problem(d);
        let mut rng = RngStream::new(1);
        let mut h = HessianVectorProduct::new(&mut model, &p, &data, 1000, &mut rng).unwrap();
        let top = top_eigenvalues(&mut h, 3, 500, 1e-10, &mut rng).unwrap();
        for (got, want) in top.iter().zip(&exact) {
            assert!((got - want).abs() <= 2e-3 * want, "top {top:?} exact {exact:?}");
        }
        // Hutchinson converges to the exact trace
        let want: f64 = exact.iter().sum();
        let (t, _) = trace(&mut h, 4000, 0.0, &mut rng).unwrap();
        assert!((t - want).abs() <= 0.05 * want, "trace {t} exact {want}");
        // d + 1 Lanczos steps find the whole spectrum (the buffer entry is not perturbed); the
        // weights sum to 1
        let s = spectrum(&mut h, d + 1, 2, &mut rng).unwrap();
        for (nodes, weights) in s.nodes.iter().zip(&s.weights) {
            assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            for (got, want) in nodes.iter().zip(&exact) {
                assert!((got - want).abs() <= 1e-3 * exact[0], "nodes {nodes:?} exact {exact:?}");
            }
        }
        let (grid, dens) = density(&s, 20000);
        let step = grid[1] - grid[0];
        assert!((dens.iter().sum::<f64>() * step - 1.0).abs() < 1e-9, "the density integrates to 1");
        assert!(top_eigenvalues(&mut h, 0, 10, 1e-3, &mut rng).is_err());
    }
}
