//! `gan_leakage` (stage, `on = "malicious"`, and `fedkit attack gan`): the insider GAN attack of
//! Hitaj, Ateniese, Perez-Cruz, "Deep Models Under the GAN: Information Leakage from
//! Collaborative Deep Learning", CCS 2017 (PAPERS.txt 20).
//!
//! The insider holds no sample of the victims' class `target` (any it was dealt, by its own
//! label or the true one, are dropped). Every round it takes part in while the `[threat]` is
//! active, before its local training (the paper's Algorithm 1):
//! 1. it runs its local replica of the shared model, the global model it just received, as the
//!    discriminator D, and trains its generator G for `steps` Adam steps (learning rate `lr`,
//!    beta_1 = 0.5 as in DCGAN) on min_phi CE(D(G_phi(z)), target), z ~ N(0, I) in `batch`es;
//!    the gradient through D is the model's input gradient (`Model::input_grad`);
//! 2. it adds `inject` fresh samples of G to its local data, labelled `fake` (a class it
//!    holds): the shared model then learns to tell G's samples from the real `target` class,
//!    which forces the victims' updates to reveal more about it, and G improves round by round;
//! 3. it trains and uploads as usual.
//!
//! `inject = 0` is the passive variant (G trained against the shared model, nothing sent back;
//! the target class is still dropped).
//!
//! Departures from the paper: the federation runs FedAvg (or any algorithm whose clients start
//! from the global model), not DSSGD's selective parameter exchange; in the paper no victim
//! holds the `fake` class, which here depends on the partition (with an iid one every victim
//! holds it, and its images of it pull the other way); the discriminator runs in training mode
//! without writing statistics (`Model::input_grad`), so a batch-norm model normalises with the
//! generated batch's statistics. The injected samples count in the insider's sample weight (its
//! FedAvg weight and DP-SGD's sampling rate see own + `inject` samples). Put the stage after
//! every other stage that changes the insider's data: it hands the client a dataset of its own,
//! which a later data stage would index wrongly; a per-client affine feature transform is
//! refused (the generator's images would not be what the insider trains on).
//! G is a two-layer perceptron z (`latent`) -> ReLU (`hidden`) -> sigmoid, scaled to the pixel
//! range of the training data (the attacker knows the data's format), as small a generator as fits
//! two cores (the paper's is a DCGAN). Its weights and Adam moments live in the insider's stage
//! memory, so `fedkit attack gan --run DIR` replays the same generator, bit for bit, from the
//! run's stored global models (one per round it took part in) and writes what it generated:
//! a PNG row per round, the shared model's confidence on the samples, and how close they come to
//! real `target` images (nearest-neighbour class and SSIM against the test set, which the
//! attacker never sees).
//!
//! Parameters: `target` (class a, 1), `fake` (class c, 0), `steps` (generator steps per round,
//! 100), `batch` (64), `lr` (1e-3), `latent` (64), `hidden` (256), `inject` (128).
//!
//! Example:
//! ```toml
//! [threat]
//! ids = [0]
//! [[pipeline]]
//! use = "gan_leakage"
//! on = "malicious"
//! target = 1
//! fake = 0
//! [output]
//! keep_models = "every:1"
//! keep_clients = [0]
//! ```
//! then `fedkit attack gan --run DIR`.

use std::sync::Arc;

use fedkit_core::{
    Batch, ClientCtx, ClientData, Dataset, Error, Extra, Extras, Model, Params, Result, RngStream, Stage,
};
use serde::{Deserialize, Serialize};

/// The insider's stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GanLeakage {
    pub target: u32,
    pub fake: u32,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub latent: usize,
    pub hidden: usize,
    pub inject: usize,
}

impl Default for GanLeakage {
    fn default() -> Self {
        GanLeakage { target: 1, fake: 0, steps: 100, batch: 64, lr: 1e-3, latent: 64, hidden: 256, inject: 128 }
    }
}

/// The generator's state across rounds: its weights, Adam's moments and step count.
#[derive(Clone, Debug, PartialEq)]
pub struct GanState {
    pub phi: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    t: u64,
}

const PHI: &str = "gan.phi";
const M: &str = "gan.adam_m";
const V: &str = "gan.adam_v";
const T: &str = "gan.adam_t";
/// The rounds the stage ran, in order (what `fedkit attack gan` replays).
pub const ROUNDS: &str = "gan.rounds";

/// The generator z -> sigmoid(W2 relu(W1 z + b1) + b2), scaled to [lo, hi].
#[derive(Clone, Copy, Debug)]
pub struct Generator {
    pub latent: usize,
    pub hidden: usize,
    pub out: usize,
    pub lo: f32,
    pub hi: f32,
}

/// A forward pass kept for the backward one.
struct Pass {
    z: Vec<f32>,
    h: Vec<f32>,
    s: Vec<f32>,
}

impl Generator {
    fn sizes(&self) -> [usize; 4] {
        [self.hidden * self.latent, self.hidden, self.out * self.hidden, self.out]
    }
    /// Number of weights.
    pub fn len(&self) -> usize {
        self.sizes().iter().sum()
    }
    /// True for a generator without weights.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// PyTorch's default linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fn init(&self, rng: &mut RngStream) -> Vec<f32> {
        let [w1, b1, w2, b2] = self.sizes();
        let (a1, a2) = (1.0 / (self.latent as f64).sqrt(), 1.0 / (self.hidden as f64).sqrt());
        let mut u = |n: usize, a: f64| (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * a) as f32).collect::<Vec<_>>();
        [u(w1, a1), u(b1, a1), u(w2, a2), u(b2, a2)].concat()
    }
    fn split<'a>(&self, phi: &'a [f32]) -> [&'a [f32]; 4] {
        let [w1, b1, w2, _] = self.sizes();
        let (a, rest) = phi.split_at(w1);
        let (b, rest) = rest.split_at(b1);
        let (c, d) = rest.split_at(w2);
        [a, b, c, d]
    }
    /// n latent vectors from `rng`.
    pub fn noise(&self, n: usize, rng: &mut RngStream) -> Vec<f32> {
        (0..n * self.latent).map(|_| rng.normal() as f32).collect()
    }
    fn pass(&self, phi: &[f32], z: Vec<f32>) -> Pass {
        let [w1, b1, w2, b2] = self.split(phi);
        let n = z.len() / self.latent;
        let mut h = vec![0.0f32; n * self.hidden];
        let mut s = vec![0.0f32; n * self.out];
        for i in 0..n {
            let zi = &z[i * self.latent..(i + 1) * self.latent];
            let hi = &mut h[i * self.hidden..(i + 1) * self.hidden];
            for (j, hj) in hi.iter_mut().enumerate() {
                *hj = (b1[j] + dot(&w1[j * self.latent..(j + 1) * self.latent], zi)).max(0.0);
            }
            let hi = &h[i * self.hidden..(i + 1) * self.hidden];
            for (o, so) in s[i * self.out..(i + 1) * self.out].iter_mut().enumerate() {
                let a = b2[o] + dot(&w2[o * self.hidden..(o + 1) * self.hidden], hi);
                *so = 1.0 / (1.0 + (-a).exp());
            }
        }
        Pass { z, h, s }
    }
    fn images(&self, p: &Pass) -> Vec<f32> {
        p.s.iter().map(|&s| self.lo + (self.hi - self.lo) * s).collect()
    }
    /// The images of latent vectors `z`, `[n, out]`.
    pub fn generate(&self, phi: &[f32], z: Vec<f32>) -> Vec<f32> {
        self.images(&self.pass(phi, z))
    }
    /// The gradient of an objective with respect to the weights, from its gradient `gx` with
    /// respect to the images of pass `p`.
    fn backward(&self, phi: &[f32], p: &Pass, gx: &[f32]) -> Vec<f32> {
        let [_, _, w2, _] = self.split(phi);
        let [n1, nb1, n2, _] = self.sizes();
        let mut g = vec![0.0f32; self.len()];
        let (gw1, rest) = g.split_at_mut(n1);
        let (gb1, rest) = rest.split_at_mut(nb1);
        let (gw2, gb2) = rest.split_at_mut(n2);
        let n = p.z.len() / self.latent;
        let span = self.hi - self.lo;
        let mut gh = vec![0.0f32; self.hidden];
        for i in 0..n {
            let hi = &p.h[i * self.hidden..(i + 1) * self.hidden];
            gh.iter_mut().for_each(|v| *v = 0.0);
            for o in 0..self.out {
                let s = p.s[i * self.out + o];
                let da = gx[i * self.out + o] * span * s * (1.0 - s);
                gb2[o] += da;
                axpy(&mut gw2[o * self.hidden..(o + 1) * self.hidden], da, hi);
                axpy(&mut gh, da, &w2[o * self.hidden..(o + 1) * self.hidden]);
            }
            let zi = &p.z[i * self.latent..(i + 1) * self.latent];
            for j in 0..self.hidden {
                if hi[j] > 0.0 {
                    gb1[j] += gh[j];
                    axpy(&mut gw1[j * self.latent..(j + 1) * self.latent], gh[j], zi);
                }
            }
        }
        g
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}

/// [min, max] of a dataset's features ([0, 1] when constant).
pub fn feature_range(d: &Dataset) -> (f32, f32) {
    let lo = d.x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = d.x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if lo < hi { (lo, hi) } else { (0.0, 1.0) }
}

/// The samples of `images` (`[n, shape]`) as a batch, each labelled `label`.
pub fn labelled(images: Vec<f32>, shape: &[usize], classes: usize, label: u32) -> Batch {
    let n = images.len() / shape.iter().product::<usize>().max(1);
    Batch { x: images, y: vec![label; n], targets: Vec::new(), feature_shape: shape.to_vec(), classes }
}

impl GanLeakage {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if self.target == self.fake {
            return Err(Error::config("fake", format!("must differ from target ({})", self.target)));
        }
        for (k, v) in [("batch", self.batch), ("latent", self.latent), ("hidden", self.hidden)] {
            if v == 0 {
                return Err(Error::config(k, "must be at least 1"));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::config("lr", format!("must be a finite number > 0, got {}", self.lr)));
        }
        Ok(self)
    }

    /// The generator for samples of `shape` in the range of `train`.
    pub fn generator(&self, shape: &[usize], train: &Dataset) -> Generator {
        let (lo, hi) = feature_range(train);
        Generator { latent: self.latent, hidden: self.hidden, out: shape.iter().product(), lo, hi }
    }

    /// The insider's generator before its first round (from the run seed and its id).
    pub fn initial_state(&self, g: &Generator, seed: u64, client: u32) -> GanState {
        let phi = g.init(&mut RngStream::derive(seed, "gan.init", 0, client as u64));
        let n = phi.len();
        GanState { phi, m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    /// An error naming `target` or `fake` when it is not a class of 0..classes.
    pub fn check_classes(&self, classes: usize) -> Result<()> {
        for (key, c) in [("target", self.target), ("fake", self.fake)] {
            if c as usize >= classes {
                return Err(Error::config(key, format!("class {c} is not one of the data's classes 0..{classes}")));
            }
        }
        Ok(())
    }

    /// Step 1 of a round: `steps` Adam steps of the generator against the shared model
    /// `global` (architecture `model`); noise from `rng`. Returns the mean objective (the
    /// cross-entropy of D on G's samples against `target`) over the steps.
    pub fn train_generator(
        &self,
        g: &Generator,
        model: &mut dyn Model,
        global: &Params,
        shape: &[usize],
        classes: usize,
        st: &mut GanState,
        rng: &mut RngStream,
    ) -> Result<f64> {
        self.check_classes(classes)?;
        let (mut total, mut gx) = (0.0f64, Vec::new());
        for _ in 0..self.steps {
            let pass = g.pass(&st.phi, g.noise(self.batch, rng));
            let batch = labelled(g.images(&pass), shape, classes, self.target);
            total += model.input_grad(global, &batch, &mut gx)? as f64;
            let grad = g.backward(&st.phi, &pass, &gx);
            adam_step(st, &grad, self.lr);
        }
        Ok(if self.steps == 0 { f64::NAN } else { total / self.steps as f64 })
    }

    /// The rounds the stage ran in, from its memory.
    pub fn rounds_in(mem: &Extras) -> Vec<u32> {
        match mem.get(ROUNDS) {
            Some(Extra::Vector(v)) => v.iter().map(|&r| r as u32).collect(),
            _ => Vec::new(),
        }
    }

    /// The generator state kept in a stage memory, if any.
    pub fn state_in(mem: &Extras) -> Option<GanState> {
        let vec = |k: &str| match mem.get(k) {
            Some(Extra::Vector(v)) => Some(v.clone()),
            _ => None,
        };
        Some(GanState { phi: vec(PHI)?, m: vec(M)?, v: vec(V)?, t: mem.scalar(T)? as u64 })
    }

    fn store(st: GanState, mem: &mut Extras) {
        mem.insert(T, Extra::Scalar(st.t as f64));
        mem.insert(PHI, Extra::Vector(st.phi));
        mem.insert(M, Extra::Vector(st.m));
        mem.insert(V, Extra::Vector(st.v));
    }
}

/// One Adam step (beta_1 = 0.5 as in DCGAN, beta_2 = 0.999, eps = 1e-8, bias-corrected) of the
/// generator's weights along `grad`.
pub fn adam_step(st: &mut GanState, grad: &[f32], lr: f64) {
    let (b1, b2, eps) = (0.5f64, 0.999f64, 1e-8f64);
    st.t += 1;
    let (c1, c2) = (1.0 - b1.powi(st.t as i32), 1.0 - b2.powi(st.t as i32));
    for (((w, m), v), &gr) in st.phi.iter_mut().zip(&mut st.m).zip(&mut st.v).zip(grad) {
        let gr = gr as f64;
        *m = (b1 * *m as f64 + (1.0 - b1) * gr) as f32;
        *v = (b2 * *v as f64 + (1.0 - b2) * gr * gr) as f32;
        *w -= (lr * (*m as f64 / c1) / ((*v as f64 / c2).sqrt() + eps)) as f32;
    }
}

impl Stage for GanLeakage {
    fn on_data(&self, _cx: &ClientCtx, _d: &mut ClientData, _mem: &mut Extras) -> Result<()> {
        Err(Error::Method("gan_leakage trains against the shared model: it runs with the client's model".into()))
    }

    fn on_data_with_model(
        &self,
        cx: &ClientCtx,
        model: &mut dyn Model,
        d: &mut ClientData,
        mem: &mut Extras,
    ) -> Result<()> {
        if !cx.malicious {
            return Ok(());
        }
        let data = d.data.clone();
        self.check_classes(data.classes)?;
        if data.positions() > 0 {
            return Err(Error::Method("gan_leakage generates images: the data has a target per position".into()));
        }
        if d.stamp.is_some() {
            return Err(Error::config("pipeline", "gan_leakage and a trigger stage on one client: keep one"));
        }
        if !d.affine.is_identity() {
            return Err(Error::config(
                "pipeline",
                "gan_leakage on a client with a per-client feature transform: its generated images would be transformed before training",
            ));
        }
        let shape = data.feature_shape.clone();
        let g = self.generator(&shape, &data);
        let mut st = match Self::state_in(mem) {
            Some(st) if st.phi.len() == g.len() => st,
            Some(_) => return Err(Error::Method("gan_leakage: the stored generator has another size".into())),
            None => self.initial_state(&g, cx.seed, cx.client),
        };
        self.train_generator(&g, model, cx.global, &shape, data.classes, &mut st, &mut cx.rng("gan.train"))?;
        // The insider's own samples (none of `target`), then G's samples labelled `fake`.
        let own: Vec<usize> =
            (0..d.len()).filter(|&p| d.label(p) != self.target && data.y[d.idx[p] as usize] != self.target).collect();
        if own.is_empty() && self.inject == 0 {
            return Err(Error::Method(format!(
                "gan_leakage: client {} holds only samples of the target class {} and injects none: it would train on nothing",
                cx.client, self.target
            )));
        }
        let fake = g.generate(&st.phi, g.noise(self.inject, &mut cx.rng("gan.inject")));
        let dim = data.feature_len();
        let mut x = Vec::with_capacity((own.len() + self.inject) * dim);
        own.iter().for_each(|&p| x.extend_from_slice(data.features(d.idx[p] as usize)));
        x.extend_from_slice(&fake);
        let y: Vec<u32> = own.iter().map(|&p| d.label(p)).chain(std::iter::repeat_n(self.fake, self.inject)).collect();
        let mixed = Dataset {
            name: format!("{} + gan_leakage", data.name),
            x,
            y,
            feature_shape: shape,
            classes: data.classes,
            users: None,
            targets: Vec::new(),
        };
        *d = ClientData { noise_std: d.noise_std, affine: d.affine, ..ClientData::whole(Arc::new(mixed)) };
        Self::store(st, mem);
        let mut rounds: Vec<f32> = Self::rounds_in(mem).into_iter().map(|r| r as f32).collect();
        rounds.push(cx.round as f32);
        mem.insert(ROUNDS, Extra::Vector(rounds));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator's weight gradient of <v, G(z)> against central differences along random
    /// directions.
    #[test]
    fn the_generator_gradient_matches_finite_differences() {
        let g = Generator { latent: 5, hidden: 7, out: 9, lo: -1.0, hi: 2.0 };
        let mut rng = RngStream::new(3);
        let phi = g.init(&mut rng);
        let z = g.noise(4, &mut rng);
        let v: Vec<f32> = (0..4 * g.out).map(|_| rng.normal() as f32).collect();
        let objective = |phi: &[f32]| -> f64 {
            g.generate(phi, z.clone()).iter().zip(&v).map(|(x, v)| (*x as f64) * (*v as f64)).sum()
        };
        let grad = g.backward(&phi, &g.pass(&phi, z.clone()), &v);
        for _ in 0..5 {
            let d: Vec<f32> = (0..phi.len()).map(|_| rng.normal() as f32).collect();
            let eps = 1e-2f32;
            let at = |s: f32| objective(&phi.iter().zip(&d).map(|(p, d)| p + s * d).collect::<Vec<_>>());
            let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            let exact: f64 = grad.iter().zip(&d).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            assert!((fd - exact).abs() <= 2e-2 * exact.abs().max(1.0), "finite difference {fd} vs gradient {exact}");
        }
    }

    #[test]
    fn adam_takes_sign_steps_of_the_learning_rate_first_then_averages() {
        let mut st = GanState { phi: vec![1.0, -2.0], m: vec![0.0; 2], v: vec![0.0; 2], t: 0 };
        adam_step(&mut st, &[0.5, -4.0], 0.1);
        // From zero moments, bias correction gives m^ = g and v^ = g^2: a step of lr * sign(g).
        assert!((st.phi[0] - 0.9).abs() < 1e-6 && (st.phi[1] + 1.9).abs() < 1e-6, "{:?}", st.phi);
        adam_step(&mut st, &[-0.5, -4.0], 0.1);
        // Second step on coordinate 0: m = 0.5 * 0.25 - 0.25 = -0.125, m^ = -0.125 / 0.75;
        // v = 0.999 * 0.00025 + 0.00025, v^ = v / (1 - 0.999^2).
        let (m, v) = (-0.125f64 / 0.75, (0.999 * 0.00025 + 0.001 * 0.25) / (1.0 - 0.999f64.powi(2)));
        let want = 0.9 - 0.1 * m / (v.sqrt() + 1e-8);
        assert!((st.phi[0] as f64 - want).abs() < 1e-5, "{} vs {want}", st.phi[0]);
        assert_eq!(st.t, 2);
    }

    #[test]
    fn samples_stay_in_the_pixel_range_and_bad_parameters_are_refused() {
        let g = Generator { latent: 3, hidden: 4, out: 6, lo: 0.25, hi: 0.5 };
        let mut rng = RngStream::new(1);
        let x = g.generate(&g.init(&mut rng), g.noise(10, &mut rng));
        assert!(x.iter().all(|&v| (0.25..=0.5).contains(&v)));
        assert!(GanLeakage { fake: 1, ..GanLeakage::default() }.validated().is_err());
        assert!(GanLeakage { lr: 0.0, ..GanLeakage::default() }.validated().is_err());
        assert!(GanLeakage { batch: 0, ..GanLeakage::default() }.validated().is_err());
        assert!(GanLeakage::default().check_classes(1).is_err());
    }
}
