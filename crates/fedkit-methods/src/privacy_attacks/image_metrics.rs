//! How close a reconstruction is to the image it reconstructs: MSE, PSNR and SSIM, and the
//! matching of a batch of reconstructions to the batch of originals (a gradient of a batch does
//! not say which reconstruction is which sample).
//!
//! - PSNR = 10 log10(peak^2 / MSE) with `peak` the data range (1 for pixels in [0, 1]); infinite
//!   for identical images.
//! - SSIM (Wang, Bovik, Sheikh, Simoncelli 2004): the mean over every position where an 11x11
//!   Gaussian window (sigma 1.5) fits of l * c * s, with C1 = (0.01 peak)^2 and C2 = (0.03 peak)^2,
//!   per channel and averaged over channels (the paper's reference implementation, `ssim_index.m`,
//!   with its "valid" filtering); images smaller than the window use a window as large as fits.

/// Mean squared error.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "mse of images of different sizes");
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64
}

/// Peak signal-to-noise ratio in dB for pixel range `peak`.
pub fn psnr(a: &[f32], b: &[f32], peak: f64) -> f64 {
    let e = mse(a, b);
    if e == 0.0 { f64::INFINITY } else { 10.0 * (peak * peak / e).log10() }
}

/// The normalised Gaussian window of `size` taps (sigma 1.5).
fn gaussian(size: usize) -> Vec<f64> {
    let c = (size as f64 - 1.0) / 2.0;
    let w: Vec<f64> = (0..size).map(|i| (-((i as f64 - c).powi(2)) / (2.0 * 1.5 * 1.5)).exp()).collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// Structural similarity of two images of shape `[channels, h, w]` (a flat `[d]` vector is one
/// row), data range `peak`.
pub fn ssim(a: &[f32], b: &[f32], shape: [usize; 3], peak: f64) -> f64 {
    let [ch, h, w] = shape;
    assert_eq!(a.len(), ch * h * w, "ssim: image of {} values for shape {shape:?}", a.len());
    assert_eq!(b.len(), a.len(), "ssim of images of different sizes");
    let size = 11.min(h).min(w).max(1);
    let (wy, wx) = (gaussian(size.min(h)), gaussian(size.min(w)));
    let (c1, c2) = ((0.01 * peak).powi(2), (0.03 * peak).powi(2));
    let (oh, ow) = (h + 1 - wy.len(), w + 1 - wx.len());
    let mut total = 0.0;
    for c in 0..ch {
        let at = |img: &[f32], y: usize, x: usize| img[(c * h + y) * w + x] as f64;
        for y0 in 0..oh {
            for x0 in 0..ow {
                let (mut ma, mut mb, mut aa, mut bb, mut ab) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for (dy, &gy) in wy.iter().enumerate() {
                    for (dx, &gx) in wx.iter().enumerate() {
                        let g = gy * gx;
                        let (p, q) = (at(a, y0 + dy, x0 + dx), at(b, y0 + dy, x0 + dx));
                        ma += g * p;
                        mb += g * q;
                        aa += g * p * p;
                        bb += g * q * q;
                        ab += g * p * q;
                    }
                }
                let (va, vb, cov) = (aa - ma * ma, bb - mb * mb, ab - ma * mb);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            }
        }
    }
    total / (ch * oh * ow) as f64
}

/// `[channels, h, w]` of a sample shape (`[d]` is one row, `[h, w]` one channel).
pub fn image_shape(shape: &[usize]) -> [usize; 3] {
    match *shape {
        [c, h, w] => [c, h, w],
        [h, w] => [1, h, w],
        _ => [1, 1, shape.iter().product()],
    }
}

/// For each original (rows of `truth`, `d` values each), the reconstruction (a row of `recon`)
/// it is matched to: greedily one to one, the pair of smallest MSE first; originals left over
/// (more originals than reconstructions) get their closest reconstruction.
pub fn match_by_mse(truth: &[f32], recon: &[f32], d: usize) -> Vec<usize> {
    let (n, m) = (truth.len() / d.max(1), recon.len() / d.max(1));
    let mut pairs: Vec<(f64, usize, usize)> = (0..n)
        .flat_map(|i| (0..m).map(move |j| (i, j)))
        .map(|(i, j)| (mse(&truth[i * d..(i + 1) * d], &recon[j * d..(j + 1) * d]), i, j))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut of = vec![usize::MAX; n];
    let mut used = vec![false; m];
    for &(_, i, j) in &pairs {
        if of[i] == usize::MAX && !used[j] {
            of[i] = j;
            used[j] = true;
        }
    }
    for &(_, i, j) in &pairs {
        if of[i] == usize::MAX {
            of[i] = j;
        }
    }
    of
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_and_mse_have_their_closed_forms() {
        let a = [0.0f32, 0.5, 1.0, 0.25];
        let b = [0.1f32, 0.5, 0.9, 0.25];
        // MSE = (0.01 + 0.01) / 4 = 0.005; PSNR = 10 log10(1 / 0.005) = 23.0103 dB.
        assert!((mse(&a, &b) - 0.005).abs() < 1e-8);
        assert!((psnr(&a, &b, 1.0) - 23.0103).abs() < 1e-3);
        assert_eq!(psnr(&a, &a, 1.0), f64::INFINITY);
    }

    #[test]
    fn ssim_is_one_for_identical_images_and_matches_the_constant_image_formula() {
        let shape = [1, 16, 16];
        let img: Vec<f32> = (0..256).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        assert!((ssim(&img, &img, shape, 1.0) - 1.0).abs() < 1e-12);
        // Two constant images a, b: every window has zero variance, so
        // SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly (the contrast-structure term is C2 / C2).
        let (a, b) = (0.2f64, 0.6f64);
        let c1 = 0.01f64.powi(2);
        let want = (2.0 * a * b + c1) / (a * a + b * b + c1);
        let got = ssim(&vec![a as f32; 256], &vec![b as f32; 256], shape, 1.0);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // An image against its negative: structure anti-correlated, SSIM below 0.
        let neg: Vec<f32> = img.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&img, &neg, shape, 1.0) < 0.0);
        // More noise, lower SSIM.
        let noisy = |s: f32| -> Vec<f32> {
            img.iter().enumerate().map(|(i, v)| v + s * (((i * 7919) % 13) as f32 / 6.0 - 1.0)).collect()
        };
        let (lo, hi) = (ssim(&img, &noisy(0.05), shape, 1.0), ssim(&img, &noisy(0.3), shape, 1.0));
        assert!(1.0 > lo && lo > hi, "{lo} {hi}");
    }

    #[test]
    fn matching_pairs_each_original_with_its_closest_reconstruction() {
        let truth = [0.0f32, 0.0, 1.0, 1.0, 0.5, 0.5];
        let recon = [0.9f32, 1.0, 0.4, 0.5, 0.1, 0.0];
        assert_eq!(match_by_mse(&truth, &recon, 2), [2, 0, 1]);
        // One reconstruction for two originals: both get it.
        assert_eq!(match_by_mse(&truth[..4], &recon[..2], 2), [0, 0]);
        // Two reconstructions for three originals: the one left over gets its closest.
        let truth = [0.0f32, 0.0, 0.1, 0.0, 1.0, 1.0];
        let recon = [0.0f32, 0.0, 0.8, 0.8];
        assert_eq!(match_by_mse(&truth, &recon, 2), [0, 0, 1]);
    }
}
