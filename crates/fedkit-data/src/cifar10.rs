//! `cifar10`: CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
//! 2009): 32x32 colour images in 10 classes, 50000 for training (five batches, partitioned
//! among the clients) and 10000 for the global test set, read from the dataset's binary version.
//!
//! Files: `data_batch_1.bin` ... `data_batch_5.bin` and `test_batch.bin`, each a sequence of
//! 3073-byte records: the label (0-9), then 1024 red, 1024 green and 1024 blue pixel values,
//! row-major. Get them from <https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz> (162 MB)
//! and extract with `tar xzf cifar-10-binary.tar.gz`, which creates `cifar-10-batches-bin/`.
//! No Debian package ships CIFAR-10, so there is no default folder: set `data_dir`. Pixels are
//! scaled to [0, 1] (torchvision's `ToTensor`), without normalisation; feature shape
//! [3, 32, 32] (channels, rows, columns). A model for it: `resnet` (ResNet-20), or `cnn`.
//!
//! Parameters (`[data]`): `data_dir`, the folder holding the six files (the extracted
//! `cifar-10-batches-bin`, or the folder that contains it). A missing or damaged file is
//! reported with its name, the folder searched and how to get it.
//!
//! ```toml
//! [data]
//! name = "cifar10"
//! clients = 10
//! data_dir = "data/cifar-10-batches-bin"
//! [data.partition]
//! use = "dirichlet_label"
//! alpha = 0.5
//! ```

use std::path::{Path, PathBuf};

use fedkit_core::{Dataset, Error, Result};

const RECORD: usize = 1 + 3 * 32 * 32;
const HINT: &str = "download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extract it with \
                    `tar xzf cifar-10-binary.tar.gz` and set data.data_dir to the cifar-10-batches-bin folder";

/// The folder holding the batch files: `dir` itself or its `cifar-10-batches-bin`.
fn folder(dir: Option<&str>) -> Result<PathBuf> {
    let dir = dir.ok_or_else(|| Error::config("data.data_dir", format!("cifar10 has no default folder; {HINT}")))?;
    let dir = Path::new(dir);
    let nested = dir.join("cifar-10-batches-bin");
    Ok(if !dir.join("test_batch.bin").is_file() && nested.is_dir() { nested } else { dir.to_path_buf() })
}

/// Append the records of one batch file to `x` and `y`.
fn read_batch(path: &Path, x: &mut Vec<f32>, y: &mut Vec<u32>) -> Result<()> {
    let b = std::fs::read(path)
        .map_err(|e| Error::Data(format!("cifar10: cannot read {} ({e}); {HINT}", path.display())))?;
    if b.is_empty() || b.len() % RECORD != 0 {
        return Err(Error::Data(format!(
            "cifar10: {} has {} bytes, not a whole number of {RECORD}-byte records (damaged? {HINT})",
            path.display(),
            b.len()
        )));
    }
    for (i, r) in b.chunks_exact(RECORD).enumerate() {
        if r[0] > 9 {
            return Err(Error::Data(format!(
                "cifar10: {} record {i} has label {} (0-9 expected)",
                path.display(),
                r[0]
            )));
        }
        y.push(r[0] as u32);
        x.extend(r[1..].iter().map(|&v| v as f32 / 255.0));
    }
    Ok(())
}

fn dataset(dir: &Path, files: &[String], part: &str) -> Result<Dataset> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for f in files {
        read_batch(&dir.join(f), &mut x, &mut y)?;
    }
    Ok(Dataset {
        name: format!("cifar10/{part}"),
        x,
        y,
        feature_shape: vec![3, 32, 32],
        classes: 10,
        users: None,
        targets: Vec::new(),
    })
}

/// Load (train, test) from `data_dir`.
pub fn load(data_dir: Option<&str>) -> Result<(Dataset, Dataset)> {
    let dir = folder(data_dir)?;
    let train: Vec<String> = (1..=5).map(|k| format!("data_batch_{k}.bin")).collect();
    Ok((dataset(&dir, &train, "train")?, dataset(&dir, &["test_batch.bin".into()], "test")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::tests::temp_dir;

    /// `n` records with label (seed + i) % 10 and pixel j = (seed + i + j) % 256.
    fn batch(n: usize, seed: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for i in 0..n {
            b.push(((seed + i) % 10) as u8);
            b.extend((0..RECORD - 1).map(|j| ((seed + i + j) % 256) as u8));
        }
        b
    }

    #[test]
    fn reads_the_binary_batches_in_order() {
        let root = temp_dir("cifar");
        let dir = root.join("cifar-10-batches-bin");
        std::fs::create_dir_all(&dir).unwrap();
        for k in 1..=5 {
            std::fs::write(dir.join(format!("data_batch_{k}.bin")), batch(2, 10 * k)).unwrap();
        }
        std::fs::write(dir.join("test_batch.bin"), batch(3, 7)).unwrap();
        // The folder that contains cifar-10-batches-bin works too.
        let (train, test) = load(Some(root.to_str().unwrap())).unwrap();
        train.validate().unwrap();
        assert_eq!((train.len(), test.len(), train.classes), (10, 3, 10));
        assert_eq!(train.feature_shape, [3, 32, 32]);
        // Batch 2's first record: label 20 % 10, first red pixel 20, first blue pixel (20 + 2048).
        assert_eq!(train.y[2], 0);
        assert_eq!(train.x[2 * 3072], 20.0 / 255.0);
        assert_eq!(train.x[2 * 3072 + 2048], ((20 + 2048) % 256) as f32 / 255.0);
        assert_eq!(test.y, vec![7, 8, 9]);
        // A damaged file and a missing one are named, with how to get the data.
        std::fs::write(dir.join("test_batch.bin"), &batch(1, 0)[..100]).unwrap();
        let e = load(Some(dir.to_str().unwrap())).unwrap_err().to_string();
        assert!(e.contains("test_batch.bin") && e.contains("3073-byte records"), "{e}");
        std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
        let e = load(Some(dir.to_str().unwrap())).unwrap_err().to_string();
        assert!(e.contains("data_batch_3.bin") && e.contains("cifar-10-binary.tar.gz"), "{e}");
        let e = load(None).unwrap_err().to_string();
        assert!(e.contains("data.data_dir") && e.contains("no default folder"), "{e}");
        let _ = std::fs::remove_dir_all(root);
    }
}
