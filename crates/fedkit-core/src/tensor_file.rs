//! Models and updates as [safetensors](https://huggingface.co/docs/safetensors) files, in the
//! tensor names and shapes of the equivalent PyTorch module (docs/models.md lists the module of
//! every model), so `safetensors.torch.load_file` + `load_state_dict` loads a fedkit model and
//! a PyTorch-trained (or Flower-trained) model starts a fedkit run (`[model] init = "FILE"`).
//!
//! fedkit's layout already uses PyTorch's entry names (`fc1.weight`, `conv1.bias`,
//! `bn1.running_mean`); two conventions differ and are converted here, in one place:
//! - a linear layer's weight is `[in, out]` in fedkit and `[out, in]` in PyTorch (every 2-D
//!   entry of kind `Weight` is transposed); convolutions are `[out, in, k, k]` in both;
//! - PyTorch's batch norm has an int64 `num_batches_tracked` buffer, written as 0 and ignored on
//!   reading (fedkit's running statistics use a fixed momentum).
//!
//! Every tensor is f32, little-endian. The file's `__metadata__` says what it holds (`format =
//! "fedkit"`, the fedkit version, and whatever the writer adds: the round, the model's config).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::params::Entry;
use crate::{Error, Layout, ParamKind, Params, Result};

/// Whether `e` is stored transposed (a linear layer's weight).
fn transposed(e: &Entry) -> bool {
    e.kind == ParamKind::Weight && e.shape.len() == 2
}

/// `e`'s shape in the file.
pub fn torch_shape(e: &Entry) -> Vec<usize> {
    if transposed(e) { vec![e.shape[1], e.shape[0]] } else { e.shape.clone() }
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The batch-norm counters PyTorch expects beside `<name>.running_mean`.
fn batch_counters(layout: &Layout) -> Vec<String> {
    layout
        .entries()
        .iter()
        .filter_map(|e| e.name.strip_suffix(".running_mean"))
        .map(|n| format!("{n}.num_batches_tracked"))
        .collect()
}

/// The safetensors bytes of `params`, with `meta` added to the file's metadata.
pub fn to_bytes(params: &Params, meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (e, v) in params.tensors() {
        let v = if transposed(e) { transpose(v, e.shape[0], e.shape[1]) } else { v.to_vec() };
        data.push((e.name.clone(), Dtype::F32, torch_shape(e), f32_bytes(&v)));
    }
    for n in batch_counters(params.layout()) {
        data.push((n, Dtype::I64, Vec::new(), 0i64.to_le_bytes().to_vec()));
    }
    let views = data
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b).map_err(st_err)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut info: HashMap<String, String> = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    info.insert("format".into(), "fedkit".into());
    info.insert("fedkit_version".into(), env!("CARGO_PKG_VERSION").into());
    let bytes = safetensors::tensor::serialize(views, Some(info)).map_err(st_err)?;
    sorted_header(bytes)
}

/// `v` with every object's keys inserted in sorted order (sorted whatever serde_json's map type).
fn sort_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        other => other,
    }
}

/// The same file with its JSON header's keys in sorted order: safetensors writes its metadata
/// map in hash order, which differs from process to process; sorted, the same model gives the
/// same bytes. Same keys and values, so the same length: the padding stays valid.
fn sorted_header(mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = || Error::Data("safetensors: unexpected header".into());
    let n = u64::from_le_bytes(bytes.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let header = bytes.get(8..8 + n).ok_or_else(bad)?;
    let text = std::str::from_utf8(header).map_err(|_| bad())?;
    let value: serde_json::Value = serde_json::from_str(text.trim_end()).map_err(|_| bad())?;
    let sorted = serde_json::to_string(&sort_keys(value)).map_err(|_| bad())?;
    if sorted.len() > n {
        return Err(bad());
    }
    let mut padded = sorted.into_bytes();
    padded.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&padded);
    Ok(bytes)
}

fn st_err(e: safetensors::SafeTensorError) -> Error {
    Error::Data(format!("safetensors: {e}"))
}

/// Write `params` to `path` (a temporary file, then a rename: never half a file).
pub fn write(path: &Path, params: &Params, meta: &BTreeMap<String, String>) -> Result<()> {
    let bytes = to_bytes(params, meta)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The metadata of the safetensors file `path`.
pub fn read_meta(path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, m) = SafeTensors::read_metadata(&bytes).map_err(|e| in_file(path, st_err(e)))?;
    Ok(m.metadata().clone().unwrap_or_default().into_iter().collect())
}

fn in_file(path: &Path, e: Error) -> Error {
    Error::Data(format!("{}: {}", path.display(), e.to_string().trim_start_matches("data: ")))
}

/// Read the model with `layout` from the safetensors bytes `bytes`: every entry must be there,
/// as f32 with its PyTorch shape; tensors the layout does not have are refused (batch-norm
/// counters excepted), each by name.
pub fn from_bytes(bytes: &[u8], layout: &Arc<Layout>) -> Result<Params> {
    let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
    let counters = batch_counters(layout);
    let extra: Vec<String> = st
        .names()
        .into_iter()
        .map(|n| n.to_string())
        .filter(|n| layout.get(n).is_none() && !counters.contains(n))
        .collect();
    let missing: Vec<&str> =
        layout.entries().iter().map(|e| e.name.as_str()).filter(|n| st.tensor(n).is_err()).collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("the model's entries {missing:?} are missing"));
        }
        if !extra.is_empty() {
            let mut extra = extra;
            extra.sort();
            why.push(format!("{extra:?} are not entries of this model"));
        }
        let expected: Vec<String> =
            layout.entries().iter().map(|e| format!("{}{:?}", e.name, torch_shape(e))).collect();
        return Err(Error::Data(format!("{}; this model has {}", why.join(" and "), expected.join(", "))));
    }
    let mut out = Vec::with_capacity(layout.total());
    for e in layout.entries() {
        let t = st.tensor(&e.name).map_err(st_err)?;
        if t.dtype() != Dtype::F32 || t.shape() != torch_shape(e).as_slice() {
            return Err(Error::Data(format!(
                "tensor {} is {:?} {:?}; this model needs F32 {:?}",
                e.name,
                t.dtype(),
                t.shape(),
                torch_shape(e)
            )));
        }
        let v: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.extend(if transposed(e) { transpose(&v, e.shape[1], e.shape[0]) } else { v });
    }
    Params::from_vec(layout.clone(), out)
}

/// Read the model with `layout` from the file `path`; errors name the file.
pub fn read(path: &Path, layout: &Arc<Layout>) -> Result<Params> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, layout).map_err(|e| in_file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Params {
        let mut l = Layout::new();
        l.push("fc1.weight", &[3, 2], ParamKind::Weight);
        l.push("fc1.bias", &[2], ParamKind::Bias);
        l.push("bn1.weight", &[2], ParamKind::NormScale);
        l.push("bn1.running_mean", &[2], ParamKind::Buffer);
        l.push("conv1.weight", &[2, 1, 1, 1], ParamKind::Weight);
        let n = l.total();
        Params::from_vec(Arc::new(l), (0..n).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap()
    }

    #[test]
    fn round_trips_in_pytorch_conventions() {
        let p = model();
        let b = to_bytes(&p, &BTreeMap::from([("round".to_string(), "3".to_string())])).unwrap();
        let st = SafeTensors::deserialize(&b).unwrap();
        // fc1.weight [in 3, out 2] is stored [out 2, in 3]: row o holds input weights w[., o].
        let w = st.tensor("fc1.weight").unwrap();
        assert_eq!(w.shape(), &[2, 3]);
        let row0: Vec<f32> = w.data()[..12].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(row0, vec![p.as_slice()[0], p.as_slice()[2], p.as_slice()[4]]);
        assert_eq!(st.tensor("bn1.num_batches_tracked").unwrap().dtype(), Dtype::I64);
        assert_eq!(st.tensor("conv1.weight").unwrap().shape(), &[2, 1, 1, 1]);
        let back = from_bytes(&b, p.layout()).unwrap();
        assert_eq!(back.as_slice(), p.as_slice());
    }

    #[test]
    fn the_same_model_gives_the_same_bytes() {
        let p = model();
        let meta: BTreeMap<String, String> = (0..12).map(|i| (format!("key{i}"), i.to_string())).collect();
        let a = to_bytes(&p, &meta).unwrap();
        // Hash order differs between maps built separately; the header must not.
        for _ in 0..5 {
            assert_eq!(to_bytes(&p, &meta).unwrap(), a);
        }
        let st = SafeTensors::deserialize(&a).unwrap();
        assert_eq!(st.names().len(), 6);
    }

    #[test]
    fn refuses_other_models_by_name() {
        let p = model();
        let mut l = Layout::new();
        l.push("fc1.weight", &[3, 2], ParamKind::Weight);
        l.push("fc9.bias", &[2], ParamKind::Bias);
        let other = Params::zeros(Arc::new(l));
        let b = to_bytes(&other, &BTreeMap::new()).unwrap();
        let e = from_bytes(&b, p.layout()).unwrap_err().to_string();
        assert!(e.contains("\"fc1.bias\"") && e.contains("\"fc9.bias\"") && e.contains("fc1.weight[2, 3]"), "{e}");
        let mut l = Layout::new();
        l.push("fc1.weight", &[2, 3], ParamKind::Bias);
        let b = to_bytes(&Params::zeros(Arc::new(l.clone())), &BTreeMap::new()).unwrap();
        let mut want = Layout::new();
        want.push("fc1.weight", &[3, 3], ParamKind::Bias);
        let e = from_bytes(&b, &Arc::new(want)).unwrap_err().to_string();
        assert!(e.contains("tensor fc1.weight is F32 [2, 3]; this model needs F32 [3, 3]"), "{e}");
        assert!(from_bytes(b"not a safetensors file", p.layout()).is_err());
    }
}
