//! `instahide_attack` (`fedkit attack instahide`): private images recovered from their InstaHide
//! (or Mixup) encodings alone, after Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song,
//! Thakurta, Tramèr, "Is Private Learning Possible with Instance Encoding?", IEEE S&P 2021
//! (arXiv 2011.05315, 2020), the attack on the `instahide` stage's scheme (PAPERS.txt 35).
//!
//! The attacker holds M encodings e_m = c + sigma_m o (sum_j lambda_mj x_{a_mj} - c) of N private
//! images but no key: neither which images each one mixes, nor the weights, nor the signs. It
//! knows k, the weight bound `upper`, the centre c, the pixel box [lo, hi] and N (the InstaHide
//! challenge stated its N too). Write z_m = e_m - c and x^_j = x_j - c: without the mask
//! (Mixup) z_m = sum_j lambda_mj x^_{a_mj} is linear in the images; with it only
//! |z_m| = |sum_j lambda_mj x^_{a_mj}| is known, pixel by pixel.
//!
//! The paper's attack: (1) a trained network scores whether two encodings share an image,
//! giving a similarity graph; (2) the graph is coloured into N dense cliques, one per private
//! image; (3, 4) each encoding is assigned to its private images; (5) the images are solved for
//! by gradient descent on the unexplained variance || |z| - |L X| ||^2 (L the M x N mixing
//! matrix; the |.| handled by keeping the smaller of the two sign branches); (6) colours are
//! corrected. Here, at the scale of 2 cores and without a trained similarity network:
//! - Steps 1-4 become an alternating minimisation (dictionary learning with k-sparse convex
//!   codes, k <= 2): given the current images, each encoding gets the image (k = 1) or the pair
//!   and weight lambda in [1 - upper, upper] (k = 2; or one image alone, which the stage's random
//!   permutations sometimes give) that explain it best, exhaustively over all pairs by the
//!   closed form through the Gram matrix on the signed estimate s o |z|; under the mask, from
//!   the 6th alternation on, the `candidates` best are re-scored exactly on |z| over 13 weights
//!   (for k = 1, every image on |z| from the start). An image that explains fewer than a quarter of its expected k M / N
//!   encodings is re-seeded with the worst-explained encoding (as K-SVD replaces unused atoms).
//! - Step 5 is alternating sign retrieval instead of Adam: least squares X = argmin
//!   ||s o |z| - L X||^2 (normal equations, Cholesky), clipped to the box, then s = sign(L X),
//!   `sign_rounds` times. Where the box forces a sign it is kept: |z| above c - lo can only be
//!   positive, above hi - c only negative. Elsewhere the first signs are those of the box's
//!   nearer side (a centre near the dark end, as Fashion-MNIST's mean pixel 0.286, means most
//!   pixels lie below it). Mixup is one least-squares solve.
//! - Step 6 is not needed for grey images.
//! The first images are picked by farthest-point selection among the signed estimates,
//! `restarts` times from a random first one; the restart with the smallest unexplained variance
//! wins (the attacker never looks at the private images). With the mixing known
//! ([`Unmix::with_mixing`]: which images and weights, not the signs) only step 5 runs: the
//! strong attacker of Huang et al.'s gradattack evaluation, and for Mixup the direct
//! demonstration that mixing without the mask is invertible. k > 2 without the key is not built.
//!
//! Parameters: `images` (N), `k`, `upper`, `center` (c), `lo`, `hi`, `masked`, `iterations`
//! (alternations of assignment and reconstruction, 30), `restarts` (2), `candidates` (8), `sign_rounds` (10).
//!
//! ```text
//! fedkit attack instahide --run runs/instahide --client 0 --images 50 --epochs 20
//! ```

use fedkit_core::{Error, Result, RngStream};

/// The images one encoding mixes (indices into the N private images) with their weights.
pub type Mixing = Vec<(usize, f32)>;

/// The attack's knowledge and budget.
#[derive(Clone, Debug)]
pub struct Unmix {
    pub images: usize,
    pub k: usize,
    pub upper: f32,
    pub center: f32,
    pub lo: f32,
    pub hi: f32,
    pub masked: bool,
    pub iterations: usize,
    pub restarts: usize,
    pub candidates: usize,
    pub sign_rounds: usize,
}

/// What the attack recovered.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// N images of d pixels (in the data's own range), in the attacker's order.
    pub images: Vec<f32>,
    /// The mixing it settled on, per encoding.
    pub mixing: Vec<Mixing>,
    /// The unexplained variance sum_m ||obs_m - |L X|_m||^2 (or the linear residual for Mixup).
    pub unexplained: f64,
}

/// Alternations before the exact re-scoring of candidate pairs starts (under the mask).
const PROXY_ONLY: usize = 5;
/// Weights tried per candidate pair in the exact re-scoring.
const GRID: usize = 13;

impl Unmix {
    /// An attack on `images` private images encoded with k images, weights at most `upper`,
    /// signs about `center`, pixels in [lo, hi], with the default budget.
    pub fn new(images: usize, k: usize, upper: f32, center: f32, masked: bool, (lo, hi): (f32, f32)) -> Self {
        Unmix { images, k, upper, center, lo, hi, masked, iterations: 30, restarts: 2, candidates: 8, sign_rounds: 10 }
    }

    fn check(&self, encodings: usize, d: usize, keyless: bool) -> Result<()> {
        if self.images < 2 {
            return Err(Error::config("images", format!("needs at least 2 private images, got {}", self.images)));
        }
        if !(self.k >= 1 && self.upper >= 1.0 / self.k as f32 - 1e-6 && self.upper <= 1.0) {
            return Err(Error::config(
                "upper",
                format!("must be in [1/k, 1] for k = {} images per encoding, got {}", self.k, self.upper),
            ));
        }
        if encodings < self.images || d == 0 {
            return Err(Error::config(
                "encodings",
                format!("{encodings} encodings of {d} pixels cannot determine {} images", self.images),
            ));
        }
        if !(self.lo < self.center && self.center < self.hi) {
            return Err(Error::config(
                "center",
                format!("must lie inside the pixel box ({}, {}), got {}", self.lo, self.hi, self.center),
            ));
        }
        if keyless && !(1..=2).contains(&self.k) {
            return Err(Error::config(
                "k",
                format!("the key-less assignment is built for k = 1 or 2 images per encoding, got {}", self.k),
            ));
        }
        if keyless && (self.restarts == 0 || self.iterations == 0) {
            return Err(Error::config("restarts", "restarts and iterations must be at least 1"));
        }
        Ok(())
    }

    /// What the attacker observes of each pixel: z = e - c, or |z| under the mask.
    fn observed(&self, enc: &[f32]) -> Vec<f32> {
        enc.iter().map(|&e| if self.masked { (e - self.center).abs() } else { e - self.center }).collect()
    }

    /// The sign the box forces on a centred pixel of magnitude `a`, if any.
    fn forced(&self, a: f32) -> Option<f32> {
        if a > self.center - self.lo {
            Some(1.0)
        } else if a > self.hi - self.center {
            Some(-1.0)
        } else {
            None
        }
    }

    /// The first guess where the box leaves the sign open: the side nearer the centre.
    fn open_sign(&self) -> f32 {
        if self.center - self.lo < self.hi - self.center { -1.0 } else { 1.0 }
    }

    /// The signed estimate s o |z| with signs `sign(mix)` (or the first guess where `mix` is
    /// absent), the box's forced signs kept.
    fn signed(&self, obs: &[f32], mix: Option<&[f32]>) -> Vec<f32> {
        if !self.masked {
            return obs.to_vec();
        }
        obs.iter()
            .enumerate()
            .map(|(p, &a)| {
                let s = self.forced(a).unwrap_or_else(|| match mix {
                    Some(m) if m[p] > 0.0 => 1.0,
                    Some(m) if m[p] < 0.0 => -1.0,
                    _ => self.open_sign(),
                });
                s * a
            })
            .collect()
    }

    /// L X: each encoding's mix of the centred images `x`.
    fn mixed(mixing: &[Mixing], x: &[f32], d: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; mixing.len() * d];
        for (row, mix) in out.chunks_mut(d).zip(mixing) {
            for &(j, l) in mix {
                row.iter_mut().zip(&x[j * d..(j + 1) * d]).for_each(|(r, &v)| *r += l * v);
            }
        }
        out
    }

    /// The least-squares centred images for targets `t` (normal equations with a tiny ridge, so
    /// an image no encoding uses comes out as the centre), clipped to the box.
    fn least_squares(&self, mixing: &[Mixing], t: &[f32], d: usize) -> Vec<f32> {
        let n = self.images;
        let mut g = vec![0.0f64; n * n];
        let mut b = vec![0.0f64; n * d];
        for (mix, row) in mixing.iter().zip(t.chunks(d)) {
            for &(i, li) in mix {
                for &(j, lj) in mix {
                    g[i * n + j] += li as f64 * lj as f64;
                }
                b[i * d..(i + 1) * d].iter_mut().zip(row).for_each(|(v, &z)| *v += li as f64 * z as f64);
            }
        }
        let ridge = 1e-9 * (0..n).map(|i| g[i * n + i]).fold(0.0, f64::max) + 1e-12;
        (0..n).for_each(|i| g[i * n + i] += ridge);
        cholesky_solve(&mut g, &mut b, n, d);
        let (lo, hi) = (self.lo - self.center, self.hi - self.center);
        b.into_iter().map(|v| (v as f32).clamp(lo, hi)).collect()
    }

    /// Step 5: the centred images for a given mixing, from the signed targets `t` (the first
    /// guess when `None`); returns them with the final signed targets.
    fn solve(&self, mixing: &[Mixing], obs: &[f32], t: Option<Vec<f32>>, d: usize) -> (Vec<f32>, Vec<f32>) {
        let mut t = t.unwrap_or_else(|| self.signed(obs, None));
        let mut x = self.least_squares(mixing, &t, d);
        if !self.masked {
            return (x, t);
        }
        for _ in 1..self.sign_rounds.max(1) {
            let next = self.signed(obs, Some(&Self::mixed(mixing, &x, d)));
            if next == t {
                break;
            }
            t = next;
            x = self.least_squares(mixing, &t, d);
        }
        (x, t)
    }

    /// Per encoding, the unexplained variance ||obs_m - |L X|_m||^2 (linear for Mixup).
    fn unexplained(&self, mixing: &[Mixing], x: &[f32], obs: &[f32], d: usize) -> Vec<f64> {
        let m = Self::mixed(mixing, x, d);
        m.chunks(d)
            .zip(obs.chunks(d))
            .map(|(mx, o)| {
                mx.iter()
                    .zip(o)
                    .map(|(&v, &a)| ((a - if self.masked { v.abs() } else { v }) as f64).powi(2))
                    .sum::<f64>()
            })
            .collect()
    }

    /// Steps 1-4: each encoding's best image alone or (k = 2) pair and weight under images `x`
    /// (an image alone too for k = 2: the stage's random permutation can pair an image with itself).
    fn assign(&self, x: &[f32], t: &[f32], obs: &[f32], d: usize, exact: bool) -> Vec<Mixing> {
        let n = self.images;
        let gram: Vec<f64> =
            (0..n * n).map(|ij| dot(&x[(ij / n) * d..(ij / n + 1) * d], &x[(ij % n) * d..(ij % n + 1) * d])).collect();
        let (l_lo, l_hi) = (1.0 - self.upper as f64, self.upper as f64);
        let image = |a: usize| &x[a * d..(a + 1) * d];
        let by_residual = |u: &(f64, usize, usize, f64), v: &(f64, usize, usize, f64)| {
            u.0.total_cmp(&v.0).then((u.1, u.2).cmp(&(v.1, v.2)))
        };
        t.chunks(d)
            .zip(obs.chunks(d))
            .map(|(tm, om)| {
                let p: Vec<f64> = (0..n).map(|j| dot(tm, image(j))).collect();
                let tt = dot(tm, tm);
                // Candidates (residual on the signed estimate, a, b, lambda on a); a == b: a alone.
                let mut cands: Vec<(f64, usize, usize, f64)> =
                    (0..n).map(|a| (tt - 2.0 * p[a] + gram[a * n + a], a, a, 1.0)).collect();
                if self.k == 2 {
                    // The closed form of min_lambda ||t - lambda x_a - (1 - lambda) x_b||^2.
                    for a in 0..n {
                        for b in a + 1..n {
                            let dd = gram[a * n + a] - 2.0 * gram[a * n + b] + gram[b * n + b];
                            let c1 = p[a] - p[b] - gram[a * n + b] + gram[b * n + b];
                            let lam = if dd > 1e-12 { (c1 / dd).clamp(l_lo, l_hi) } else { 0.5 };
                            let r = tt - 2.0 * p[b] + gram[b * n + b] - 2.0 * lam * c1 + lam * lam * dd;
                            cands.push((r, a, b, lam));
                        }
                    }
                }
                let best = if self.masked && (exact || self.k == 1) {
                    let keep = if self.k == 1 { n } else { self.candidates.clamp(1, cands.len()) };
                    cands.select_nth_unstable_by(keep - 1, by_residual);
                    cands.truncate(keep);
                    cands.sort_by(by_residual);
                    let mut best = (f64::INFINITY, 0, 0, 1.0);
                    for &(_, a, b, _) in &cands {
                        if a == b {
                            let r = abs_residual(om, image(a), None, 1.0);
                            if r < best.0 {
                                best = (r, a, a, 1.0);
                            }
                            continue;
                        }
                        for g in 0..GRID {
                            let lam = l_lo + (l_hi - l_lo) * g as f64 / (GRID - 1) as f64;
                            let r = abs_residual(om, image(a), Some(image(b)), lam as f32);
                            if r < best.0 {
                                best = (r, a, b, lam);
                            }
                        }
                    }
                    best
                } else {
                    *cands.iter().min_by(|u, v| by_residual(u, v)).expect("n >= 2 candidates")
                };
                if best.1 == best.2 {
                    vec![(best.1, 1.0)]
                } else {
                    vec![(best.1, best.3 as f32), (best.2, (1.0 - best.3) as f32)]
                }
            })
            .collect()
    }

    /// Farthest-point selection of N rows of `t`, the first drawn from `rng`.
    fn farthest_points(&self, t: &[f32], d: usize, rng: &mut RngStream) -> Vec<f32> {
        let m = t.len() / d;
        let row = |i: usize| &t[i * d..(i + 1) * d];
        let mut pick = rng.below(m as u64) as usize;
        let mut x = Vec::with_capacity(self.images * d);
        let mut dist = vec![f64::INFINITY; m];
        for _ in 0..self.images {
            x.extend_from_slice(row(pick));
            for (i, v) in dist.iter_mut().enumerate() {
                *v = v.min(sq_dist(row(i), row(pick)));
            }
            pick = (0..m).fold(0, |b, i| if dist[i] > dist[b] { i } else { b });
        }
        x
    }

    /// Re-seed the images that explain too few encodings with the worst-explained ones.
    fn reseed(&self, x: &mut [f32], mixing: &[Mixing], un: &[f64], t: &[f32], d: usize) {
        let mut uses = vec![0usize; self.images];
        mixing.iter().flatten().for_each(|&(j, _)| uses[j] += 1);
        let expected = (self.k * mixing.len()) as f64 / self.images as f64;
        let mut worst: Vec<usize> = (0..mixing.len()).collect();
        worst.sort_by(|&a, &b| un[b].total_cmp(&un[a]).then(a.cmp(&b)));
        let weak = (0..self.images).filter(|&j| (uses[j] as f64) * 4.0 < expected);
        for (j, m) in weak.zip(worst) {
            x[j * d..(j + 1) * d].copy_from_slice(&t[m * d..(m + 1) * d]);
        }
    }

    fn finish(&self, x: Vec<f32>, mixing: Vec<Mixing>, unexplained: f64) -> Recovered {
        let images = x.into_iter().map(|v| (v + self.center).clamp(self.lo, self.hi)).collect();
        Recovered { images, mixing, unexplained }
    }

    /// The key-less attack on `enc` (M encodings of `d` pixels each).
    pub fn recover(&self, enc: &[f32], d: usize, rng: &mut RngStream) -> Result<Recovered> {
        ragged(enc, d)?;
        self.check(enc.len() / d.max(1), d, true)?;
        let obs = self.observed(enc);
        let mut best: Option<(Vec<f32>, Vec<Mixing>, f64)> = None;
        for _ in 0..self.restarts {
            let mut t = self.signed(&obs, None);
            let mut x = self.farthest_points(&t, d, rng);
            let mut mixing = Vec::new();
            for it in 0..self.iterations {
                mixing = self.assign(&x, &t, &obs, d, it >= PROXY_ONLY);
                (x, t) = self.solve(&mixing, &obs, Some(t), d);
                if it + 1 < self.iterations {
                    let un = self.unexplained(&mixing, &x, &obs, d);
                    self.reseed(&mut x, &mixing, &un, &t, d);
                }
            }
            let total: f64 = self.unexplained(&mixing, &x, &obs, d).iter().sum();
            if best.as_ref().is_none_or(|b| total < b.2) {
                best = Some((x, mixing, total));
            }
        }
        let (x, mixing, total) = best.expect("restarts >= 1");
        Ok(self.finish(x, mixing, total))
    }

    /// Step 5 alone: the images given each encoding's mixing (not its signs).
    pub fn with_mixing(&self, enc: &[f32], mixing: &[Mixing], d: usize) -> Result<Recovered> {
        ragged(enc, d)?;
        self.check(enc.len() / d.max(1), d, false)?;
        if mixing.len() * d != enc.len() || mixing.iter().flatten().any(|&(j, _)| j >= self.images) {
            return Err(Error::Shape(format!(
                "{} mixings for {} encodings, or an image index beyond {}",
                mixing.len(),
                enc.len() / d,
                self.images
            )));
        }
        let obs = self.observed(enc);
        let (x, _) = self.solve(mixing, &obs, None, d);
        let total = self.unexplained(mixing, &x, &obs, d).iter().sum();
        Ok(self.finish(x, mixing.to_vec(), total))
    }
}

fn ragged(enc: &[f32], d: usize) -> Result<()> {
    if d == 0 || enc.len() % d != 0 {
        return Err(Error::Shape(format!("{} encoded values are not whole encodings of {d} pixels", enc.len())));
    }
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64).sum()
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&u, &v)| ((u - v) as f64).powi(2)).sum()
}

/// sum_p (obs_p - |lambda x_a,p + (1 - lambda) x_b,p|)^2 (x_b absent: |x_a,p|).
fn abs_residual(obs: &[f32], xa: &[f32], xb: Option<&[f32]>, lam: f32) -> f64 {
    match xb {
        None => obs.iter().zip(xa).map(|(&o, &a)| ((o - a.abs()) as f64).powi(2)).sum(),
        Some(xb) => obs
            .iter()
            .zip(xa.iter().zip(xb))
            .map(|(&o, (&a, &b))| ((o - (lam * a + (1.0 - lam) * b).abs()) as f64).powi(2))
            .sum(),
    }
}

/// Solve G X = B in place (G: n x n symmetric positive definite, B: n x d, X into B).
fn cholesky_solve(g: &mut [f64], b: &mut [f64], n: usize, d: usize) {
    for j in 0..n {
        let s = g[j * n + j] - (0..j).map(|k| g[j * n + k] * g[j * n + k]).sum::<f64>();
        let ljj = s.max(1e-300).sqrt();
        g[j * n + j] = ljj;
        for i in j + 1..n {
            let s = g[i * n + j] - (0..j).map(|k| g[i * n + k] * g[j * n + k]).sum::<f64>();
            g[i * n + j] = s / ljj;
        }
    }
    for c in 0..d {
        for i in 0..n {
            let s = b[i * d + c] - (0..i).map(|k| g[i * n + k] * b[k * d + c]).sum::<f64>();
            b[i * d + c] = s / g[i * n + i];
        }
        for i in (0..n).rev() {
            let s = b[i * d + c] - (i + 1..n).map(|k| g[k * n + i] * b[k * d + c]).sum::<f64>();
            b[i * d + c] = s / g[i * n + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy_attacks::instahide::InstaHide;
    use fedkit_core::Batch;

    /// N synthetic "images" of d pixels in [0, 1]: a dark background (70% zeros) and bright
    /// strokes, as Fashion-MNIST; its mean pixel is about 0.15.
    fn private(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = RngStream::new(seed);
        (0..n * d).map(|_| if rng.uniform() < 0.7 { 0.0 } else { 0.3 + 0.7 * rng.uniform() as f32 }).collect()
    }

    /// `epochs` encodings of every image by the `instahide` stage (one batch of all n), with the
    /// true mixing of each.
    fn encode(ih: &InstaHide, x: &[f32], n: usize, epochs: usize) -> (Vec<f32>, Vec<Mixing>) {
        let d = x.len() / n;
        let batch = Batch { x: x.to_vec(), y: vec![0; n], targets: Vec::new(), feature_shape: vec![d], classes: 2 };
        let mut rng = RngStream::new(7);
        let (mut enc, mut mixing) = (Vec::new(), Vec::new());
        for _ in 0..epochs {
            let (e, keys) = ih.encode(&batch, &mut rng);
            enc.extend_from_slice(&e.x);
            mixing.extend(keys.into_iter().map(|k| k.parts));
        }
        (enc, mixing)
    }

    fn max_error(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(u, v)| (u - v).abs()).fold(0.0, f32::max)
    }

    /// Correlation of each private image with the recovered one it is closest to (one to one,
    /// greedily by MSE), averaged; and the share above 0.9.
    fn matched_correlation(truth: &[f32], rec: &[f32], d: usize) -> (f64, f64) {
        let of = crate::privacy_attacks::image_metrics::match_by_mse(truth, rec, d);
        let corr = |a: &[f32], b: &[f32]| {
            let (ma, mb) = (a.iter().sum::<f32>() / d as f32, b.iter().sum::<f32>() / d as f32);
            let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
            for (&u, &v) in a.iter().zip(b) {
                ab += ((u - ma) * (v - mb)) as f64;
                aa += ((u - ma) as f64).powi(2);
                bb += ((v - mb) as f64).powi(2);
            }
            ab / (aa * bb).sqrt().max(1e-12)
        };
        let c: Vec<f64> =
            of.iter().enumerate().map(|(i, &j)| corr(&truth[i * d..(i + 1) * d], &rec[j * d..(j + 1) * d])).collect();
        (c.iter().sum::<f64>() / c.len() as f64, c.iter().filter(|&&v| v > 0.9).count() as f64 / c.len() as f64)
    }

    #[test]
    fn mixup_with_known_mixing_is_inverted_exactly() {
        let (n, d) = (12, 40);
        let x = private(n, d, 1);
        let ih = InstaHide { k: 4, upper: 0.65, mask: false, center: 0.15 };
        let (enc, mixing) = encode(&ih, &x, n, 4);
        let rec = Unmix::new(n, 4, 0.65, 0.15, false, (0.0, 1.0)).with_mixing(&enc, &mixing, d).unwrap();
        assert!(max_error(&rec.images, &x) < 1e-4, "error {}", max_error(&rec.images, &x));
        assert!(rec.unexplained < 1e-8, "{}", rec.unexplained);
    }

    #[test]
    fn instahide_with_known_mixing_but_not_the_signs_is_recovered() {
        let (n, d) = (20, 60);
        let x = private(n, d, 2);
        let ih = InstaHide { k: 2, upper: 0.65, mask: true, center: 0.15 };
        let (enc, mixing) = encode(&ih, &x, n, 20);
        let un = Unmix::new(n, 2, 0.65, 0.15, true, (0.0, 1.0));
        let rec = un.with_mixing(&enc, &mixing, d).unwrap();
        let (mean, share) = matched_correlation(&x, &rec.images, d);
        assert!(mean > 0.95 && share > 0.9, "correlation {mean:.3}, share above 0.9: {share:.2}");
        // The masks hide the images from a look at the encodings: each encoding is far from
        // both images it mixes.
        let e0 = &enc[..d];
        let (a, b) = (mixing[0][0].0, mixing[0][1].0);
        assert!(max_error(e0, &x[a * d..(a + 1) * d]) > 0.3 && max_error(e0, &x[b * d..(b + 1) * d]) > 0.3);
    }

    #[test]
    fn the_keyless_attack_recovers_mixup_images_and_most_instahide_ones() {
        let (n, d) = (16, 80);
        let x = private(n, d, 3);
        for (mask, want_mean, want_share) in [(false, 0.95, 0.9), (true, 0.9, 0.8)] {
            let ih = InstaHide { k: 2, upper: 0.65, mask, center: 0.15 };
            let (enc, _) = encode(&ih, &x, n, 20);
            let mut un = Unmix::new(n, 2, 0.65, 0.15, mask, (0.0, 1.0));
            un.restarts = 3;
            let rec = un.recover(&enc, d, &mut RngStream::new(5)).unwrap();
            let (mean, share) = matched_correlation(&x, &rec.images, d);
            assert!(
                mean > want_mean && share >= want_share,
                "mask {mask}: correlation {mean:.3}, share above 0.9: {share:.2}"
            );
            // A control: the same attack on encodings of other images does not find these.
            let (other, _) = encode(&ih, &private(n, d, 99), n, 20);
            let rec = un.recover(&other, d, &mut RngStream::new(5)).unwrap();
            let (mean, _) = matched_correlation(&x, &rec.images, d);
            assert!(mean < 0.5, "mask {mask}: other images give correlation {mean:.3}");
        }
    }

    #[test]
    fn the_assignment_finds_the_exact_pair_weight_or_single_image() {
        let (n, d) = (8, 30);
        let x: Vec<f32> = private(n, d, 4).iter().map(|v| v - 0.15).collect();
        let un = Unmix::new(n, 2, 0.65, 0.15, false, (0.0, 1.0));
        let row = |j: usize| &x[j * d..(j + 1) * d];
        let mut t: Vec<f32> = row(2).iter().zip(row(5)).map(|(a, b)| 0.6 * a + 0.4 * b).collect();
        t.extend_from_slice(row(3));
        let got = un.assign(&x, &t, &t, d, false);
        assert_eq!(got[0].iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 5], "{got:?}");
        assert!((got[0][0].1 - 0.6).abs() < 1e-4 && (got[0][1].1 - 0.4).abs() < 1e-4, "{got:?}");
        assert_eq!(got[1], vec![(3, 1.0)], "an image alone");
        // Under the mask the exact re-scoring on |t| finds the pair too (0.6 is on the grid).
        let masked = Unmix { masked: true, ..un };
        let abs: Vec<f32> = t.iter().map(|v| v.abs()).collect();
        let signed = masked.signed(&abs, Some(&t));
        let got = masked.assign(&x, &signed, &abs, d, true);
        assert_eq!(got[0].iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 5], "{got:?}");
        assert_eq!(got[1], vec![(3, 1.0)]);
    }

    #[test]
    fn the_sign_mask_alone_is_assigned_exactly_but_leaves_dark_signs_open() {
        let (n, d) = (10, 60);
        let x = private(n, d, 6);
        let ih = InstaHide { k: 1, upper: 1.0, mask: true, center: 0.15 };
        let (enc, mixing) = encode(&ih, &x, n, 10);
        let rec = Unmix::new(n, 1, 1.0, 0.15, true, (0.0, 1.0)).recover(&enc, d, &mut RngStream::new(3)).unwrap();
        let of = crate::privacy_attacks::image_metrics::match_by_mse(&x, &rec.images, d);
        assert!(mixing.iter().zip(&rec.mixing).all(|(t, r)| of[t[0].0] == r[0].0), "every encoding's image found");
        // Pixels brighter than twice the centre come back exactly; darker ones may be reflected.
        for (i, &j) in of.iter().enumerate() {
            for p in 0..d {
                let (v, r) = (x[i * d + p], rec.images[j * d + p]);
                let ok = (v - r).abs() < 1e-4 || (v <= 0.3 + 1e-6 && (0.3 - v - r).abs() < 1e-4);
                assert!(ok, "image {i} pixel {p}: {v} recovered as {r}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let un = Unmix::new(4, 4, 0.65, 0.15, true, (0.0, 1.0));
        let enc = vec![0.0f32; 8 * 10];
        let err = un.recover(&enc, 10, &mut RngStream::new(0)).unwrap_err().to_string();
        assert!(err.contains("k = 1 or 2"), "{err}");
        let un = Unmix::new(20, 2, 0.65, 0.15, true, (0.0, 1.0));
        assert!(un.recover(&enc, 10, &mut RngStream::new(0)).unwrap_err().to_string().contains("cannot determine"));
        let un = Unmix::new(4, 2, 0.65, 1.5, true, (0.0, 1.0));
        assert!(un.recover(&enc, 10, &mut RngStream::new(0)).unwrap_err().to_string().contains("pixel box"));
        let un = Unmix::new(4, 2, 0.65, 0.15, true, (0.0, 1.0));
        let bad = vec![vec![(9usize, 1.0f32)]; 8];
        assert!(un.with_mixing(&enc, &bad, 10).is_err());
        let low = Unmix::new(4, 2, 0.4, 0.15, true, (0.0, 1.0));
        assert!(low.recover(&enc, 10, &mut RngStream::new(0)).unwrap_err().to_string().contains("[1/k, 1]"));
        let ragged = vec![0.0f32; 8 * 10 + 3];
        assert!(un.recover(&ragged, 10, &mut RngStream::new(0)).unwrap_err().to_string().contains("whole encodings"));
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        // [[4, 2], [2, 3]] x = [2, 1] (and a second column [6, 5]): x = [0.5, 0], [1, 1].
        let mut g = vec![4.0, 2.0, 2.0, 3.0];
        let mut b = vec![2.0, 6.0, 1.0, 5.0];
        cholesky_solve(&mut g, &mut b, 2, 2);
        let want = [0.5, 1.0, 0.0, 1.0];
        assert!(b.iter().zip(want).all(|(u, v)| (u - v).abs() < 1e-12), "{b:?}");
    }
}
