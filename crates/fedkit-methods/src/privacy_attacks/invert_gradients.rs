//! `invert_gradients`: reconstruct a client's training images from the update it sent the
//! server (Geiping, Bauermeister, Dröge, Moeller, "Inverting Gradients - How easy is it to break
//! privacy in federated learning?", NeurIPS 2020; PAPERS.txt 3), with iDLG's label recovery
//! (Zhao, Mopuri, Bilen 2020) and the analytic inversion of a fully connected first layer.
//!
//! The attacker is the server: it knows the model the client started from (the global model
//! theta of the round before) and receives the update Delta = theta_client - theta. For FedSGD
//! (one local step) Delta = -eta * grad_theta L(x, y); after K local steps the naive attack
//! treats -Delta as one gradient (cosine similarity ignores its scale).
//!
//! - **Labels** (iDLG): for one sample, the cross-entropy's output-bias gradient p - onehot(y) is
//!   negative only at the label, so y = argmin_c of the bias gradient. For B > 1 samples the
//!   bias gradient is mean(p) - n/B per class; with predictions taken as uniform (1/C, right
//!   for an untrained model) n_c ~ B (1/C - g_c), rounded to B samples by largest remainders,
//!   after scaling the update so that its largest entry (a class absent from the batch) is 1/C.
//!   `labels = "known"` gives the attacker the true labels instead (the paper's setting).
//! - **Analytic first layer**: for one sample and a first layer z = W^T x + b, dL/dW[k, i] =
//!   x_k dL/db_i, so x = sum_i dW[:, i] db_i / sum_i db_i^2, exact up to float rounding for
//!   FedSGD on a model that starts with a fully connected layer (the mlp, logreg).
//! - **Optimisation** (the paper's Algorithm): minimise over dummy images x' in the box
//!   [lo, hi]
//!   `1 - <g(x'), g*> / (||g(x')|| ||g*||) + alpha TV(x')`, g(x') = grad_theta L(x', y'), g* =
//!   -Delta over the trained entries, with signed gradients fed to Adam (step `lr`, divided by 10
//!   at 3/8, 5/8 and 7/8 of the iterations), projection onto the box after every step, from
//!   `restarts` random starts (the best final loss wins). TV is the anisotropic total variation
//!   of each image (mean absolute difference of horizontal and vertical neighbours).
//! - **The gradient of a gradient**: d/dx' of the cosine term is d/dx' <g(x'), u> with u the
//!   cosine's gradient with respect to g held fixed, and since <grad_theta L(x', theta), u> is the
//!   directional derivative of L along u, it equals the central difference
//!   ||u|| (grad_x L(x', theta + h' u/||u||) - grad_x L(x', theta - h' u/||u||)) / (2h') of two
//!   `Model::input_grad` calls, with h' = h max(1, ||theta||) (`fd_step` = h; error O(h'^2)
//!   where the network is smooth). ReLU and max-pool switches make the input gradient jump, so
//!   the step must be small: at h = 1e-5 the estimate is within 2% of finite differences in
//!   input space on the lenet (the test; 0.05-1.2% in the directions drawn), at h = 1e-3 it
//!   is off by up to 10x.
//!
//! - **Unrolled** (`--unrolled`, for K > 1 local steps of plain SGD): the dummy batch is
//!   trained for the same K steps at the client's rate, and the simulated update Delta' is
//!   matched with Delta by cosine; its gradient goes back through the K steps by the adjoint
//!   recursion, with Hessian-vector products by central differences of parameter gradients (see
//!   `unrolled_loss_grad`). The naive attack instead matches -Delta with one gradient at theta.
//!
//! Parameters (`fedkit attack invert` flags): `iterations` (10000), `lr` (0.03), `tv` (alpha,
//! 3e-3), `restarts` (4), `fd_step` (h, 1e-5), `labels` ("idlg" | "known"), `unrolled`. The
//! defaults of lr, alpha and restarts were chosen on validation clients of the lenet on
//! Fashion-MNIST (docs/results.md).
//!
//! Example:
//! ```text
//! fedkit run configs/papers/invert_gradients.toml --out runs/fedsgd
//! fedkit attack invert --run runs/fedsgd --round 1 --client 0 --out runs/fedsgd/attack
//! ```

use fedkit_core::{Batch, CrossEntropy, Error, Layout, Mode, Model, Params, Result, RngStream};

use super::image_metrics::image_shape;

/// Where the dummy batch's labels come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelSource {
    /// Recovered from the output-layer bias of the update (iDLG; counting for B > 1).
    Idlg,
    /// The client's true labels (the attacker is told them).
    Known,
}

/// The attack's settings (the paper's symbols in the module docs).
#[derive(Clone, Debug)]
pub struct InvertGradients {
    pub iterations: usize,
    pub lr: f64,
    pub tv: f64,
    pub restarts: usize,
    pub fd_step: f64,
    pub labels: LabelSource,
    /// `Some((K, eta))`: the unrolled attack on an update of K plain SGD steps of rate eta;
    /// `None`: the update matched as one gradient (exact for FedSGD, naive for K > 1).
    pub unroll: Option<(usize, f64)>,
    /// The box the images live in (the data's pixel range).
    pub range: (f32, f32),
}

impl Default for InvertGradients {
    fn default() -> Self {
        InvertGradients {
            iterations: 10000,
            lr: 0.03,
            tv: 3e-3,
            restarts: 4,
            fd_step: 1e-5,
            labels: LabelSource::Idlg,
            unroll: None,
            range: (0.0, 1.0),
        }
    }
}

/// What the server observed of one client in one round.
pub struct Observed<'a> {
    /// The model the client started from.
    pub global: &'a Params,
    /// The update it sent: its model minus `global`.
    pub update: &'a Params,
    /// Number of samples behind the update (the dummy batch's size).
    pub samples: usize,
    /// Shape of one sample.
    pub shape: Vec<usize>,
    pub classes: usize,
}

/// A reconstructed batch.
#[derive(Clone, Debug)]
pub struct Reconstruction {
    /// `samples * d` values.
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
    /// The final matching loss (1 - cosine + alpha TV).
    pub loss: f64,
    /// (iteration, loss) every `iterations / 20` steps of the winning restart.
    pub curve: Vec<(usize, f64)>,
}

impl InvertGradients {
    /// Check the settings; the error names the flag.
    pub fn validate(&self) -> Result<()> {
        if self.iterations == 0 || self.restarts == 0 {
            return Err(Error::config("--iterations / --restarts", "must be at least 1"));
        }
        for (name, v) in [("--lr", self.lr), ("--fd-step", self.fd_step)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::config(name, format!("must be a finite number > 0, got {v}")));
            }
        }
        if !(self.tv >= 0.0 && self.tv.is_finite()) {
            return Err(Error::config("--tv", format!("must be a finite number >= 0, got {}", self.tv)));
        }
        Ok(())
    }

    /// Reconstruct the batch behind `obs.update` with labels `labels`, from `restarts` random
    /// starts drawn from `rng`.
    pub fn invert(
        &self,
        model: &mut dyn Model,
        obs: &Observed,
        labels: &[u32],
        rng: &mut RngStream,
    ) -> Result<Reconstruction> {
        self.validate()?;
        if labels.len() != obs.samples || obs.samples == 0 {
            return Err(Error::Method(format!("invert: {} labels for {} samples", labels.len(), obs.samples)));
        }
        // The naive attack matches a gradient with -update; the unrolled one the update itself.
        let target = if self.unroll.is_some() { trainable_part(obs.update) } else { target_gradient(obs.update) };
        if target.l2() == 0.0 {
            return Err(Error::Method("invert: the update is zero; there is no gradient to match".into()));
        }
        let mut best: Option<Reconstruction> = None;
        for r in 0..self.restarts {
            let mut start = rng.fork(&format!("restart{r}"));
            let rec = self.descend(model, obs, labels, &target, &mut start)?;
            if best.as_ref().is_none_or(|b| rec.loss < b.loss) {
                best = Some(rec);
            }
        }
        let best = best.ok_or_else(|| Error::Method("invert: no restart".into()))?;
        if best.x.iter().any(|v| !v.is_finite()) || !best.loss.is_finite() {
            return Err(Error::Method(format!(
                "invert: the reconstruction diverged (not finite); try a smaller --lr than {} or another --fd-step",
                self.lr
            )));
        }
        Ok(best)
    }

    fn descend(
        &self,
        model: &mut dyn Model,
        obs: &Observed,
        labels: &[u32],
        target: &Params,
        rng: &mut RngStream,
    ) -> Result<Reconstruction> {
        let d: usize = obs.shape.iter().product();
        let (lo, hi) = self.range;
        let mut batch = Batch {
            x: (0..obs.samples * d).map(|_| lo + (hi - lo) * rng.uniform() as f32).collect(),
            y: labels.to_vec(),
            targets: Vec::new(),
            feature_shape: obs.shape.clone(),
            classes: obs.classes,
        };
        let (mut m, mut v) = (vec![0.0f64; batch.x.len()], vec![0.0f64; batch.x.len()]);
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let mut gx = vec![0.0f32; batch.x.len()];
        let mut curve = Vec::new();
        let every = (self.iterations / 20).max(1);
        let mut loss = f64::NAN;
        for t in 1..=self.iterations {
            let cos = self.matching_loss_grad(model, obs.global, &batch, target, &mut gx)?;
            let tv = if self.tv > 0.0 { total_variation(&batch.x, &obs.shape, self.tv, &mut gx) } else { 0.0 };
            loss = cos + self.tv * tv;
            if t == 1 || t % every == 0 {
                curve.push((t, loss));
            }
            let lr = self.lr * schedule(t, self.iterations);
            let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
            for (i, x) in batch.x.iter_mut().enumerate() {
                let s = (gx[i] as f64).signum() * f64::from(gx[i] != 0.0);
                m[i] = b1 * m[i] + (1.0 - b1) * s;
                v[i] = b2 * v[i] + (1.0 - b2) * s * s;
                let step = lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                *x = (*x - step as f32).clamp(lo, hi);
            }
        }
        // The loss of the final (projected) images.
        let cos = self.matching_loss_grad(model, obs.global, &batch, target, &mut gx)?;
        let tv = if self.tv > 0.0 { total_variation(&batch.x, &obs.shape, self.tv, &mut gx) } else { 0.0 };
        if cos.is_finite() {
            loss = cos + self.tv * tv;
        }
        curve.push((self.iterations, loss));
        Ok(Reconstruction { x: batch.x, labels: labels.to_vec(), loss, curve })
    }
}

impl InvertGradients {
    /// The matching loss of the dummy batch and its gradient with respect to the dummy inputs.
    fn matching_loss_grad(
        &self,
        model: &mut dyn Model,
        global: &Params,
        batch: &Batch,
        target: &Params,
        gx: &mut Vec<f32>,
    ) -> Result<f64> {
        match self.unroll {
            None => cosine_loss_grad(model, global, batch, target, self.fd_step, gx),
            Some((steps, lr)) => unrolled_loss_grad(model, global, batch, target, steps, lr, self.fd_step, gx),
        }
    }
}

/// `update` on the trained entries, zero on buffers.
fn trainable_part(update: &Params) -> Params {
    let mut t = target_gradient(update);
    t.scale(-1.0);
    t
}

/// 1 - cos(Delta'(x), Delta) for the update Delta' = theta_K - theta_0 of `steps` plain SGD
/// steps of rate `lr` from `params` on the dummy batch, and its gradient with respect to the
/// dummy inputs into `gx`, by the adjoint recursion: lambda_K = d(1 - cos)/d theta_K, then for
/// k = K-1 .. 0, gx += -lr d/dx <g(x, theta_k), lambda_{k+1}> and
/// lambda_k = lambda_{k+1} - lr H_k lambda_{k+1}, the Hessian-vector product H_k lambda by a
/// central difference of parameter gradients (step h max(1, ||theta||) along lambda).
#[allow(clippy::too_many_arguments)]
pub fn unrolled_loss_grad(
    model: &mut dyn Model,
    params: &Params,
    batch: &Batch,
    target: &Params,
    steps: usize,
    lr: f64,
    h: f64,
    gx: &mut Vec<f32>,
) -> Result<f64> {
    let mut thetas = vec![params.clone()];
    for k in 0..steps {
        let g = param_gradient(model, &thetas[k], batch)?;
        let mut next = thetas[k].clone();
        next.axpy(-lr as f32, &g);
        thetas.push(next);
    }
    let delta = thetas[steps].sub(params);
    let (dn, tn) = (delta.l2(), target.l2());
    gx.clear();
    gx.resize(batch.x.len(), 0.0);
    if dn == 0.0 || tn == 0.0 {
        return Ok(1.0);
    }
    let c = delta.dot(target) / (dn * tn);
    let mut lambda = delta.clone();
    lambda.scale((c / (dn * dn)) as f32);
    lambda.axpy((-1.0 / (dn * tn)) as f32, target);
    let mut part = Vec::new();
    for theta in thetas[..steps].iter().rev() {
        gradient_dot_input_grad(model, theta, batch, &lambda, h, &mut part)?;
        gx.iter_mut().zip(&part).for_each(|(g, p)| *g -= (lr * *p as f64) as f32);
        let norm = lambda.l2();
        if norm == 0.0 {
            break;
        }
        let step = h * theta.l2().max(1.0);
        let mut plus = theta.clone();
        plus.axpy((step / norm) as f32, &lambda);
        let mut minus = theta.clone();
        minus.axpy((-step / norm) as f32, &lambda);
        let mut hv = param_gradient(model, &plus, batch)?;
        hv.axpy(-1.0, &param_gradient(model, &minus, batch)?);
        lambda.axpy((-lr * norm / (2.0 * step)) as f32, &hv);
    }
    Ok(1.0 - c)
}

/// The step-size factor at iteration `t` of `n`: 1, then 0.1 after 3/8, 0.01 after 5/8 and
/// 0.001 after 7/8 of the iterations.
fn schedule(t: usize, n: usize) -> f64 {
    let f = t as f64 / n as f64;
    [3.0 / 8.0, 5.0 / 8.0, 7.0 / 8.0].iter().filter(|&&m| f > m).fold(1.0, |a, _| a * 0.1)
}

/// The gradient the update stands for, up to a positive scale: -update on the trained entries,
/// zero on buffers.
pub fn target_gradient(update: &Params) -> Params {
    let mut t = update.zeros_like();
    let (src, dst) = (update.as_slice(), t.as_mut_slice());
    for r in update.layout().trainable_ranges() {
        dst[r.clone()].iter_mut().zip(&src[r]).for_each(|(d, s)| *d = -s);
    }
    t
}

/// grad_theta of the mean cross-entropy of `batch` at `params` (training mode, running statistics
/// untouched), zero on buffers.
pub fn param_gradient(model: &mut dyn Model, params: &Params, batch: &Batch) -> Result<Params> {
    let mut p = params.clone();
    let mut g = params.zeros_like();
    let head = &mut CrossEntropy;
    model.vjp(&mut p, batch, Mode::TrainFrozen, head, Some(&mut g), None, &mut RngStream::new(0))?;
    let layout = params.layout().clone();
    let keep: Vec<std::ops::Range<usize>> = layout.trainable_ranges().collect();
    let mut out = params.zeros_like();
    for r in keep {
        out.as_mut_slice()[r.clone()].copy_from_slice(&g.as_slice()[r]);
    }
    Ok(out)
}

/// d/dx <grad_theta L(x, theta), u> by the central difference of input gradients at
/// theta +- h' u/||u||, h' = h max(1, ||theta||), into `gx` (overwritten).
pub fn gradient_dot_input_grad(
    model: &mut dyn Model,
    params: &Params,
    batch: &Batch,
    u: &Params,
    h: f64,
    gx: &mut Vec<f32>,
) -> Result<()> {
    let norm = u.l2();
    gx.clear();
    gx.resize(batch.x.len(), 0.0);
    if norm == 0.0 {
        return Ok(());
    }
    let h = h * params.l2().max(1.0);
    let mut plus = params.clone();
    plus.axpy((h / norm) as f32, u);
    let mut minus = params.clone();
    minus.axpy((-h / norm) as f32, u);
    let (mut gp, mut gm) = (Vec::new(), Vec::new());
    model.input_grad(&plus, batch, &mut gp)?;
    model.input_grad(&minus, batch, &mut gm)?;
    let k = norm / (2.0 * h);
    gx.iter_mut().zip(gp.iter().zip(&gm)).for_each(|(g, (a, b))| *g = ((*a as f64 - *b as f64) * k) as f32);
    Ok(())
}

/// 1 - cos(g(x), target) for the batch's dummy images and its gradient with respect to them,
/// into `gx` (overwritten).
pub fn cosine_loss_grad(
    model: &mut dyn Model,
    params: &Params,
    batch: &Batch,
    target: &Params,
    h: f64,
    gx: &mut Vec<f32>,
) -> Result<f64> {
    let g = param_gradient(model, params, batch)?;
    let (gn, tn) = (g.l2(), target.l2());
    if gn == 0.0 {
        // A dead start (no gradient at all): nothing to follow.
        gx.clear();
        gx.resize(batch.x.len(), 0.0);
        return Ok(1.0);
    }
    let c = g.dot(target) / (gn * tn);
    // d(1 - c)/dg = -(target / (|g||t|) - c g / |g|^2).
    let mut u = g.clone();
    u.scale((c / (gn * gn)) as f32);
    u.axpy((-1.0 / (gn * tn)) as f32, target);
    gradient_dot_input_grad(model, params, batch, &u, h, gx)?;
    Ok(1.0 - c)
}

/// Mean anisotropic total variation of the images in `x` (samples of `shape`), with `alpha`
/// times its subgradient added to `grad`; 0 for data that is not an image.
pub fn total_variation(x: &[f32], shape: &[usize], alpha: f64, grad: &mut [f32]) -> f64 {
    let [c, h, w] = image_shape(shape);
    let d = c * h * w;
    if h < 2 || w < 2 || d == 0 {
        return 0.0;
    }
    let n = x.len() / d;
    let (nx, ny) = ((n * c * h * (w - 1)) as f64, (n * c * (h - 1) * w) as f64);
    let mut tv = 0.0;
    let mut pair = |a: usize, b: usize, count: f64, grad: &mut [f32]| {
        let diff = (x[b] - x[a]) as f64;
        tv += diff.abs() / count;
        let s = (alpha * diff.signum() * f64::from(diff != 0.0) / count) as f32;
        grad[b] += s;
        grad[a] -= s;
    };
    for s in 0..n * c {
        let base = s * h * w;
        for y in 0..h {
            for x0 in 0..w {
                let i = base + y * w + x0;
                if x0 + 1 < w {
                    pair(i, i + 1, nx, grad);
                }
                if y + 1 < h {
                    pair(i, i + w, ny, grad);
                }
            }
        }
    }
    tv
}

/// The labels behind an update (iDLG for one sample, the counting estimate for more; see the
/// module docs), from the output-layer bias of `update`.
pub fn recover_labels(update: &Params, samples: usize) -> Result<Vec<u32>> {
    let (_, bias, classes) = update.layout().output_layer()?;
    let g: Vec<f64> = update.as_slice()[bias].iter().map(|&d| -(d as f64)).collect();
    if samples == 1 {
        let y = (0..classes).min_by(|&a, &b| g[a].total_cmp(&g[b])).unwrap_or(0);
        return Ok(vec![y as u32]);
    }
    // The update is the gradient times an unknown positive factor (the learning rate and the
    // local steps). With uniform predictions a class absent from the batch has g_c = 1/C, the
    // largest entry, so scale the largest entry to 1/C (exact whenever a class is absent).
    let max = g.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let scale = if max > 0.0 { 1.0 / (classes as f64 * max) } else { 1.0 };
    let b = samples as f64;
    let want: Vec<f64> = g.iter().map(|&v| (b * (1.0 / classes as f64 - v * scale)).max(0.0)).collect();
    Ok(round_counts(&want, samples)
        .into_iter()
        .enumerate()
        .flat_map(|(c, k)| std::iter::repeat_n(c as u32, k))
        .collect())
}

/// Integer counts summing to `total`, proportional to `want`, by largest remainders.
fn round_counts(want: &[f64], total: usize) -> Vec<usize> {
    let sum: f64 = want.iter().sum();
    if sum <= 0.0 {
        return (0..want.len()).map(|c| total / want.len() + usize::from(c < total % want.len())).collect();
    }
    let exact: Vec<f64> = want.iter().map(|w| w / sum * total as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    let short = total - counts.iter().sum::<usize>();
    for &c in order.iter().take(short) {
        counts[c] += 1;
    }
    counts
}

/// The analytic inversion of a fully connected first layer (see the module docs): the input
/// that `update` was computed on when it came from one sample; `None` when the model does not
/// start with a layer `[d, h]` + bias `[h]` over the flat input, or its bias did not move.
pub fn analytic_first_layer(update: &Params, feature_len: usize) -> Option<Vec<f32>> {
    let layout: &Layout = update.layout();
    let e = layout.entries();
    let (w, b) = (e.first()?, e.get(1)?);
    if w.shape.len() != 2 || w.shape[0] != feature_len || b.shape != [w.shape[1]] {
        return None;
    }
    let h = w.shape[1];
    let (gw, gb) = (&update.as_slice()[w.range()], &update.as_slice()[b.range()]);
    let norm: f64 = gb.iter().map(|&v| (v as f64).powi(2)).sum();
    if norm == 0.0 {
        return None;
    }
    Some(
        (0..feature_len)
            .map(|k| {
                (gw[k * h..(k + 1) * h].iter().zip(gb).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / norm) as f32
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_drops_by_ten_at_three_eighths_five_eighths_and_seven_eighths() {
        assert_eq!(schedule(1, 8), 1.0);
        assert_eq!(schedule(3, 8), 1.0);
        assert!((schedule(4, 8) - 0.1).abs() < 1e-12);
        assert!((schedule(8, 8) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn total_variation_of_a_step_image_and_its_gradient() {
        // One 2x3 image [[0, 0, 1], [0, 0, 1]]: horizontal differences 0, 1 per row (mean 0.5
        // over 4 pairs), vertical all 0.
        let x = [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        let mut g = [0.0f32; 6];
        let tv = total_variation(&x, &[1, 2, 3], 1.0, &mut g);
        assert!((tv - 0.5).abs() < 1e-12);
        assert_eq!(g, [0.0, -0.25, 0.25, 0.0, -0.25, 0.25]);
        assert_eq!(total_variation(&x, &[6], 1.0, &mut g), 0.0, "not an image");
    }

    #[test]
    fn counting_recovers_label_multiplicities_and_rounds_to_the_batch() {
        assert_eq!(round_counts(&[0.4, 1.6, 1.0], 3), [0, 2, 1]);
        assert_eq!(round_counts(&[0.5, 1.5, 1.0], 3), [1, 1, 1], "ties go to the lower class");
        assert_eq!(round_counts(&[0.0, 0.0], 3), [2, 1]);
    }
}
