//! Dense f64 linear algebra for the representation analyses: row-major matrices, products by
//! `gemm`, and the symmetric eigendecomposition (Householder tridiagonalisation, then the
//! implicit QL iteration with Wilkinson shifts: EISPACK's `tred2` and `tql2`, as in JAMA).

use fedkit_core::{Error, Result};

/// A row-major `rows x cols` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    /// The zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat { rows, cols, data: vec![0.0; rows * cols] }
    }
    /// Entry (i, j).
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }
    /// `self^T other` (`cols x other.cols`); the row counts must agree.
    pub fn t_mul(&self, other: &Mat) -> Mat {
        assert_eq!(self.rows, other.rows, "t_mul: row counts differ");
        // self^T: column stride `cols`, row stride 1
        product(self.cols, other.cols, self.rows, (&self.data, self.cols, 1), (&other.data, 1, other.cols))
    }
    /// `self other^T` (`rows x other.rows`); the column counts must agree.
    pub fn mul_t(&self, other: &Mat) -> Mat {
        assert_eq!(self.cols, other.cols, "mul_t: column counts differ");
        product(self.rows, other.rows, self.cols, (&self.data, 1, self.cols), (&other.data, other.cols, 1))
    }
    /// The leading `k` columns.
    pub fn first_cols(&self, k: usize) -> Mat {
        let k = k.min(self.cols);
        let mut out = Mat::zeros(self.rows, k);
        for i in 0..self.rows {
            out.data[i * k..(i + 1) * k].copy_from_slice(&self.data[i * self.cols..i * self.cols + k]);
        }
        out
    }
    /// Every column j multiplied by `s[j]`.
    pub fn scale_cols(mut self, s: &[f64]) -> Mat {
        for row in self.data.chunks_exact_mut(self.cols.max(1)) {
            row.iter_mut().zip(s).for_each(|(v, f)| *v *= f);
        }
        self
    }
    /// The Frobenius inner product `<self, other>`.
    pub fn dot(&self, other: &Mat) -> f64 {
        self.data.iter().zip(&other.data).map(|(a, b)| a * b).sum()
    }
}

/// The `m x n` row-major product of an `m x k` and a `k x n` operand, each given as its data
/// with (column stride, row stride).
fn product(m: usize, n: usize, k: usize, lhs: (&[f64], usize, usize), rhs: (&[f64], usize, usize)) -> Mat {
    let mut out = Mat::zeros(m, n);
    let reach = |(d, cs, rs): (&[f64], usize, usize), rows: usize, cols: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < d.len()
    };
    assert!(reach(lhs, m, k) && reach(rhs, k, n), "product: operand strides exceed their data");
    // SAFETY: the operands are read within their data (checked above), `out` is written as
    // m x n row-major, and no buffer aliases another.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.data.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.0.as_ptr(),
            lhs.1 as isize,
            lhs.2 as isize,
            rhs.0.as_ptr(),
            rhs.1 as isize,
            rhs.2 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    out
}

/// The eigendecomposition of a symmetric matrix: eigenvalues in descending order and the
/// matching unit eigenvectors as the columns of `vectors`.
#[derive(Clone, Debug)]
pub struct SymEigen {
    pub values: Vec<f64>,
    pub vectors: Mat,
}

/// The eigendecomposition of the symmetric `a` (only symmetric input is meaningful; the lower
/// triangle is read). Errors on non-finite entries or when the QL iteration does not converge.
pub fn sym_eigen(a: &Mat) -> Result<SymEigen> {
    let n = a.rows;
    if a.cols != n {
        return Err(Error::Shape(format!("sym_eigen: {} x {} is not square", a.rows, a.cols)));
    }
    if a.data.iter().any(|v| !v.is_finite()) {
        return Err(Error::Method("sym_eigen: the matrix has non-finite entries".into()));
    }
    if n == 0 {
        return Ok(SymEigen { values: Vec::new(), vectors: Mat::zeros(0, 0) });
    }
    let mut v = a.clone();
    let (mut d, mut e) = (vec![0.0; n], vec![0.0; n]);
    tred2(n, &mut v.data, &mut d, &mut e);
    tql2(n, &mut v.data, &mut d, &mut e)?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[j].total_cmp(&d[i]));
    let mut vectors = Mat::zeros(n, n);
    for (new, &old) in order.iter().enumerate() {
        for r in 0..n {
            vectors.data[r * n + new] = v.data[r * n + old];
        }
    }
    Ok(SymEigen { values: order.iter().map(|&i| d[i]).collect(), vectors })
}

/// Householder reduction of the symmetric `v` (n x n, row-major) to tridiagonal form: `d` the
/// diagonal, `e` the subdiagonal (in e[1..]), `v` the accumulated orthogonal transformation.
fn tred2(n: usize, v: &mut [f64], d: &mut [f64], e: &mut [f64]) {
    let at = |i: usize, j: usize| i * n + j;
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
                v[at(j, i)] = 0.0;
            }
        } else {
            for x in &mut d[..i] {
                *x /= scale;
                h += *x * *x;
            }
            let mut f = d[i - 1];
            let mut g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                f = d[j];
                v[at(j, i)] = f;
                g = e[j] + v[at(j, j)] * f;
                for k in j + 1..i {
                    g += v[at(k, j)] * d[k];
                    e[k] += v[at(k, j)] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                for k in j..i {
                    v[at(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    for i in 0..n - 1 {
        v[at(n - 1, i)] = v[at(i, i)];
        v[at(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[at(k, i + 1)] / h;
            }
            for j in 0..=i {
                let g: f64 = (0..=i).map(|k| v[at(k, i + 1)] * v[at(k, j)]).sum();
                for k in 0..=i {
                    v[at(k, j)] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[at(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
        v[at(n - 1, j)] = 0.0;
    }
    v[at(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL iteration on the tridiagonal (`d`, `e`) from [`tred2`], accumulating into `v`.
fn tql2(n: usize, v: &mut [f64], d: &mut [f64], e: &mut [f64]) -> Result<()> {
    let at = |i: usize, j: usize| i * n + j;
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let (mut f, mut tst1) = (0.0f64, 0.0f64);
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iterations = 0;
            loop {
                iterations += 1;
                if iterations > 60 {
                    return Err(Error::Method(format!("sym_eigen: QL did not converge for eigenvalue {l} of {n}")));
                }
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for x in &mut d[l + 2..n] {
                    *x -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0f64, 1.0f64, 1.0f64);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for k in 0..n {
                        h = v[at(k, i + 1)];
                        v[at(k, i + 1)] = s * v[at(k, i)] + c * h;
                        v[at(k, i)] = c * v[at(k, i)] - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    Ok(())
}

/// Spearman's rank correlation of `x` and `y` (ties get their mean rank); NaN for fewer than
/// two points or a constant input.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        for &o in &order[i..=j] {
            r[o] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::RngStream;

    fn random(rows: usize, cols: usize, rng: &mut RngStream) -> Mat {
        Mat { rows, cols, data: (0..rows * cols).map(|_| rng.normal()).collect() }
    }

    #[test]
    fn products_match_the_definition() {
        let mut rng = RngStream::new(1);
        let (a, b) = (random(5, 3, &mut rng), random(5, 4, &mut rng));
        let p = a.t_mul(&b);
        let c = random(2, 3, &mut rng);
        let q = a.first_cols(3).mul_t(&c);
        assert_eq!((p.rows, p.cols, q.rows, q.cols), (3, 4, 5, 2));
        for i in 0..5 {
            for j in 0..2 {
                let want: f64 = (0..3).map(|k| a.at(i, k) * c.at(j, k)).sum();
                assert!((q.at(i, j) - want).abs() < 1e-12);
            }
        }
        for i in 0..3 {
            for j in 0..4 {
                let want: f64 = (0..5).map(|k| a.at(k, i) * b.at(k, j)).sum();
                assert!((p.at(i, j) - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn eigendecomposition_reconstructs_symmetric_matrices() {
        let mut rng = RngStream::new(2);
        for n in [1, 2, 3, 7, 40] {
            let x = random(n + 3, n, &mut rng);
            let a = x.t_mul(&x);
            let SymEigen { values, vectors } = sym_eigen(&a).unwrap();
            assert!(values.windows(2).all(|w| w[0] >= w[1]), "descending");
            // V diag(values) V^T == a and V^T V == I
            let back = vectors.clone().scale_cols(&values).mul_t(&vectors);
            let vtv = vectors.t_mul(&vectors);
            for i in 0..n {
                for j in 0..n {
                    assert!((back.at(i, j) - a.at(i, j)).abs() < 1e-9 * (1.0 + a.at(i, i).abs()), "n {n}");
                    assert!((vtv.at(i, j) - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
                }
            }
        }
        // a known spectrum, with a repeated eigenvalue and a zero one
        let a = Mat { rows: 3, cols: 3, data: vec![2.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0] };
        let values = sym_eigen(&a).unwrap().values;
        for (v, want) in values.iter().zip([2.0, 2.0, 0.0]) {
            assert!((v - want).abs() < 1e-12, "{values:?}");
        }
        assert!(sym_eigen(&Mat { rows: 1, cols: 1, data: vec![f64::NAN] }).is_err());
        assert!(sym_eigen(&Mat::zeros(2, 3)).is_err());
    }

    #[test]
    fn spearman_ranks_with_ties() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 25.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(ranks(&[5.0, 1.0, 5.0, 2.0]), vec![2.5, 0.0, 2.5, 1.0]);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }
}
