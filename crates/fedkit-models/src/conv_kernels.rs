//! CPU kernels of the native (backend-free) networks: a safe single-threaded wrapper of the `gemm`
//! crate, im2col / col2im for stride-1 square convolutions with zero padding, 2x2 max pooling with
//! ReLU and argmax, and softmax cross-entropy. Everything is sequential and in a fixed order, so
//! results are bit-identical whatever the thread count.
//!
//! Images are channels-last, `[h, w, c]` (one sample of an NHWC batch): a pixel's channels are
//! contiguous, so im2col copies runs of `c` (up to `k c`) values and pooling vectorises over
//! channels. The im2col matrix of a convolution with kernel k is `[h_out w_out, k k c]`: row
//! `(y, x)` is the input patch that output position meets, in `(ky, kx, ci)` order, so a
//! convolution is `col x W^T` for weights laid out `[c_out, ky, kx, ci]` ([`transpose`] converts
//! from and to PyTorch's `[c_out, ci, ky, kx]`). In that layout `gemm` reads the large operand
//! (col, and the output gradient) in place and packs only the small weight matrix.

/// A strided, read-only view of an `rows x cols` f32 matrix: element `(i, j)` is
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// The row-major `rows x cols` matrix at the start of `data` (panics if `data` is shorter).
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data: &data[..rows * cols], rows, cols, row_stride: cols, col_stride: 1 }
    }
    /// A view with explicit strides over `data` (panics if an element would lie outside it).
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        let end = if rows == 0 || cols == 0 { 0 } else { (rows - 1) * row_stride + (cols - 1) * col_stride + 1 };
        MatRef { data: &data[..end], rows, cols, row_stride, col_stride }
    }
    /// The transpose (a view; nothing moves).
    pub fn t(self) -> Self {
        MatRef { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }
}

/// `dst = a b` (`accumulate`: `dst += a b`) for row-major `dst` of `a.rows x b.cols`, one thread.
/// Panics if the shapes do not chain or `dst` is too short, like slice indexing.
pub fn matmul(dst: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(b.rows == k && dst.len() >= m * n, "matmul shapes {m}x{k} * {}x{n} into {}", b.rows, dst.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: MatRef's constructors slice `data` so that every (i, j) with i < rows, j < cols is
    // in bounds (the transpose swaps shape and strides together); dst holds m * n elements
    // (asserted), written row-major; no view aliases dst (&mut borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Geometry of a stride-1 `k x k` convolution with `pad` zero padding over `[h, w, c]` inputs.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub pad: usize,
}

impl ConvGeom {
    /// Output height.
    pub fn h_out(&self) -> usize {
        self.h + 2 * self.pad + 1 - self.k
    }
    /// Output width.
    pub fn w_out(&self) -> usize {
        self.w + 2 * self.pad + 1 - self.k
    }
    /// Output positions (rows of the im2col matrix).
    pub fn positions(&self) -> usize {
        self.h_out() * self.w_out()
    }
    /// Length of a patch (columns of the im2col matrix, the reduction length `k k c`).
    pub fn patch_len(&self) -> usize {
        self.k * self.k * self.c
    }
    /// For output position `(y, x)` and kernel row `ky`: the input row and the kernel columns
    /// `kx` whose input column `x + kx - pad` lies inside the image (`None`: none).
    #[inline]
    fn taps(&self, y: usize, x: usize, ky: usize) -> Option<(usize, usize, usize)> {
        let sy = (y + ky).checked_sub(self.pad).filter(|&s| s < self.h)?;
        let lo = self.pad.saturating_sub(x);
        let hi = self.k.min((self.w + self.pad).saturating_sub(x));
        (lo < hi).then_some((sy, lo, hi))
    }
}

/// `dst.copy_from_slice(src)`, without a `memcpy` call for short runs (a one-channel image's
/// runs are 5 values).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    if dst.len() >= 32 {
        dst.copy_from_slice(src);
    } else {
        dst.iter_mut().zip(src).for_each(|(a, &b)| *a = b);
    }
}

/// The im2col matrix `[g.positions(), g.patch_len()]` of one `[h, w, c]` image into `col`.
pub fn im2col(x: &[f32], g: ConvGeom, col: &mut [f32]) {
    let (kc, c) = (g.k * g.c, g.c);
    let mut rows = col[..g.positions() * g.patch_len()].chunks_exact_mut(g.patch_len());
    for y in 0..g.h_out() {
        for xo in 0..g.w_out() {
            let Some(row) = rows.next() else { return };
            for (ky, seg) in row.chunks_exact_mut(kc).enumerate() {
                match g.taps(y, xo, ky) {
                    Some((sy, lo, hi)) => {
                        let src = (sy * g.w + xo + lo - g.pad) * c;
                        seg[..lo * c].fill(0.0);
                        copy_run(&mut seg[lo * c..hi * c], &x[src..src + (hi - lo) * c]);
                        seg[hi * c..].fill(0.0);
                    }
                    None => seg.fill(0.0),
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx = col2im(dcol)` sums every patch entry into the input value it
/// was read from (`dx`, `[h, w, c]`, is overwritten).
pub fn col2im(dcol: &[f32], g: ConvGeom, dx: &mut [f32]) {
    let (kc, c) = (g.k * g.c, g.c);
    dx[..g.h * g.w * c].fill(0.0);
    let mut rows = dcol[..g.positions() * g.patch_len()].chunks_exact(g.patch_len());
    for y in 0..g.h_out() {
        for xo in 0..g.w_out() {
            let Some(row) = rows.next() else { return };
            for (ky, seg) in row.chunks_exact(kc).enumerate() {
                if let Some((sy, lo, hi)) = g.taps(y, xo, ky) {
                    let dst = (sy * g.w + xo + lo - g.pad) * c;
                    let d = &mut dx[dst..dst + (hi - lo) * c];
                    d.iter_mut().zip(&seg[lo * c..hi * c]).for_each(|(a, b)| *a += b);
                }
            }
        }
    }
}

/// `dst[j * rows + i] = src[i * cols + j]`: the transpose of the row-major `[rows, cols]` matrix.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for (i, row) in src[..rows * cols].chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            dst[j * rows + i] = v;
        }
    }
}

/// `p = relu(maxpool2x2(z) + bias)` over an `[h, w, c]` image `z` (h, w even) into
/// `[h/2, w/2, c]`, recording each window's argmax (0..4, row-major in the window, first maximum)
/// in `arg`. Max pooling commutes with adding a per-channel bias and with ReLU, so this equals
/// pooling `relu(z + bias)`.
pub fn bias_relu_maxpool(z: &[f32], bias: &[f32], h: usize, w: usize, p: &mut [f32], arg: &mut [u8]) {
    let c = bias.len();
    let mut out = p[..h * w * c / 4].chunks_exact_mut(c).zip(arg[..h * w * c / 4].chunks_exact_mut(c));
    for y in 0..h / 2 {
        for x in 0..w / 2 {
            let Some((p, arg)) = out.next() else { return };
            let at = |dy: usize, dx: usize| &z[((2 * y + dy) * w + 2 * x + dx) * c..][..c];
            let (z0, z1, z2, z3) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
            for ch in 0..c {
                let (mut m, mut a) = (z0[ch], 0u8);
                if z1[ch] > m {
                    (m, a) = (z1[ch], 1);
                }
                if z2[ch] > m {
                    (m, a) = (z2[ch], 2);
                }
                if z3[ch] > m {
                    (m, a) = (z3[ch], 3);
                }
                p[ch] = (m + bias[ch]).max(0.0);
                arg[ch] = a;
            }
        }
    }
}

/// The gradient of [`bias_relu_maxpool`]: `dz` (`[h, w, c]`, overwritten) gets `dp` at each
/// window's argmax where the pooled output `p` is positive, 0 elsewhere. The bias gradient is the
/// per-channel sum of `dz`.
pub fn bias_relu_maxpool_backward(dp: &[f32], p: &[f32], arg: &[u8], c: usize, h: usize, w: usize, dz: &mut [f32]) {
    dz[..h * w * c].fill(0.0);
    let n = h * w * c / 4;
    let pooled = dp[..n].chunks_exact(c).zip(p[..n].chunks_exact(c)).zip(arg[..n].chunks_exact(c));
    for (i, ((dp, p), arg)) in pooled.enumerate() {
        let (y, x) = (i / (w / 2), i % (w / 2));
        for (ch, ((&g, &p), &a)) in dp.iter().zip(p).zip(arg).enumerate() {
            let a = a as usize & 3;
            dz[((2 * y + (a >> 1)) * w + 2 * x + (a & 1)) * c + ch] = if p > 0.0 { g } else { 0.0 };
        }
    }
}

/// Add `bias` to every row of the row-major `[.., bias.len()]` matrix `z`, then apply ReLU if `relu`.
pub fn add_bias(z: &mut [f32], bias: &[f32], relu: bool) {
    for row in z.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v = if relu { (*v + b).max(0.0) } else { *v + b });
    }
}

/// `dst[j] += sum_i m[i][j]` over the rows of the row-major `[.., dst.len()]` matrix `m`.
pub fn add_column_sums(m: &[f32], dst: &mut [f32]) {
    for row in m.chunks_exact(dst.len()) {
        dst.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // matmul of a 3x4 and (the transpose of) a 5x4 matrix equals the triple loop, accumulate adds to
    // what dst held, and a strided view (every other column) reads the right elements.
    #[test]
    fn matmul_matches_the_definition() {
        let a: Vec<f32> = (0..12).map(|v| v as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..20).map(|v| (v % 7) as f32 - 3.0).collect();
        let mut dst = vec![1.0; 15];
        matmul(&mut dst, MatRef::new(&a, 3, 4), MatRef::new(&b, 5, 4).t(), true);
        for i in 0..3 {
            for j in 0..5 {
                let want: f32 = 1.0 + (0..4).map(|k| a[i * 4 + k] * b[j * 4 + k]).sum::<f32>();
                assert_eq!(dst[i * 5 + j], want, "({i}, {j})");
            }
        }
        let mut dst = vec![0.0; 6];
        matmul(&mut dst, MatRef::strided(&a, 3, 2, 4, 2), MatRef::new(&b, 2, 2), false);
        for i in 0..3 {
            for j in 0..2 {
                assert_eq!(dst[i * 2 + j], a[i * 4] * b[j] + a[i * 4 + 2] * b[2 + j], "strided ({i}, {j})");
            }
        }
    }

    // im2col then multiplying by the kernel is the direct padded convolution on a channels-last
    // image; col2im is its adjoint: <im2col(x), c> = <x, col2im(c)>; for 5x5 pad 2 and 3x3 pad 0.
    #[test]
    fn im2col_is_convolution_and_col2im_its_adjoint() {
        for g in [ConvGeom { c: 2, h: 6, w: 7, k: 5, pad: 2 }, ConvGeom { c: 3, h: 5, w: 4, k: 3, pad: 0 }] {
            let x: Vec<f32> = (0..g.c * g.h * g.w).map(|v| ((v * 37) % 11) as f32 - 5.0).collect();
            let kern: Vec<f32> = (0..g.patch_len()).map(|v| ((v * 13) % 7) as f32 - 3.0).collect();
            let mut col = vec![f32::NAN; g.positions() * g.patch_len()];
            im2col(&x, g, &mut col);
            let mut out = vec![0.0; g.positions()];
            matmul(
                &mut out,
                MatRef::new(&col, g.positions(), g.patch_len()),
                MatRef::new(&kern, g.patch_len(), 1),
                false,
            );
            for (y, xo) in (0..g.h_out()).flat_map(|y| (0..g.w_out()).map(move |xo| (y, xo))) {
                let mut want = 0.0;
                for (dy, dx, c) in
                    (0..g.k).flat_map(|dy| (0..g.k).flat_map(move |dx| (0..g.c).map(move |c| (dy, dx, c))))
                {
                    let (sy, sx) = ((y + dy).wrapping_sub(g.pad), (xo + dx).wrapping_sub(g.pad));
                    if sy < g.h && sx < g.w {
                        want += x[(sy * g.w + sx) * g.c + c] * kern[(dy * g.k + dx) * g.c + c];
                    }
                }
                assert_eq!(out[y * g.w_out() + xo], want, "{g:?} at ({y}, {xo})");
            }
            let c: Vec<f32> = (0..col.len()).map(|v| ((v * 7) % 5) as f32 - 2.0).collect();
            let mut back = vec![f32::NAN; x.len()];
            col2im(&c, g, &mut back);
            let lhs: f64 = col.iter().zip(&c).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (a * b) as f64).sum();
            assert_eq!(lhs, rhs, "{g:?}");
        }
    }

    // Pooling (two channels, one 2x4 image) takes each window's maximum plus the bias, clamped at
    // 0, and its backward pass routes the gradient to that maximum only where the output is
    // positive.
    #[test]
    fn maxpool_routes_gradients_to_the_argmax() {
        let plane0 = [1.0, 5.0, -3.0, -2.0, 2.0, 0.0, -1.0, -4.0];
        let plane1 = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let z: Vec<f32> = plane0.iter().zip(plane1).flat_map(|(&a, b)| [a, b]).collect();
        let (mut p, mut arg) = ([0.0; 4], [0u8; 4]);
        bias_relu_maxpool(&z, &[0.5, -1.0], 2, 4, &mut p, &mut arg);
        assert_eq!((p, arg), ([5.5, 4.0, 0.0, 6.0], [1, 3, 2, 3]));
        let mut dz = [f32::NAN; 16];
        bias_relu_maxpool_backward(&[2.0, 3.0, 4.0, 5.0], &p, &arg, 2, 2, 4, &mut dz);
        let mut want = [0.0; 16];
        (want[2], want[11], want[15]) = (2.0, 3.0, 5.0);
        assert_eq!(dz, want);
    }
}
