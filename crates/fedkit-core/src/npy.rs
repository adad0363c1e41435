//! NumPy's `.npy` format (version 1.0, 2.0 and 3.0 headers), read and written: the tabular
//! loader reads features and labels from it, and the Flower interop exchanges arrays in it
//! (Flower's `ndarray_to_bytes` is `np.save`). Hand-written (about a page; see docs/design.md):
//! the format is one header dictionary and raw data, and the maintained Rust crates for it
//! either pull in ndarray or lag behind NumPy's header versions.
//!
//! Reading accepts little-endian (or byte-order-free) bool, integer and float dtypes in C order;
//! big-endian data, Fortran order, object arrays and a data length other than the shape's are
//! refused with an error that says which.

use std::path::Path;

use crate::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Bigger headers than this are refused (NumPy itself caps them at 10000 bytes by default).
const MAX_HEADER: usize = 1 << 16;

/// An array's values, in its own dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// A C-order array.
#[derive(Clone, Debug, PartialEq)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

/// `$e` over the numeric variants' vector `$v`, `$b` for a bool vector.
macro_rules! each {
    ($d:expr, $v:ident => $e:expr) => {
        each!($d, $v => $e, bool $v => $e)
    };
    ($d:expr, $v:ident => $e:expr, bool $bv:ident => $b:expr) => {
        match $d {
            NpyData::Bool($bv) => $b,
            NpyData::U8($v) => $e,
            NpyData::I8($v) => $e,
            NpyData::U16($v) => $e,
            NpyData::I16($v) => $e,
            NpyData::U32($v) => $e,
            NpyData::I32($v) => $e,
            NpyData::U64($v) => $e,
            NpyData::I64($v) => $e,
            NpyData::F32($v) => $e,
            NpyData::F64($v) => $e,
        }
    };
}

impl Npy {
    /// The number of values.
    pub fn len(&self) -> usize {
        each!(&self.data, v => v.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The dtype's NumPy name (`float32`, `int64`, ...).
    pub fn dtype(&self) -> &'static str {
        match self.data {
            NpyData::Bool(_) => "bool",
            NpyData::U8(_) => "uint8",
            NpyData::I8(_) => "int8",
            NpyData::U16(_) => "uint16",
            NpyData::I16(_) => "int16",
            NpyData::U32(_) => "uint32",
            NpyData::I32(_) => "int32",
            NpyData::U64(_) => "uint64",
            NpyData::I64(_) => "int64",
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
        }
    }
    /// The values as f32 (rounded from f64 and wide integers).
    pub fn to_f32(&self) -> Vec<f32> {
        each!(&self.data, v => v.iter().map(|&x| x as f64 as f32).collect(),
            bool v => v.iter().map(|&b| b as u8 as f32).collect())
    }
    /// The values as non-negative integers (labels): floats must be whole, nothing negative.
    pub fn to_labels(&self) -> Result<Vec<u32>> {
        let f = |x: f64| {
            (x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64)
                .then_some(x as u32)
                .ok_or_else(|| Error::Data(format!("npy: label {x} is not a non-negative integer")))
        };
        each!(&self.data, v => v.iter().map(|&x| f(x as f64)).collect(),
            bool v => Ok(v.iter().map(|&b| b as u32).collect()))
    }
}

trait Le: Sized {
    const N: usize;
    fn from(b: &[u8]) -> Self;
}
macro_rules! le {
    ($($t:ty),*) => {$(impl Le for $t {
        const N: usize = std::mem::size_of::<$t>();
        fn from(b: &[u8]) -> Self { <$t>::from_le_bytes(b.try_into().expect("chunk of N bytes")) }
    })*};
}
le!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

fn values<T: Le>(b: &[u8]) -> Vec<T> {
    b.chunks_exact(T::N).map(T::from).collect()
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::Data(format!("npy: {why}"))
}

/// The value of `key` in the header dictionary's text (a quoted string, a bool or a tuple).
fn field<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))
        .ok_or_else(|| bad(format!("the header has no '{key}'")))?;
    let rest = header[at + key.len() + 2..].trim_start();
    let rest = rest.strip_prefix(':').ok_or_else(|| bad(format!("'{key}' has no value")))?.trim_start();
    let end = match rest.chars().next() {
        Some('(') => rest.find(')').map(|i| i + 1),
        Some(q @ ('\'' | '"')) => rest[1..].find(q).map(|i| i + 2),
        _ => rest.find([',', '}']),
    }
    .ok_or_else(|| bad(format!("'{key}' is not terminated")))?;
    Ok(rest[..end].trim())
}

/// Parse `.npy` bytes.
pub fn from_bytes(b: &[u8]) -> Result<Npy> {
    if b.len() < 10 || &b[..6] != MAGIC {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)"));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(bad(format!("format version {v}.{}; this reader knows 1.0, 2.0 and 3.0", b[7]))),
    };
    if hlen > MAX_HEADER || start + hlen > b.len() {
        return Err(bad(format!("a header of {hlen} bytes in a file of {}", b.len())));
    }
    let header = std::str::from_utf8(&b[start..start + hlen]).map_err(|_| bad("the header is not text"))?;
    let descr = field(header, "descr")?.trim_matches(['\'', '"']);
    if field(header, "fortran_order")? != "False" {
        return Err(bad("Fortran-order arrays are not read; save with np.ascontiguousarray"));
    }
    let dims = field(header, "shape")?.trim_matches(['(', ')']);
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(format!("shape ({dims}) is not a tuple of sizes"))))
        .collect::<Result<Vec<_>>>()?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("shape overflows"))?;
    let (order, code) = match (descr.get(..1), descr.get(1..)) {
        (Some(o), Some(c)) => (o, c),
        _ => return Err(bad(format!("dtype {descr:?}: not a plain numeric dtype"))),
    };
    let one_byte = matches!(code, "u1" | "i1" | "b1");
    if order == ">" && !one_byte {
        return Err(bad(format!("big-endian dtype {descr}; convert with arr.astype(arr.dtype.newbyteorder('<'))")));
    }
    if !matches!(order, "<" | "|" | "=") && !(order == ">" && one_byte) {
        return Err(bad(format!("dtype {descr}: not a plain numeric dtype")));
    }
    let width: usize = match code {
        "b1" | "u1" | "i1" => 1,
        "u2" | "i2" => 2,
        "u4" | "i4" | "f4" => 4,
        "u8" | "i8" | "f8" => 8,
        _ => return Err(bad(format!("dtype {descr} is not read (bool, integers, float32 and float64 are)"))),
    };
    let body = &b[start + hlen..];
    if Some(body.len()) != n.checked_mul(width) {
        return Err(bad(format!(
            "shape {shape:?} of {descr} needs {} data bytes, the file has {}",
            n.saturating_mul(width),
            body.len()
        )));
    }
    let data = match code {
        "b1" => NpyData::Bool(body.iter().map(|&x| x != 0).collect()),
        "u1" => NpyData::U8(body.to_vec()),
        "i1" => NpyData::I8(values(body)),
        "u2" => NpyData::U16(values(body)),
        "i2" => NpyData::I16(values(body)),
        "u4" => NpyData::U32(values(body)),
        "i4" => NpyData::I32(values(body)),
        "u8" => NpyData::U64(values(body)),
        "i8" => NpyData::I64(values(body)),
        "f4" => NpyData::F32(values(body)),
        _ => NpyData::F64(values(body)),
    };
    Ok(Npy { shape, data })
}

/// Read the `.npy` file `path`; errors name it.
pub fn read(path: &Path) -> Result<Npy> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&b)
        .map_err(|e| Error::Data(format!("{}: {}", path.display(), e.to_string().trim_start_matches("data: "))))
}

/// The `.npy` bytes (format 1.0) of `a`.
pub fn to_bytes(a: &Npy) -> Vec<u8> {
    let descr = match a.data {
        NpyData::Bool(_) => "|b1",
        NpyData::U8(_) => "|u1",
        NpyData::I8(_) => "|i1",
        NpyData::U16(_) => "<u2",
        NpyData::I16(_) => "<i2",
        NpyData::U32(_) => "<u4",
        NpyData::I32(_) => "<i4",
        NpyData::U64(_) => "<u8",
        NpyData::I64(_) => "<i8",
        NpyData::F32(_) => "<f4",
        NpyData::F64(_) => "<f8",
    };
    let dims: Vec<String> = a.shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces so the data starts at a multiple of 64, ending in a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    each!(&a.data, v => for x in v { out.extend_from_slice(&x.to_le_bytes()) },
        bool v => out.extend(v.iter().map(|&b| b as u8)));
    out
}

/// Write `a` to `path`.
pub fn write(path: &Path, a: &Npy) -> Result<()> {
    std::fs::write(path, to_bytes(a)).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for data in [
            NpyData::F32(vec![1.5, -2.0, 0.25, 8.0, 1e-3, 7.0]),
            NpyData::F64(vec![1.0; 6]),
            NpyData::I64(vec![-1, 2, 3, 4, 5, 6]),
            NpyData::U8(vec![0, 1, 2, 3, 4, 255]),
            NpyData::Bool(vec![true, false, true, true, false, false]),
        ] {
            let a = Npy { shape: vec![2, 3], data };
            let b = to_bytes(&a);
            assert_eq!(from_bytes(&b).unwrap(), a);
        }
        // The data starts 64-byte aligned, as NumPy writes it.
        assert_eq!(to_bytes(&Npy { shape: vec![2, 3], data: NpyData::F32(vec![0.0; 6]) }).len(), 128 + 24);
        let v = Npy { shape: vec![3], data: NpyData::U32(vec![1, 2, 3]) };
        assert!(String::from_utf8_lossy(&to_bytes(&v)).contains("'shape': (3,)"));
    }

    #[test]
    fn reads_what_numpy_writes() {
        // np.save of np.array([[1, 2], [3, 4]], dtype='<i8'), byte for byte (format 1.0).
        let mut b = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let mut h = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }".to_string();
        h.push_str(&" ".repeat(117 - h.len()));
        h.push('\n');
        b.extend_from_slice(h.as_bytes());
        for x in [1i64, 2, 3, 4] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        let a = from_bytes(&b).unwrap();
        assert_eq!(a.shape, vec![2, 2]);
        assert_eq!(a.to_labels().unwrap(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn refuses_malformed_files_with_reasons() {
        let good = to_bytes(&Npy { shape: vec![4], data: NpyData::F32(vec![0.0; 4]) });
        let e = |b: &[u8]| from_bytes(b).unwrap_err().to_string();
        assert!(e(&good[..good.len() - 1]).contains("needs 16 data bytes, the file has 15"));
        assert!(e(b"PK\x03\x04").contains("not a .npy file"));
        let swap = |from: &str, to: &str| {
            assert_eq!(from.len(), to.len());
            let mut b = good.clone();
            let at = b.windows(from.len()).position(|w| w == from.as_bytes()).expect("in the header");
            b[at..at + to.len()].copy_from_slice(to.as_bytes());
            b
        };
        assert!(e(&swap("<f4", ">f4")).contains("big-endian"));
        assert!(e(&swap("'fortran_order': False", "'fortran_order': True ")).contains("Fortran"));
        assert!(e(&swap("<f4", "|O8")).contains("dtype"));
        // A multi-byte character where the byte order goes is an error, not a panic.
        assert!(e(&swap("'<f4'", "'\u{e9}f'")).contains("dtype"));
        let neg = Npy { shape: vec![1], data: NpyData::I32(vec![-3]) };
        assert!(neg.to_labels().is_err());
        // Random bytes after the magic never panic.
        let mut rng = crate::RngStream::derive(1, "npy-fuzz", 0, 0);
        for _ in 0..2000 {
            let mut b = good.clone();
            let n = rng.below(b.len() as u64) as usize;
            for _ in 0..4 {
                let i = 6 + rng.below((b.len() - 6) as u64) as usize;
                b[i] = rng.below(256) as u8;
            }
            b.truncate(n.max(6));
            let _ = from_bytes(&b);
        }
    }
}
