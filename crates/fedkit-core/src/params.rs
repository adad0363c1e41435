//! Flat f32 parameters with a shared named layout: a model's whole state (weights, biases, norm
//! parameters and running-statistic buffers), like a PyTorch state_dict in one buffer. All FL
//! arithmetic (aggregation, clipping, noise, compression) runs on these, backend-free.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a layout entry is, so methods can treat entries by role (FedBN keeps `NormScale`,
/// `NormShift` and `Buffer` local; weight decay skips biases, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Weight,
    Bias,
    NormScale,
    NormShift,
    /// Running statistics and other state that is not trained by gradients.
    Buffer,
    Embedding,
}

/// One named tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    pub offset: usize,
}

impl Entry {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True for a zero-sized entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The index range of this entry in the flat buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The named layout of a flat parameter buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    entries: Vec<Entry>,
    total: usize,
}

impl Layout {
    /// An empty layout; add entries with [`Layout::push`].
    pub fn new() -> Self {
        Self::default()
    }
    /// Append an entry; returns its range.
    pub fn push(&mut self, name: &str, shape: &[usize], kind: ParamKind) -> std::ops::Range<usize> {
        let e = Entry { name: name.to_string(), shape: shape.to_vec(), kind, offset: self.total };
        self.total += e.len();
        let r = e.range();
        self.entries.push(e);
        r
    }
    /// Total number of values.
    pub fn total(&self) -> usize {
        self.total
    }
    /// The entries in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
    /// The value ranges of the output layer's weight `[in, classes]` and bias `[classes]`, and
    /// the class count: the last bias, and the last weight before it whose shape ends in its
    /// length.
    pub fn output_layer(&self) -> crate::Result<(std::ops::Range<usize>, std::ops::Range<usize>, usize)> {
        let entries = self.entries();
        let bias = entries
            .iter()
            .rposition(|e| e.kind == ParamKind::Bias)
            .ok_or_else(|| crate::Error::Method("the model has no output-layer bias".into()))?;
        let p = entries[bias].len();
        let weight = entries[..bias]
            .iter()
            .rposition(|e| e.kind == ParamKind::Weight && e.shape.last() == Some(&p))
            .ok_or_else(|| crate::Error::Method(format!("no output-layer weight [in, {p}] before the last bias")))?;
        Ok((entries[weight].range(), entries[bias].range(), p))
    }
    /// Number of values trained by gradients (everything but buffers).
    pub fn trainable(&self) -> usize {
        self.entries.iter().filter(|e| e.kind != ParamKind::Buffer).map(Entry::len).sum()
    }
    /// The index ranges of the entries trained by gradients (everything but buffers).
    pub fn trainable_ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.entries.iter().filter(|e| e.kind != ParamKind::Buffer).map(Entry::range)
    }
}

/// Flat parameters (or a delta, or a gradient) with their layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    layout: Arc<Layout>,
    data: Vec<f32>,
}

impl Params {
    /// Zeros in `layout`.
    pub fn zeros(layout: Arc<Layout>) -> Self {
        let data = vec![0.0; layout.total()];
        Params { layout, data }
    }
    /// Wrap `data`, which must have `layout.total()` values.
    pub fn from_vec(layout: Arc<Layout>, data: Vec<f32>) -> Result<Self> {
        if data.len() != layout.total() {
            return Err(Error::Shape(format!("{} values for a layout of {}", data.len(), layout.total())));
        }
        Ok(Params { layout, data })
    }
    /// The layout.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }
    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
    /// The values, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Take the values out.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
    /// Zeros with the same layout.
    pub fn zeros_like(&self) -> Self {
        Params::zeros(self.layout.clone())
    }
    fn check(&self, other: &Params) {
        // A programming error (never user input): fail loudly rather than truncate silently.
        assert_eq!(self.data.len(), other.data.len(), "arithmetic on params of different layouts");
    }
    /// self += a * x.
    pub fn axpy(&mut self, a: f32, x: &Params) {
        self.check(x);
        self.data.iter_mut().zip(&x.data).for_each(|(s, v)| *s += a * v);
    }
    /// self *= a.
    pub fn scale(&mut self, a: f32) {
        self.data.iter_mut().for_each(|s| *s *= a);
    }
    /// self = self - other, as a new value.
    pub fn sub(&self, other: &Params) -> Params {
        self.check(other);
        let data = self.data.iter().zip(&other.data).map(|(a, b)| a - b).collect();
        Params { layout: self.layout.clone(), data }
    }
    /// Dot product (accumulated in f64).
    pub fn dot(&self, other: &Params) -> f64 {
        self.check(other);
        self.data.iter().zip(&other.data).map(|(a, b)| *a as f64 * *b as f64).sum()
    }
    /// Euclidean norm (accumulated in f64).
    pub fn l2(&self) -> f64 {
        self.data.iter().map(|a| *a as f64 * *a as f64).sum::<f64>().sqrt()
    }
    /// True when every value is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
    /// Each named tensor's values.
    pub fn tensors(&self) -> impl Iterator<Item = (&Entry, &[f32])> {
        self.layout.entries().iter().map(|e| (e, &self.data[e.range()]))
    }
    /// Bytes on the wire for the dense form (4 per value).
    pub fn wire_bytes(&self) -> usize {
        4 * self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Arc<Layout> {
        let mut l = Layout::new();
        l.push("w", &[2, 3], ParamKind::Weight);
        l.push("b", &[3], ParamKind::Bias);
        Arc::new(l)
    }

    #[test]
    fn arithmetic() {
        let l = layout();
        let mut a = Params::from_vec(l.clone(), (0..9).map(|i| i as f32).collect()).unwrap();
        let b = Params::from_vec(l.clone(), vec![1.0; 9]).unwrap();
        a.axpy(2.0, &b);
        assert_eq!(a.as_slice()[0], 2.0);
        assert_eq!(a.sub(&b).as_slice()[8], 9.0);
        assert_eq!(b.dot(&b), 9.0);
        assert_eq!(b.l2(), 3.0);
        let names: Vec<_> = a.tensors().map(|(e, v)| (e.name.clone(), v.len())).collect();
        assert_eq!(names, vec![("w".into(), 6), ("b".into(), 3)]);
        assert!(Params::from_vec(l, vec![0.0; 8]).is_err());
    }
}
