//! The native convolutional networks `cnn` (without normalisation, `cnn.rs`) and `lenet`
//! (`lenet.rs`) on flat buffers: one network type, [`ConvNetNative`], with two 5x5 convolutions
//! (each with its own zero padding: 2 in `cnn`, 0 in `lenet`), each followed by ReLU and a 2x2
//! max pool, then fully connected layers (any number of hidden ones, each with ReLU, then the
//! output layer). Same functions, parameter layouts and initialisation as the burn versions, and
//! 2 to 2.5x faster on one CPU core for `cnn` (a batch-32 training step of the default 28x28
//! network: ~35 ms against 72 to 90 ms for burn-flex, whose direct convolution, max-pool with
//! indices and transposed convolution dominate its profile; see docs/performance.md).
//!
//! Activations are channels-last (`[n, h, w, c]`) inside, converted only at the boundaries (input,
//! input gradient, the flatten before the first fully connected layer), and the convolution
//! weights are permuted to `[c_out, 5, 5, c_in]` each step (and their gradients back), so that
//! each convolution is im2col (runs of `c_in` contiguous values) plus one single-threaded `gemm`
//! per sample in which gemm packs only the weights and reads the large im2col matrix in place.
//! ReLU and the 2x2 max pool are fused with the convolution's bias (so each convolution's output
//! must have even sides: [`ConvNetDims::pools_evenly`]); the fully connected layers are batched
//! `gemm`s. The backward pass keeps the first convolution's im2col matrices, recomputes the
//! second's per sample, and skips the input gradient of the first convolution unless
//! [`Model::input_grad`] asks for it. All scratch buffers live in the model object and are reused
//! across steps and clients. About 70% of a `cnn` step is gemm's microkernel.

use std::ops::Range;
use std::sync::Arc;

use fedkit_core::model::{logits_to_grad, softmax_cross_entropy};
use fedkit_core::{Activation, Batch, Error, Head, Layout, Mode, Model, Outputs, Params, Result, RngStream};

use crate::conv_kernels::{
    ConvGeom, MatRef, add_bias, add_column_sums, bias_relu_maxpool, bias_relu_maxpool_backward, col2im, im2col, matmul,
    transpose,
};

/// Samples per convolution `gemm` (their im2col matrices stacked).
const SAMPLES_PER_GEMM: usize = 1;

/// In a weight gradient `dw_block = dz_block^T col`, gemm reads the im2col matrix in place (no
/// packing) when the block has at most this many output channels (gemm-common's single-thread
/// packing threshold 8 times its f32 AVX2 kernel width 6); [`weight_grad`] splits accordingly.
const UNPACKED_COLUMNS: usize = 48;

/// Sizes of the network: input `[c0, h, w]`, the two 5x5 convolutions' output channels and zero
/// padding, the hidden fully connected widths, classes. `cnn` is `convs: [(c1, 2), (c2, 2)]`,
/// `hidden: vec![hidden]`; `lenet` is `convs: [(c1, 0), (c2, 0)]`, `hidden: vec![h1, h2]`.
#[derive(Clone, Debug)]
pub struct ConvNetDims {
    pub c0: usize,
    pub h: usize,
    pub w: usize,
    /// `(output channels, padding)` of each convolution.
    pub convs: [(usize, usize); 2],
    /// Widths of the hidden fully connected layers (each followed by ReLU), in order.
    pub hidden: Vec<usize>,
    pub classes: usize,
}

impl ConvNetDims {
    /// Whether the native network runs these sizes: each convolution's output (side
    /// `s + 2 pad - 4` for an input side `s`) has even, non-zero sides, which the fused 2x2 max
    /// pool (`bias_relu_maxpool`) needs. (burn's pool drops an odd last row or column.)
    pub fn pools_evenly(&self) -> bool {
        let out = |side: usize, pad: usize| (side + 2 * pad).checked_sub(4).filter(|&s| s > 0 && s.is_multiple_of(2));
        let [(_, pad1), (_, pad2)] = self.convs;
        [self.h, self.w].into_iter().all(|s| out(s, pad1).and_then(|s| out(s / 2, pad2)).is_some())
    }
    fn c1(&self) -> usize {
        self.convs[0].0
    }
    fn c2(&self) -> usize {
        self.convs[1].0
    }
    fn conv1(&self) -> ConvGeom {
        ConvGeom { c: self.c0, h: self.h, w: self.w, k: 5, pad: self.convs[0].1 }
    }
    /// The second convolution, over the first one's pooled output.
    fn conv2(&self) -> ConvGeom {
        let g1 = self.conv1();
        ConvGeom { c: self.c1(), h: g1.h_out() / 2, w: g1.w_out() / 2, k: 5, pad: self.convs[1].1 }
    }
    fn sample_len(&self) -> usize {
        self.c0 * self.h * self.w
    }
    /// One sample's first pooled feature map (the second convolution's input) `[h1/2, w1/2, c1]`,
    /// `h1 x w1` the first convolution's output.
    fn pool1_len(&self) -> usize {
        let g2 = self.conv2();
        g2.c * g2.h * g2.w
    }
    /// One sample's second pooled feature map, `[h2/2, w2/2, c2]` or flattened `[c2, h2/2, w2/2]`
    /// (`h2 x w2` the second convolution's output).
    fn flat_len(&self) -> usize {
        let g2 = self.conv2();
        self.c2() * (g2.h_out() / 2) * (g2.w_out() / 2)
    }
    /// Input and output widths of fully connected layer `k` (0: the first; `hidden.len()`: the
    /// output layer).
    fn fc_widths(&self, k: usize) -> (usize, usize) {
        let input = if k == 0 { self.flat_len() } else { self.hidden[k - 1] };
        let output = if k == self.hidden.len() { self.classes } else { self.hidden[k] };
        (input, output)
    }
}

/// Layout entries in `cnn` / `lenet` order (norm = "none"): the convolutions, then the weight
/// and bias of each fully connected layer `k` ([`fc_w`], [`fc_b`]).
const CONV1_W: usize = 0;
const CONV1_B: usize = 1;
const CONV2_W: usize = 2;
const CONV2_B: usize = 3;
const fn fc_w(k: usize) -> usize {
    4 + 2 * k
}
const fn fc_b(k: usize) -> usize {
    5 + 2 * k
}

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
    /// The first convolution's im2col matrices `[n h1 w1, 25 c0]` (kept for its weight gradient).
    col1: Vec<f32>,
    /// One gemm's im2col matrix of the second convolution, and a gradient of either's.
    col: Vec<f32>,
    dcol: Vec<f32>,
    /// One gemm's convolution output, or its gradient.
    z: Vec<f32>,
    /// Pooled first feature maps `[n, h1/2, w1/2, c1]` and their window argmaxes.
    pool1: Vec<f32>,
    arg1: Vec<u8>,
    /// Pooled second feature maps `[n, h2/2, w2/2, c2]`, their argmaxes, and the same flattened
    /// channels-first `[n, c2 h2/2 w2/2]` (the first fully connected layer's input order).
    pool2: Vec<f32>,
    arg2: Vec<u8>,
    flat: Vec<f32>,
    /// Each hidden layer's activations `[n, width]` (after ReLU) and their gradient.
    hidden: Vec<Vec<f32>>,
    dhidden: Vec<Vec<f32>>,
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

/// The native `cnn` (norm = "none") and `lenet`.
pub struct ConvNetNative {
    layout: Arc<Layout>,
    dims: ConvNetDims,
    /// Ranges of the layout entries (4 for the convolutions, 2 per fully connected layer).
    entries: Vec<Range<usize>>,
    scratch: Scratch,
}

impl ConvNetNative {
    /// The network of `dims` over `layout` (conv1.weight, conv1.bias, conv2.weight, conv2.bias,
    /// then each fully connected layer's weight `[in, out]` and bias); an error if the entry sizes
    /// do not match `dims` or the convolution outputs do not pool evenly
    /// ([`ConvNetDims::pools_evenly`]).
    pub fn new(layout: Arc<Layout>, dims: ConvNetDims) -> Result<Self> {
        if !dims.pools_evenly() {
            return Err(Error::Shape(format!(
                "native conv net: convolution outputs of {}x{} inputs with paddings {:?} must have even sides",
                dims.h, dims.w, dims.convs
            )));
        }
        let (c1, c2) = (dims.c1(), dims.c2());
        let mut want = vec![c1 * dims.c0 * 25, c1, c2 * c1 * 25, c2];
        for k in 0..=dims.hidden.len() {
            let (i, o) = dims.fc_widths(k);
            want.extend([i * o, o]);
        }
        let got: Vec<usize> = layout.entries().iter().map(|e| e.len()).collect();
        if got != want {
            return Err(Error::Shape(format!("native conv net expects layout entry sizes {want:?}, got {got:?}")));
        }
        let entries: Vec<Range<usize>> = layout.entries().iter().map(|e| e.range()).collect();
        Ok(ConvNetNative { layout, dims, entries, scratch: Scratch::default() })
    }

    fn check(&self, batch: &Batch) -> Result<()> {
        let (d, n) = (self.dims.sample_len(), batch.len());
        if batch.x.len() != n * d {
            return Err(Error::Shape(format!(
                "the network expects samples of {:?}, batch has {} values for {n} samples",
                [self.dims.c0, self.dims.h, self.dims.w],
                batch.x.len()
            )));
        }
        if let Some(y) = batch.y.iter().find(|&&y| y as usize >= self.dims.classes) {
            return Err(Error::Shape(format!("label {y} out of range for {} classes", self.dims.classes)));
        }
        Ok(())
    }

    /// Forward pass over `batch`, keeping what the backward pass needs; leaves the logits in
    /// `scratch.logits`.
    fn forward_logits(&mut self, w: &[f32], batch: &Batch) -> Result<()> {
        self.check(batch)?;
        let (d, n) = (&self.dims, batch.len());
        let (g1, g2) = (d.conv1(), d.conv2());
        let (c1, c2) = (d.c1(), d.c2());
        let (p1_len, f_len, x_len) = (d.pool1_len(), d.flat_len(), d.sample_len());
        let entries = &self.entries;
        let p = |i: usize| &w[entries[i].clone()];
        let s = &mut self.scratch;
        let x = sized(&mut s.x, n * x_len);
        for (src, dst) in batch.x.chunks_exact(x_len).zip(x.chunks_exact_mut(x_len)) {
            transpose(src, d.c0, d.h * d.w, dst);
        }
        let w1 = sized(&mut s.w1, c1 * g1.patch_len());
        permute_conv_weights(p(CONV1_W), c1, d.c0, 25, false, w1);
        let w2 = sized(&mut s.w2, c2 * g2.patch_len());
        permute_conv_weights(p(CONV2_W), c2, c1, 25, false, w2);
        let (pos1, pos2) = (g1.positions(), g2.positions());
        let per = SAMPLES_PER_GEMM;
        let col1 = sized(&mut s.col1, n * pos1 * g1.patch_len());
        for (x, col) in x.chunks_exact(x_len).zip(col1.chunks_exact_mut(pos1 * g1.patch_len())) {
            im2col(x, g1, col);
        }
        let col = sized_aligned(&mut s.col, per * pos2 * g2.patch_len());
        let z = sized_aligned(&mut s.z, per * (pos1 * c1).max(pos2 * c2));
        let (pool1, arg1) = (sized(&mut s.pool1, n * p1_len), sized(&mut s.arg1, n * p1_len));
        let (pool2, arg2) = (sized(&mut s.pool2, n * f_len), sized(&mut s.arg2, n * f_len));
        let flat = sized(&mut s.flat, n * f_len);
        for start in (0..n).step_by(per) {
            let m = per.min(n - start);
            let samples = start..start + m;
            let (k1, k2) = (g1.patch_len(), g2.patch_len());
            let col1 = MatRef::new(&col1[start * pos1 * k1..], m * pos1, k1);
            matmul(z, col1, MatRef::new(w1, c1, k1).t(), false);
            for (j, i) in samples.clone().enumerate() {
                let out = i * p1_len..(i + 1) * p1_len;
                let zj = &z[j * pos1 * c1..];
                let (zh, zw) = (g1.h_out(), g1.w_out());
                bias_relu_maxpool(zj, p(CONV1_B), zh, zw, &mut pool1[out.clone()], &mut arg1[out.clone()]);
                im2col(&pool1[out], g2, &mut col[j * pos2 * k2..]);
            }
            matmul(z, MatRef::new(col, m * pos2, k2), MatRef::new(w2, c2, k2).t(), false);
            for (j, i) in samples.enumerate() {
                let out = i * f_len..(i + 1) * f_len;
                let zj = &z[j * pos2 * c2..];
                let (zh, zw) = (g2.h_out(), g2.w_out());
                bias_relu_maxpool(zj, p(CONV2_B), zh, zw, &mut pool2[out.clone()], &mut arg2[out.clone()]);
                transpose(&pool2[out.clone()], f_len / c2, c2, &mut flat[out]);
            }
        }
        // the fully connected layers: hidden ones (ReLU), then the logits
        let flat: &[f32] = flat;
        let nh = d.hidden.len();
        s.hidden.resize_with(nh, Vec::new);
        for k in 0..nh {
            let (i_w, o_w) = d.fc_widths(k);
            let (before, rest) = s.hidden.split_at_mut(k);
            let input: &[f32] = if k == 0 { flat } else { &before[k - 1][..n * i_w] };
            let out = sized(&mut rest[0], n * o_w);
            matmul(out, MatRef::new(input, n, i_w), MatRef::new(p(fc_w(k)), i_w, o_w), false);
            add_bias(out, p(fc_b(k)), true);
        }
        let (i_w, _) = d.fc_widths(nh);
        let input: &[f32] = if nh == 0 { flat } else { &s.hidden[nh - 1][..n * i_w] };
        let logits = sized(&mut s.logits, n * d.classes);
        matmul(logits, MatRef::new(input, n, i_w), MatRef::new(p(fc_w(nh)), i_w, d.classes), false);
        add_bias(logits, p(fc_b(nh)), false);
        Ok(())
    }

    /// The features after [`ConvNetNative::forward_logits`]: the output layer's input
    /// (`[n, width]`; the flattened second pooled maps when there is no hidden layer).
    fn features(&self, n: usize) -> (&[f32], usize) {
        let (i_w, _) = self.dims.fc_widths(self.dims.hidden.len());
        match self.scratch.hidden.last() {
            Some(h) => (&h[..n * i_w], i_w),
            None => (&self.scratch.flat[..n * i_w], i_w),
        }
    }

    /// Forward pass then softmax cross-entropy: `scratch.logits` holds the gradient of the mean
    /// loss with respect to the logits (for [`ConvNetNative::backward`]); returns the summed
    /// loss.
    fn forward_cross_entropy(&mut self, w: &[f32], batch: &Batch) -> Result<f64> {
        self.forward_logits(w, batch)?;
        let c = self.dims.classes;
        let logits = &mut self.scratch.logits[..batch.len() * c];
        let (loss, _) = softmax_cross_entropy(logits, &batch.y, c);
        logits_to_grad(logits, &batch.y, c);
        Ok(loss)
    }

    /// Backward pass after [`ConvNetNative::forward_logits`], from the gradient with respect to
    /// the logits in `scratch.logits` and (if given) with respect to the features `dfeat`: the
    /// parameter gradient into `grad` (if given, overwritten) and the input gradient into `gx`
    /// (if given, `[n, c0, h, w]`).
    fn backward(
        &mut self,
        w: &[f32],
        batch: &Batch,
        dfeat: Option<&[f32]>,
        mut grad: Option<&mut [f32]>,
        gx: Option<&mut [f32]>,
    ) {
        let (d, n) = (&self.dims, batch.len());
        let (g1, g2) = (d.conv1(), d.conv2());
        let (c1, c2) = (d.c1(), d.c2());
        let (p1_len, f_len, x_len) = (d.pool1_len(), d.flat_len(), d.sample_len());
        let entries = &self.entries;
        let p = |i: usize| &w[entries[i].clone()];
        let s = &mut self.scratch;
        let nh = d.hidden.len();
        let (logits, flat) = (&s.logits[..n * d.classes], &s.flat[..n * f_len]);
        if let Some(g) = grad.as_deref_mut() {
            // weight gradients are written whole below; biases add up
            for e in [CONV1_B, CONV2_B].into_iter().chain((0..=nh).map(fc_b)) {
                g[entries[e].clone()].fill(0.0);
            }
        }
        // the fully connected layers from the output back: the gradient `dout` of layer k's
        // output gives its weight and bias gradients and the gradient of its input
        s.dhidden.resize_with(nh, Vec::new);
        let dflat = sized(&mut s.dflat, n * f_len);
        for k in (0..=nh).rev() {
            let (i_w, o_w) = d.fc_widths(k);
            let (below, above) = s.dhidden.split_at_mut(k);
            let dout: &[f32] = if k == nh { logits } else { &above[0][..n * o_w] };
            let input: &[f32] = if k == 0 { flat } else { &s.hidden[k - 1][..n * i_w] };
            if let Some(g) = grad.as_deref_mut() {
                let dz = MatRef::new(dout, n, o_w);
                matmul(&mut g[entries[fc_w(k)].clone()], MatRef::new(input, n, i_w).t(), dz, false);
                add_column_sums(dout, &mut g[entries[fc_b(k)].clone()]);
            }
            let weights = MatRef::new(p(fc_w(k)), i_w, o_w);
            let din = if k == 0 { &mut *dflat } else { sized(&mut below[k - 1], n * i_w) };
            matmul(din, MatRef::new(dout, n, o_w), weights.t(), false);
            if let (true, Some(df)) = (k == nh, dfeat) {
                din.iter_mut().zip(df).for_each(|(a, b)| *a += b);
            }
            if k > 0 {
                din.iter_mut().zip(input).for_each(|(g, &h)| *g = if h > 0.0 { *g } else { 0.0 });
            }
        }

        let (k1, k2, pos1, pos2) = (g1.patch_len(), g2.patch_len(), g1.positions(), g2.positions());
        let (w1, w2) = (&s.w1[..c1 * k1], &s.w2[..c2 * k2]);
        let (dw1, dw2) = (sized(&mut s.dw1, c1 * k1), sized(&mut s.dw2, c2 * k2));
        dw1.fill(0.0);
        dw2.fill(0.0);
        let per = SAMPLES_PER_GEMM;
        let col = sized_aligned(&mut s.col, per * pos2 * k2);
        let z = sized_aligned(&mut s.z, per * (pos1 * c1).max(pos2 * c2));
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
                transpose(&dflat[f.clone()], c2, f_len / c2, dpool2);
                let zj = &mut z[j * pos2 * c2..(j + 1) * pos2 * c2];
                let (zh, zw) = (g2.h_out(), g2.w_out());
                bias_relu_maxpool_backward(dpool2, &s.pool2[f.clone()], &s.arg2[f], c2, zh, zw, zj);
            }
            let dz2 = &z[..m * pos2 * c2];
            if let Some(g) = grad.as_deref_mut() {
                for (j, i) in samples.clone().enumerate() {
                    im2col(&s.pool1[i * p1_len..(i + 1) * p1_len], g2, &mut col[j * pos2 * k2..]);
                }
                add_column_sums(dz2, &mut g[entries[CONV2_B].clone()]);
                weight_grad(dz2, c2, MatRef::new(col, m * pos2, k2), dw2);
            }
            matmul(dcol, MatRef::new(dz2, m * pos2, c2), MatRef::new(w2, c2, k2), false);
            for j in 0..m {
                col2im(&dcol[j * pos2 * k2..], g2, &mut dpool1[j * p1_len..(j + 1) * p1_len]);
            }
            // first convolution
            for (j, i) in samples.clone().enumerate() {
                let (pm, am) = (&s.pool1[i * p1_len..(i + 1) * p1_len], &s.arg1[i * p1_len..(i + 1) * p1_len]);
                let zj = &mut z[j * pos1 * c1..(j + 1) * pos1 * c1];
                let (zh, zw) = (g1.h_out(), g1.w_out());
                bias_relu_maxpool_backward(&dpool1[j * p1_len..], pm, am, c1, zh, zw, zj);
            }
            let dz1 = &z[..m * pos1 * c1];
            if let Some(g) = grad.as_deref_mut() {
                add_column_sums(dz1, &mut g[entries[CONV1_B].clone()]);
                weight_grad(dz1, c1, MatRef::new(&s.col1[start * pos1 * k1..], m * pos1, k1), dw1);
            }
            if want_dx {
                matmul(dcol, MatRef::new(dz1, m * pos1, c1), MatRef::new(w1, c1, k1), false);
                for (j, i) in samples.enumerate() {
                    col2im(&dcol[j * pos1 * k1..], g1, &mut dx[i * x_len..(i + 1) * x_len]);
                }
            }
        }
        if let Some(g) = grad {
            permute_conv_weights(dw1, c1, d.c0, 25, true, &mut g[entries[CONV1_W].clone()]);
            permute_conv_weights(dw2, c2, c1, 25, true, &mut g[entries[CONV2_W].clone()]);
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

impl Model for ConvNetNative {
    /// A fresh copy with empty scratch buffers.
    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(ConvNetNative {
            layout: self.layout.clone(),
            dims: self.dims.clone(),
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
    fn forward(&mut self, params: &Params, batch: &Batch, _mode: Mode, out: &mut Outputs) -> Result<()> {
        self.forward_logits(params.as_slice(), batch)?;
        let (n, c) = (batch.len(), self.dims.classes);
        out.logits.clear();
        out.logits.extend_from_slice(&self.scratch.logits[..n * c]);
        out.classes = c;
        let (f, dim) = self.features(n);
        out.features.clear();
        out.features.extend_from_slice(f);
        out.feature_dim = dim;
        Ok(())
    }
    /// `conv1` and `conv2` (each convolution after ReLU and pooling, flattened channels-first),
    /// the hidden layers `fc1` ... (the last one as `features`) and the logits.
    fn activations(&mut self, params: &Params, batch: &Batch) -> Result<Vec<Activation>> {
        let mut o = Outputs::default();
        self.forward(params, batch, Mode::Eval, &mut o)?;
        let (n, d, s) = (batch.len(), &self.dims, &self.scratch);
        let (p1, f) = (d.pool1_len(), d.flat_len());
        // channels-first per sample, PyTorch's flattening order (as `flat` already is)
        let mut conv1 = vec![0.0f32; n * p1];
        for (src, dst) in s.pool1[..n * p1].chunks_exact(p1).zip(conv1.chunks_exact_mut(p1)) {
            transpose(src, p1 / d.c1(), d.c1(), dst);
        }
        let mut out = vec![
            Activation { name: "conv1".into(), dim: p1, values: conv1 },
            Activation { name: "conv2".into(), dim: f, values: s.flat[..n * f].to_vec() },
        ];
        let nh = d.hidden.len();
        for k in 0..nh.saturating_sub(1) {
            let (_, w) = d.fc_widths(k);
            out.push(Activation { name: format!("fc{}", k + 1), dim: w, values: s.hidden[k][..n * w].to_vec() });
        }
        if nh == 0 {
            // the flattened second convolution is the output layer's input
            out.pop();
        }
        out.extend(fedkit_core::output_activations(o));
        Ok(out)
    }
    fn vjp(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        mode: Mode,
        head: &mut dyn Head,
        grad: Option<&mut Params>,
        gx: Option<&mut Vec<f32>>,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        let (value, _, g) = fedkit_core::forward_head(self, params, batch, mode, head)?;
        self.scratch.logits[..g.logits.len()].copy_from_slice(&g.logits);
        let dfeat = (!g.features.is_empty()).then_some(g.features.as_slice());
        let gx = gx.map(|gx| {
            gx.clear();
            gx.resize(batch.x.len(), 0.0);
            gx.as_mut_slice()
        });
        self.backward(params.as_slice(), batch, dfeat, grad.map(|g| g.as_mut_slice()), gx);
        Ok(value)
    }
    fn loss_grad(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        grad: &mut Params,
        _rng: &mut RngStream,
    ) -> Result<f32> {
        let loss = self.forward_cross_entropy(params.as_slice(), batch)?;
        self.backward(params.as_slice(), batch, None, Some(grad.as_mut_slice()), None);
        Ok((loss / batch.len() as f64) as f32)
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        self.forward_logits(params.as_slice(), batch)?;
        let c = self.dims.classes;
        Ok(softmax_cross_entropy(&mut self.scratch.logits[..batch.len() * c], &batch.y, c))
    }
    fn input_grad(&mut self, params: &Params, batch: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
        let loss = self.forward_cross_entropy(params.as_slice(), batch)?;
        gx.clear();
        gx.resize(batch.x.len(), 0.0);
        self.backward(params.as_slice(), batch, None, None, Some(gx.as_mut_slice()));
        Ok((loss / batch.len() as f64) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(side: [usize; 2], pad: usize) -> ConvNetDims {
        ConvNetDims { c0: 1, h: side[0], w: side[1], convs: [(2, pad), (3, pad)], hidden: vec![4, 5], classes: 3 }
    }

    // The fused pooling needs even convolution outputs: cnn (pad 2) on sides divisible by 4, and
    // lenet (pad 0) on 28x28 (24, 12, 8, 4), 32x32 (28, 14, 10, 5) and 16x20, but not on 30 (26,
    // 13), 18 (14, 7, 3) or images too small to leave an output.
    #[test]
    fn pools_evenly_needs_even_convolution_outputs() {
        for side in [4, 8, 28, 32] {
            assert!(dims([side, side], 2).pools_evenly(), "cnn {side}");
        }
        for side in [[28, 28], [32, 32], [16, 20], [16, 16]] {
            assert!(dims(side, 0).pools_evenly(), "lenet {side:?}");
        }
        for side in [[30, 30], [18, 18], [16, 18], [12, 12], [4, 4], [2, 2], [0, 0]] {
            assert!(!dims(side, 0).pools_evenly(), "lenet {side:?}");
        }
        // a layout that does not fit the sizes is an error, not a panic later
        let mut l = Layout::new();
        l.push("conv1.weight", &[2, 1, 5, 5], fedkit_core::ParamKind::Weight);
        assert!(ConvNetNative::new(Arc::new(l), dims([16, 16], 0)).is_err());
    }
}
