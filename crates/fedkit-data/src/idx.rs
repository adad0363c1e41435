//! IDX file reader: the format of MNIST and Fashion-MNIST (LeCun et al., "Gradient-based learning
//! applied to document recognition", 1998; <http://yann.lecun.com/exdb/mnist/>).
//!
//! An IDX file is a big-endian header, magic `0x000008NN` (unsigned bytes, NN dimensions), then NN
//! u32 sizes, then the data. Images use magic 0x00000803 (n x rows x cols bytes), labels 0x00000801
//! (n bytes). Files may be gzip-compressed (recognised by the bytes 1f 8b, whatever the name) or
//! raw. A file must hold exactly the bytes its header promises; a wrong magic, a truncated or
//! overlong file, a count mismatch between images and labels, or a label outside 0..classes is an
//! error naming the file. Pixels become f32 in [0, 1] (x / 255, as torchvision's `ToTensor`), with
//! feature shape [1, rows, cols].
//!
//! Used by the `fashion_mnist` and `mnist` datasets; it has no parameters of its own:
//!
//! ```toml
//! [data]
//! name = "fashion_mnist"
//! data_dir = "/usr/share/datasets/fashion-mnist"
//! ```

use std::io::Read;
use std::path::Path;

use fedkit_core::{Dataset, Error, Result};

/// Magic number of an IDX file of unsigned-byte images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Read a whole file, gunzipping it if it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| Error::Data(format!("{}: corrupt gzip data: {e}", path.display())))?;
    Ok(out)
}

/// Read an IDX file with the given magic: its dimensions and its data bytes.
pub fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    let word =
        |i: usize| -> Option<u32> { bytes.get(4 * i..4 * i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) };
    let ndims = (magic & 0xff) as usize;
    let header = 4 * (1 + ndims);
    let truncated = |expected: String| {
        Error::Data(format!(
            "{}: truncated IDX file: expected {expected} bytes, found {} (after decompression)",
            path.display(),
            bytes.len()
        ))
    };
    let found = word(0).ok_or_else(|| truncated(format!("at least {header}")))?;
    if found != magic {
        return Err(Error::Data(format!(
            "{}: not the expected IDX file: magic number 0x{found:08x}, expected 0x{magic:08x} ({})",
            path.display(),
            if magic == IMAGES_MAGIC { "u8 images" } else { "u8 labels" }
        )));
    }
    let dims: Vec<usize> = (1..=ndims)
        .map(|i| word(i).map(|v| v as usize).ok_or_else(|| truncated(format!("at least {header}"))))
        .collect::<Result<_>>()?;
    let want = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).and_then(|b| b.checked_add(header));
    let Some(want) = want else {
        return Err(Error::Data(format!("{}: impossible IDX sizes {dims:?}", path.display())));
    };
    if bytes.len() < want {
        return Err(truncated(want.to_string()));
    }
    if bytes.len() > want {
        return Err(Error::Data(format!(
            "{}: IDX file too long: its header {dims:?} promises {want} bytes, found {}",
            path.display(),
            bytes.len()
        )));
    }
    let mut data = bytes;
    data.drain(..header);
    Ok((dims, data))
}

/// Load an image file and its label file into one dataset named `name`.
pub fn load_idx_pair(images: &Path, labels: &Path, classes: usize, name: &str) -> Result<Dataset> {
    let (dims, pixels) = read_idx(images, IMAGES_MAGIC)?;
    let (ldims, y) = read_idx(labels, LABELS_MAGIC)?;
    if dims[0] != ldims[0] {
        return Err(Error::Data(format!(
            "{name}: {} holds {} images but {} holds {} labels",
            images.display(),
            dims[0],
            labels.display(),
            ldims[0]
        )));
    }
    if let Some(&bad) = y.iter().find(|&&c| c as usize >= classes) {
        return Err(Error::Data(format!("{}: label {bad} outside 0..{classes}", labels.display())));
    }
    Ok(Dataset {
        name: name.into(),
        x: pixels.iter().map(|&v| v as f32 / 255.0).collect(),
        y: y.into_iter().map(u32::from).collect(),
        feature_shape: vec![1, dims[1], dims[2]],
        classes,
        users: None,
        targets: Vec::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    /// A fresh empty directory under the system temp dir.
    pub fn temp_dir(tag: &str) -> PathBuf {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fedkit-data-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The bytes of an IDX file.
    pub fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
        b.extend_from_slice(data);
        b
    }

    /// Write `bytes` to `dir/name`, gzipped if `gz`.
    pub fn write(dir: &Path, name: &str, bytes: &[u8], gz: bool) -> PathBuf {
        let path = dir.join(name);
        let bytes = if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        } else {
            bytes.to_vec()
        };
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `n` images of 2x3 pixels (pixel value = 7 * sample + position) and labels sample % 3.
    pub fn write_pair(dir: &Path, prefix: &str, n: u32, gz: bool) -> (PathBuf, PathBuf) {
        let pixels: Vec<u8> = (0..n * 6).map(|i| ((i / 6) * 7 + i % 6) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let ext = if gz { ".gz" } else { "" };
        let images =
            write(dir, &format!("{prefix}-images-idx3-ubyte{ext}"), &idx_bytes(IMAGES_MAGIC, &[n, 2, 3], &pixels), gz);
        let labels =
            write(dir, &format!("{prefix}-labels-idx1-ubyte{ext}"), &idx_bytes(LABELS_MAGIC, &[n], &labels), gz);
        (images, labels)
    }

    #[test]
    fn reads_raw_and_gzip() {
        let dir = temp_dir("idx-ok");
        for gz in [false, true] {
            let (im, lb) = write_pair(&dir, if gz { "g" } else { "r" }, 5, gz);
            let d = load_idx_pair(&im, &lb, 3, "toy").unwrap();
            d.validate().unwrap();
            assert_eq!((d.len(), d.feature_shape.clone(), d.classes), (5, vec![1, 2, 3], 3));
            assert_eq!(d.y, [0, 1, 2, 0, 1]);
            assert_eq!(
                d.features(2),
                [14.0 / 255.0, 15.0 / 255.0, 16.0 / 255.0, 17.0 / 255.0, 18.0 / 255.0, 19.0 / 255.0]
            );
            assert!(d.x.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        let full = write(&dir, "white", &idx_bytes(IMAGES_MAGIC, &[1, 1, 2], &[255, 0]), false);
        assert_eq!(read_idx(&full, IMAGES_MAGIC).unwrap().1, [255, 0]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn wrong_magic_names_both_numbers() {
        let dir = temp_dir("idx-magic");
        let (im, lb) = write_pair(&dir, "t", 4, true);
        let e = load_idx_pair(&lb, &im, 3, "toy").unwrap_err().to_string();
        assert!(e.contains("0x00000801") && e.contains("0x00000803") && e.contains(&lb.display().to_string()), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn truncated_and_overlong_files() {
        let dir = temp_dir("idx-trunc");
        let good = idx_bytes(IMAGES_MAGIC, &[4, 2, 3], &[0; 24]);
        for gz in [false, true] {
            let p = write(&dir, "short", &good[..good.len() - 5], gz);
            let e = read_idx(&p, IMAGES_MAGIC).unwrap_err();
            assert!(matches!(e, Error::Data(_)));
            let e = e.to_string();
            assert!(e.contains("truncated") && e.contains("40") && e.contains("35") && e.contains("short"), "{e}");
        }
        let p = write(&dir, "hdr", &good[..6], false);
        assert!(read_idx(&p, IMAGES_MAGIC).unwrap_err().to_string().contains("truncated"));
        let mut long = good.clone();
        long.push(0);
        let p = write(&dir, "long", &long, false);
        assert!(read_idx(&p, IMAGES_MAGIC).unwrap_err().to_string().contains("too long"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn count_mismatch_bad_label_and_missing_file() {
        let dir = temp_dir("idx-count");
        let (im, _) = write_pair(&dir, "a", 4, false);
        let (_, lb) = write_pair(&dir, "b", 5, false);
        let e = load_idx_pair(&im, &lb, 3, "toy").unwrap_err().to_string();
        assert!(e.contains("4 images") && e.contains("5 labels"), "{e}");
        let (im, lb) = write_pair(&dir, "c", 4, false);
        let e = load_idx_pair(&im, &lb, 2, "toy").unwrap_err().to_string();
        assert!(e.contains("label 2 outside 0..2"), "{e}");
        let e = read_idx(&dir.join("nothing"), LABELS_MAGIC).unwrap_err();
        assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("nothing"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
