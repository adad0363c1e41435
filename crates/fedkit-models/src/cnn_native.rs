//! The `cnn` network (without normalisation) implemented natively on flat buffers: the same
//! function, parameter layout and initialisation as the burn version in `cnn.rs`, 2 to 2.5x faster
//! on one CPU core (a batch-32 training step of the default 28x28 network: ~35 ms against 72 to
//! 90 ms for burn-flex, whose direct convolution, max-pool with indices and transposed
//! convolution dominate its profile; see docs/performance.md).
//!
//! Activations are channels-last (`[n, h, w, c]`) inside, converted only at the boundaries (input,
//! input gradient, the flatten before `fc1`), and the convolution weights are permuted to
//! `[c_out, 5, 5, c_in]` each step (and their gradients back), so that each convolution is im2col
//! (runs of `c_in` contiguous values) plus one single-threaded `gemm` per sample in which gemm
//! packs only the weights and reads the large im2col matrix in place. ReLU and the 2x2 max pool are
//! fused with the convolution's bias; the fully connected layers are batched `gemm`s. The backward
//! pass keeps the first convolution's im2col matrices, recomputes the second's per sample, and
//! skips the input gradient of the first convolution unless [`Model::input_grad`] asks for it. All
//! scratch buffers live in the model object and are reused across steps and clients. About 70% of
//! a step is gemm's microkernel.

use std::ops::Range;
use std::sync::Arc;

use fedkit_core::{Batch, Error, Layout, Model, Params, Result, RngStream};

use crate::conv_kernels::{
    ConvGeom, MatRef, add_bias, add_column_sums, bias_relu_maxpool, bias_relu_maxpool_backward, col2im, im2col,
    logit_grads, matmul, softmax_cross_entropy, transpose,
};

/// Samples per convolution `gemm` (their im2col matrices stacked).
const SAMPLES_PER_GEMM: usize = 1;

/// In a weight gradient `dw_block = dz_block^T col`, gemm reads the im2col matrix in place (no
/// packing) when the block has at most this many output channels (gemm-common's single-thread
/// packing threshold 8 times its f32 AVX2 kernel width 6); [`weight_grad`] splits accordingly.
const UNPACKED_COLUMNS: usize = 48;

/// Sizes of the network: input `[c0, h, w]`, convolution channels `c1`, `c2`, hidden width,
/// classes.
#[derive(Clone, Copy, Debug)]
pub struct CnnDims {
    pub c0: usize,
    pub h: usize,
    pub w: usize,
    pub c1: usize,
    pub c2: usize,
    pub hidden: usize,
    pub classes: usize,
}

impl CnnDims {
    fn conv1(&self) -> ConvGeom {
        ConvGeom { c: self.c0, h: self.h, w: self.w, k: 5, pad: 2 }
    }
    fn conv2(&self) -> ConvGeom {
        ConvGeom { c: self.c1, h: self.h / 2, w: self.w / 2, k: 5, pad: 2 }
    }
    fn sample_len(&self) -> usize {
        self.c0 * self.h * self.w
    }
    /// One sample's first pooled feature map `[h/2, w/2, c1]`.
    fn pool1_len(&self) -> usize {
        self.c1 * (self.h / 2) * (self.w / 2)
    }
    /// One sample's second pooled feature map, `[h/4, w/4, c2]` or flattened `[c2, h/4, w/4]`.
    fn flat_len(&self) -> usize {
        self.c2 * (self.h / 4) * (self.w / 4)
    }
}

/// Layout entries in `cnn` order (norm = "none").
const CONV1_W: usize = 0;
const CONV1_B: usize = 1;
const CONV2_W: usize = 2;
const CONV2_B: usize = 3;
const FC1_W: usize = 4;
const FC1_B: usize = 5;
const FC2_W: usize = 6;
const FC2_B: usize = 7;

/// Per-step buffers, reused across steps (sized on first use). Images are channels-last.
#[derive(Default)]
struct Scratch {
    /// The batch's inputs `[n, h, w, c0]`.
    x: Vec<f32>,
    /// Convolution weights `[c_out, 5, 5, c_in]` and their gradients.
    w1: Vec<f32>,
    w2: Vec<f32>,
    dw1: Vec<f32>,
    dw2: Vec<f32>,
    /// The first convolution's im2col matrices `[n h w, 25 c0]` (kept for its weight gradient).
    col1: Vec<f32>,
    /// One gemm's im2col matrix of the second convolution, and a gradient of either's.
    col: Vec<f32>,
    dcol: Vec<f32>,
    /// One gemm's convolution output, or its gradient.
    z: Vec<f32>,
    /// Pooled first feature maps `[n, h/2, w/2, c1]` and their window argmaxes.
    pool1: Vec<f32>,
    arg1: Vec<u8>,
    /// Pooled second feature maps `[n, h/4, w/4, c2]`, their argmaxes, and the same flattened
    /// channels-first `[n, c2 h/4 w/4]` (the fully connected layer's input order).
    pool2: Vec<f32>,
    arg2: Vec<u8>,
    flat: Vec<f32>,
    /// Hidden activations `[n, hidden]` (after ReLU) and their gradient.
    hidden: Vec<f32>,
    dhidden: Vec<f32>,
    /// Logits `[n, classes]`, then probabilities, then logit gradients.
    logits: Vec<f32>,
    /// Gradient of `flat`, one sample's gradient of its second pooled map (channels-last), one
    /// gemm's gradient of the first pooled maps.
    dflat: Vec<f32>,
    dpool2: Vec<f32>,
    dpool1: Vec<f32>,
    /// Input gradient `[n, h, w, c0]`.
    dx: Vec<f32>,
}

/// Resize `v` to `len` (contents are overwritten before being read).
fn sized<T: Clone + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    v.resize(len, T::default());
    &mut v[..len]
}

/// Resize `v` to hold `len` values starting at a 64-byte (cache line) boundary and return them.
fn sized_aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len + 16, 0.0);
    let skip = v.as_ptr().align_offset(64).min(16);
    &mut v[skip..skip + len]
}

/// PyTorch's `[c_out, c_in, k, k]` convolution weights as `[c_out, k, k, c_in]` (`back`: the
/// inverse).
fn permute_conv_weights(src: &[f32], c_out: usize, c_in: usize, taps: usize, back: bool, dst: &mut [f32]) {
    let each = c_in * taps;
    for (s, d) in src[..c_out * each].chunks_exact(each).zip(dst[..c_out * each].chunks_exact_mut(each)) {
        if back { transpose(s, taps, c_in, d) } else { transpose(s, c_in, taps, d) }
    }
}

/// The native `cnn` (norm = "none").
pub struct CnnNative {
    layout: Arc<Layout>,
    dims: CnnDims,
    /// Ranges of the eight layout entries.
    entries: [Range<usize>; 8],
    scratch: Scratch,
}

impl CnnNative {
    /// The network of `dims` over `layout` (the `cnn` layout without normalisation entries).
    pub fn new(layout: Arc<Layout>, dims: CnnDims) -> Result<Self> {
        let e = layout.entries();
        if e.len() != 8 {
            return Err(Error::Shape(format!("native cnn expects 8 layout entries, got {}", e.len())));
        }
        let entries = std::array::from_fn(|i| e[i].range());
        Ok(CnnNative { layout, dims, entries, scratch: Scratch::default() })
    }

    fn check(&self, batch: &Batch) -> Result<()> {
        let (d, n) = (self.dims.sample_len(), batch.len());
        if batch.x.len() != n * d {
            return Err(Error::Shape(format!(
                "cnn expects samples of {:?}, batch has {} values for {n} samples",
                [self.dims.c0, self.dims.h, self.dims.w],
                batch.x.len()
            )));
        }
        if let Some(y) = batch.y.iter().find(|&&y| y as usize >= self.dims.classes) {
            return Err(Error::Shape(format!("label {y} out of range for {} classes", self.dims.classes)));
        }
        Ok(())
    }

    /// Forward pass over `batch`, keeping what the backward pass needs; leaves the softmax
    /// probabilities in `scratch.logits` and returns the summed loss and correct count.
    fn forward(&mut self, w: &[f32], batch: &Batch) -> Result<(f64, usize)> {
        self.check(batch)?;
        let (d, n) = (self.dims, batch.len());
        let (g1, g2) = (d.conv1(), d.conv2());
        let (p1_len, f_len, x_len) = (d.pool1_len(), d.flat_len(), d.sample_len());
        let p = |i: usize| &w[self.entries[i].clone()];
        let s = &mut self.scratch;
        let x = sized(&mut s.x, n * x_len);
        for (src, dst) in batch.x.chunks_exact(x_len).zip(x.chunks_exact_mut(x_len)) {
            transpose(src, d.c0, d.h * d.w, dst);
        }
        let w1 = sized(&mut s.w1, d.c1 * g1.patch_len());
        permute_conv_weights(p(CONV1_W), d.c1, d.c0, 25, false, w1);
        let w2 = sized(&mut s.w2, d.c2 * g2.patch_len());
        permute_conv_weights(p(CONV2_W), d.c2, d.c1, 25, false, w2);
        let (pos1, pos2) = (g1.positions(), g2.positions());
        let per = SAMPLES_PER_GEMM;
        let col1 = sized(&mut s.col1, n * pos1 * g1.patch_len());
        for (x, col) in x.chunks_exact(x_len).zip(col1.chunks_exact_mut(pos1 * g1.patch_len())) {
            im2col(x, g1, col);
        }
        let col = sized_aligned(&mut s.col, per * pos2 * g2.patch_len());
        let z = sized_aligned(&mut s.z, per * (pos1 * d.c1).max(pos2 * d.c2));
        let (pool1, arg1) = (sized(&mut s.pool1, n * p1_len), sized(&mut s.arg1, n * p1_len));
        let (pool2, arg2) = (sized(&mut s.pool2, n * f_len), sized(&mut s.arg2, n * f_len));
        let flat = sized(&mut s.flat, n * f_len);
        for start in (0..n).step_by(per) {
            let m = per.min(n - start);
            let samples = start..start + m;
            let (k1, k2) = (g1.patch_len(), g2.patch_len());
            let col1 = MatRef::new(&col1[start * pos1 * k1..], m * pos1, k1);
            matmul(z, col1, MatRef::new(w1, d.c1, k1).t(), false);
            for (j, i) in samples.clone().enumerate() {
                let out = i * p1_len..(i + 1) * p1_len;
                let zj = &z[j * pos1 * d.c1..];
                bias_relu_maxpool(zj, p(CONV1_B), d.h, d.w, &mut pool1[out.clone()], &mut arg1[out.clone()]);
                im2col(&pool1[out], g2, &mut col[j * pos2 * k2..]);
            }
            matmul(z, MatRef::new(col, m * pos2, k2), MatRef::new(w2, d.c2, k2).t(), false);
            for (j, i) in samples.enumerate() {
                let out = i * f_len..(i + 1) * f_len;
                let zj = &z[j * pos2 * d.c2..];
                bias_relu_maxpool(zj, p(CONV2_B), g2.h, g2.w, &mut pool2[out.clone()], &mut arg2[out.clone()]);
                transpose(&pool2[out.clone()], f_len / d.c2, d.c2, &mut flat[out]);
            }
        }
        let hidden = sized(&mut s.hidden, n * d.hidden);
        matmul(hidden, MatRef::new(flat, n, f_len), MatRef::new(p(FC1_W), f_len, d.hidden), false);
        add_bias(hidden, p(FC1_B), true);
        let logits = sized(&mut s.logits, n * d.classes);
        matmul(logits, MatRef::new(hidden, n, d.hidden), MatRef::new(p(FC2_W), d.hidden, d.classes), false);
        add_bias(logits, p(FC2_B), false);
        Ok(softmax_cross_entropy(logits, &batch.y, d.classes))
    }

    /// Backward pass after [`CnnNative::forward`]: the parameter gradient of the mean loss into
    /// `grad` (if given, overwritten) and the input gradient into `gx` (if given, `[n, c0, h, w]`).
    fn backward(&mut self, w: &[f32], batch: &Batch, mut grad: Option<&mut [f32]>, gx: Option<&mut [f32]>) {
        let (d, n) = (self.dims, batch.len());
        let (g1, g2) = (d.conv1(), d.conv2());
        let (p1_len, f_len, x_len) = (d.pool1_len(), d.flat_len(), d.sample_len());
        let entries = &self.entries;
        let p = |i: usize| &w[entries[i].clone()];
        let s = &mut self.scratch;
        logit_grads(&mut s.logits, &batch.y, d.classes);
        let (logits, hidden, flat) = (&s.logits[..n * d.classes], &s.hidden[..n * d.hidden], &s.flat[..n * f_len]);
        if let Some(g) = grad.as_deref_mut() {
            // weight gradients are written whole below; biases add up
            for e in [CONV1_B, CONV2_B, FC1_B, FC2_B] {
                g[entries[e].clone()].fill(0.0);
            }
            let dlogits = MatRef::new(logits, n, d.classes);
            matmul(&mut g[entries[FC2_W].clone()], MatRef::new(hidden, n, d.hidden).t(), dlogits, false);
            add_column_sums(logits, &mut g[entries[FC2_B].clone()]);
        }
        let dhidden = sized(&mut s.dhidden, n * d.hidden);
        let fc2 = MatRef::new(p(FC2_W), d.hidden, d.classes);
        matmul(dhidden, MatRef::new(logits, n, d.classes), fc2.t(), false);
        dhidden.iter_mut().zip(hidden).for_each(|(g, &h)| *g = if h > 0.0 { *g } else { 0.0 });
        if let Some(g) = grad.as_deref_mut() {
            let dh = MatRef::new(dhidden, n, d.hidden);
            matmul(&mut g[entries[FC1_W].clone()], MatRef::new(flat, n, f_len).t(), dh, false);
            add_column_sums(dhidden, &mut g[entries[FC1_B].clone()]);
        }
        let dflat = sized(&mut s.dflat, n * f_len);
        let fc1 = MatRef::new(p(FC1_W), f_len, d.hidden);
        matmul(dflat, MatRef::new(dhidden, n, d.hidden), fc1.t(), false);

        let (k1, k2, pos1, pos2) = (g1.patch_len(), g2.patch_len(), g1.positions(), g2.positions());
        let (w1, w2) = (&s.w1[..d.c1 * k1], &s.w2[..d.c2 * k2]);
        let (dw1, dw2) = (sized(&mut s.dw1, d.c1 * k1), sized(&mut s.dw2, d.c2 * k2));
        dw1.fill(0.0);
        dw2.fill(0.0);
        let per = SAMPLES_PER_GEMM;
        let col = sized_aligned(&mut s.col, per * pos2 * k2);
        let z = sized_aligned(&mut s.z, per * (pos1 * d.c1).max(pos2 * d.c2));
        let dcol = sized_aligned(&mut s.dcol, per * (pos1 * k1).max(pos2 * k2));
        let dpool2 = sized(&mut s.dpool2, f_len);
        let dpool1 = sized(&mut s.dpool1, per * p1_len);
        let want_dx = gx.is_some();
        let dx = sized(&mut s.dx, if want_dx { n * x_len } else { 0 });
        for start in (0..n).step_by(per) {
            let m = per.min(n - start);
            let samples = start..start + m;
            // second convolution: pooled gradient -> dz2 [m pos2, c2], then weights, bias, input
            for (j, i) in samples.clone().enumerate() {
                let f = i * f_len..(i + 1) * f_len;
                transpose(&dflat[f.clone()], d.c2, f_len / d.c2, dpool2);
                let zj = &mut z[j * pos2 * d.c2..(j + 1) * pos2 * d.c2];
                bias_relu_maxpool_backward(dpool2, &s.pool2[f.clone()], &s.arg2[f], d.c2, g2.h, g2.w, zj);
            }
            let dz2 = &z[..m * pos2 * d.c2];
            if let Some(g) = grad.as_deref_mut() {
                for (j, i) in samples.clone().enumerate() {
                    im2col(&s.pool1[i * p1_len..(i + 1) * p1_len], g2, &mut col[j * pos2 * k2..]);
                }
                add_column_sums(dz2, &mut g[entries[CONV2_B].clone()]);
                weight_grad(dz2, d.c2, MatRef::new(col, m * pos2, k2), dw2);
            }
            matmul(dcol, MatRef::new(dz2, m * pos2, d.c2), MatRef::new(w2, d.c2, k2), false);
            for j in 0..m {
                col2im(&dcol[j * pos2 * k2..], g2, &mut dpool1[j * p1_len..(j + 1) * p1_len]);
            }
            // first convolution
            for (j, i) in samples.clone().enumerate() {
                let (pm, am) = (&s.pool1[i * p1_len..(i + 1) * p1_len], &s.arg1[i * p1_len..(i + 1) * p1_len]);
                let zj = &mut z[j * pos1 * d.c1..(j + 1) * pos1 * d.c1];
                bias_relu_maxpool_backward(&dpool1[j * p1_len..], pm, am, d.c1, d.h, d.w, zj);
            }
            let dz1 = &z[..m * pos1 * d.c1];
            if let Some(g) = grad.as_deref_mut() {
                add_column_sums(dz1, &mut g[entries[CONV1_B].clone()]);
                weight_grad(dz1, d.c1, MatRef::new(&s.col1[start * pos1 * k1..], m * pos1, k1), dw1);
            }
            if want_dx {
                matmul(dcol, MatRef::new(dz1, m * pos1, d.c1), MatRef::new(w1, d.c1, k1), false);
                for (j, i) in samples.enumerate() {
                    col2im(&dcol[j * pos1 * k1..], g1, &mut dx[i * x_len..(i + 1) * x_len]);
                }
            }
        }
        if let Some(g) = grad {
            permute_conv_weights(dw1, d.c1, d.c0, 25, true, &mut g[entries[CONV1_W].clone()]);
            permute_conv_weights(dw2, d.c2, d.c1, 25, true, &mut g[entries[CONV2_W].clone()]);
        }
        if let Some(gx) = gx {
            for (src, dst) in dx.chunks_exact(x_len).zip(gx.chunks_exact_mut(x_len)) {
                transpose(src, d.h * d.w, d.c0, dst);
            }
        }
    }
}

/// `dw [c_out, patch] += dz^T col` for a convolution's output gradient `dz` (`[positions, c_out]`)
/// and im2col matrix `col` (`[positions, patch]`), in blocks of output channels narrow enough
/// that gemm reads `col` in place.
fn weight_grad(dz: &[f32], c_out: usize, col: MatRef, dw: &mut [f32]) {
    let (positions, patch) = (dz.len() / c_out.max(1), dw.len() / c_out.max(1));
    for lo in (0..c_out).step_by(UNPACKED_COLUMNS) {
        let hi = (lo + UNPACKED_COLUMNS).min(c_out);
        let dz_block = MatRef::strided(&dz[lo..], hi - lo, positions, 1, c_out);
        matmul(&mut dw[lo * patch..hi * patch], dz_block, col, true);
    }
}

impl Model for CnnNative {
    /// A fresh copy with empty scratch buffers.
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(CnnNative {
            layout: self.layout.clone(),
            dims: self.dims,
            entries: self.entries.clone(),
            scratch: Scratch::default(),
        })
    }
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        crate::init::pytorch_default(&self.layout, rng)
    }
    fn loss_grad(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        grad: &mut Params,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        let (loss, _) = self.forward(params.as_slice(), batch)?;
        self.backward(params.as_slice(), batch, Some(grad.as_mut_slice()), None);
        Ok((loss / batch.len() as f64) as f32)
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        self.forward(params.as_slice(), batch)
    }
    fn input_grad(&mut self, params: &Params, batch: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
        let (loss, _) = self.forward(params.as_slice(), batch)?;
        gx.clear();
        gx.resize(batch.x.len(), 0.0);
        self.backward(params.as_slice(), batch, None, Some(gx.as_mut_slice()));
        Ok((loss / batch.len() as f64) as f32)
    }
}
