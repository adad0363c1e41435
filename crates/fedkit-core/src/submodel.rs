//! Leading-block sub-models (HeteroFL's width slicing): a narrower model of the same
//! architecture whose every parameter tensor is the leading block of the full model's tensor
//! of the same name (the first ⌈rate·c⌉ channels of each scaled dimension, whole unscaled
//! dimensions). A [`SubModel`] maps the sub-model's flat parameters into the full model's:
//! extraction (what the server sends a client), scattering (a client's update in the full
//! layout, zero elsewhere), coverage (which coordinates a client trains) and the wire form
//! (one [`crate::wire::Block::Slice`] per tensor, so `bytes_up` is the sub-model's size).

use std::ops::Range;
use std::sync::Arc;

use crate::wire::Block;
use crate::{Error, Layout, Params, Result};

/// Where a sub-model's parameters sit in the full model's.
#[derive(Clone, Debug)]
pub struct SubModel {
    full: Arc<Layout>,
    sub: Arc<Layout>,
    /// Contiguous runs `(full offset, sub offset, length)`, in order of both.
    runs: Vec<(usize, usize, usize)>,
}

impl SubModel {
    /// The map from `sub` into `full`: every entry of `sub` must be an entry of `full` with
    /// the same name, kind and rank, and no larger in any dimension; `full` may have no other
    /// entries (a sub-model has every tensor, only narrower).
    pub fn new(full: Arc<Layout>, sub: Arc<Layout>) -> Result<SubModel> {
        if full.entries().len() != sub.entries().len() {
            return Err(Error::Shape(format!(
                "a sub-model has {} parameter tensors, the full model {}",
                sub.entries().len(),
                full.entries().len()
            )));
        }
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        for (f, s) in full.entries().iter().zip(sub.entries()) {
            let fits = f.name == s.name
                && f.kind == s.kind
                && f.shape.len() == s.shape.len()
                && f.shape.iter().zip(&s.shape).all(|(a, b)| b <= a);
            if !fits {
                return Err(Error::Shape(format!(
                    "sub-model tensor {} {:?} is not a leading block of the full model's {} {:?}",
                    s.name, s.shape, f.name, f.shape
                )));
            }
            let (f0, s0) = (f.range().start, s.range().start);
            for_each_row(&f.shape, &s.shape, &mut |full_off, sub_off, len| {
                let (a, b) = (f0 + full_off, s0 + sub_off);
                match runs.last_mut() {
                    Some(r) if r.0 + r.2 == a && r.1 + r.2 == b => r.2 += len,
                    _ => runs.push((a, b, len)),
                }
            });
        }
        Ok(SubModel { full, sub, runs })
    }
    /// The sub-model's layout.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.sub
    }
    /// Coordinates of the sub-model.
    pub fn len(&self) -> usize {
        self.sub.total()
    }
    /// True for a sub-model without parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True when the sub-model is the whole model.
    pub fn is_whole(&self) -> bool {
        self.sub.total() == self.full.total()
    }
    /// The full model's coordinate ranges the sub-model covers, in order.
    pub fn covered(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.runs.iter().map(|&(a, _, n)| a..a + n)
    }
    /// The sub-model's parameters taken from the full model's `full`.
    pub fn extract(&self, full: &Params) -> Result<Params> {
        self.check(full, &self.full, "full")?;
        let mut out = Params::zeros(self.sub.clone());
        let (src, dst) = (full.as_slice(), out.as_mut_slice());
        for &(a, b, n) in &self.runs {
            dst[b..b + n].copy_from_slice(&src[a..a + n]);
        }
        Ok(out)
    }
    /// The sub-model's `sub` in the full layout, zero at the coordinates it does not cover.
    pub fn scatter(&self, sub: &Params) -> Result<Params> {
        self.check(sub, &self.sub, "sub-model")?;
        let mut out = Params::zeros(self.full.clone());
        let (src, dst) = (sub.as_slice(), out.as_mut_slice());
        for &(a, b, n) in &self.runs {
            dst[a..a + n].copy_from_slice(&src[b..b + n]);
        }
        Ok(out)
    }
    /// The wire blocks of `sub` as a vector of the full model: per tensor, its values dense
    /// when the tensor is whole, else a [`Block::Slice`] (the leading block and its shape).
    pub fn wire_blocks(&self, sub: &Params) -> Result<Vec<Block>> {
        self.check(sub, &self.sub, "sub-model")?;
        let to_u32 = |v: &[usize]| v.iter().map(|&d| d as u32).collect::<Vec<u32>>();
        Ok(self
            .full
            .entries()
            .iter()
            .zip(self.sub.entries())
            .map(|(f, s)| {
                let values = sub.as_slice()[s.range()].to_vec();
                if f.shape == s.shape {
                    Block::Dense(values)
                } else {
                    Block::Slice { shape: to_u32(&f.shape), keep: to_u32(&s.shape), values }
                }
            })
            .collect())
    }
    fn check(&self, p: &Params, want: &Arc<Layout>, what: &str) -> Result<()> {
        if p.len() != want.total() {
            return Err(Error::Shape(format!("{} values given for the {what} layout of {}", p.len(), want.total())));
        }
        Ok(())
    }
}

/// Call `f(full offset, sub offset, length)` for each innermost row of the leading block
/// `keep` of a row-major tensor of `shape`, in order. `keep` must have `shape`'s rank and be no
/// larger in any dimension (the callers check it; the offsets are meaningless otherwise).
pub fn for_each_row(shape: &[usize], keep: &[usize], f: &mut dyn FnMut(usize, usize, usize)) {
    debug_assert!(keep.len() == shape.len() && keep.iter().zip(shape).all(|(k, d)| k <= d));
    if keep.contains(&0) {
        return;
    }
    let Some((&last, outer)) = keep.split_last() else {
        f(0, 0, 1); // a scalar
        return;
    };
    let rows: usize = outer.iter().product();
    let mut idx = vec![0usize; outer.len()];
    for r in 0..rows {
        let mut off = 0;
        for (d, &i) in idx.iter().enumerate() {
            off = off * shape[d] + i;
        }
        f(off * shape[outer.len()], r * last, last);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < outer[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamKind;

    fn layout(w: &[usize], b: usize) -> Arc<Layout> {
        let mut l = Layout::new();
        l.push("w", w, ParamKind::Weight);
        l.push("b", &[b], ParamKind::Bias);
        Arc::new(l)
    }

    #[test]
    fn extract_takes_the_leading_block_and_scatter_puts_it_back() {
        let (full, sub) = (layout(&[3, 4], 4), layout(&[2, 2], 2));
        let m = SubModel::new(full.clone(), sub).unwrap();
        let p = Params::from_vec(full, (0..16).map(|i| i as f32).collect()).unwrap();
        let s = m.extract(&p).unwrap();
        // rows 0 and 1, columns 0 and 1 of w; then b[0..2]
        assert_eq!(s.as_slice(), &[0.0, 1.0, 4.0, 5.0, 12.0, 13.0]);
        let back = m.scatter(&s).unwrap();
        let want = [0., 1., 0., 0., 4., 5., 0., 0., 0., 0., 0., 0., 12., 13., 0., 0.];
        assert_eq!(back.as_slice(), &want);
        let covered: Vec<_> = m.covered().collect();
        assert_eq!(covered, vec![0..2, 4..6, 12..14]);
        assert!(!m.is_whole());
    }

    #[test]
    fn the_whole_model_is_one_run() {
        let l = layout(&[3, 4], 4);
        let m = SubModel::new(l.clone(), l).unwrap();
        assert!(m.is_whole());
        assert_eq!(m.covered().collect::<Vec<_>>(), vec![0..16]);
    }

    #[test]
    fn a_wider_or_renamed_tensor_is_refused() {
        assert!(SubModel::new(layout(&[3, 4], 4), layout(&[3, 5], 4)).is_err());
        let mut l = Layout::new();
        l.push("v", &[2, 2], ParamKind::Weight);
        l.push("b", &[2], ParamKind::Bias);
        assert!(SubModel::new(layout(&[3, 4], 4), Arc::new(l)).is_err());
    }

    #[test]
    fn rows_of_a_rank_three_block() {
        let mut got = Vec::new();
        for_each_row(&[2, 3, 4], &[2, 2, 3], &mut |a, b, n| got.push((a, b, n)));
        assert_eq!(got, vec![(0, 0, 3), (4, 3, 3), (12, 6, 3), (16, 9, 3)]);
    }
}
