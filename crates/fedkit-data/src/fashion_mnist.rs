//! `fashion_mnist` and `mnist`: 28x28 grey-scale images in 10 classes, read from the four
//! standard IDX files.
//!
//! Fashion-MNIST (Xiao et al., 2017, <https://github.com/zalandoresearch/fashion-mnist>) and MNIST
//! (LeCun et al., 1998) ship as `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (60000
//! samples) and `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (10000 samples), each raw or
//! gzipped (`.gz`). The training files are partitioned among the clients, the t10k files are the
//! global test set. Pixels are scaled to [0, 1] (torchvision's `ToTensor`, as NIID-Bench loads
//! them), without normalisation; feature shape [1, 28, 28].
//!
//! Parameters (`[data]`):
//! - `data_dir`: the folder holding the four files. Default for `fashion_mnist`:
//!   `/usr/share/datasets/fashion-mnist`, where Debian's package `dataset-fashion-mnist` puts them
//!   (`apt-get install dataset-fashion-mnist`). Default for `mnist`: `/usr/share/datasets/mnist`.
//!
//! A missing file is reported with the file name, the folder searched and how to get it.
//!
//! ```toml
//! [data]
//! name = "fashion_mnist"
//! clients = 10
//! data_dir = "/usr/share/datasets/fashion-mnist"
//! [data.partition]
//! use = "dirichlet_label"
//! alpha = 0.5
//! ```

use std::path::{Path, PathBuf};

use fedkit_core::{Dataset, Error, Result};

use crate::idx::load_idx_pair;

/// One IDX image dataset: its name, default folder and how to obtain it.
#[derive(Clone, Copy, Debug)]
pub struct ImageSet {
    /// Dataset name (`[data] name`).
    pub name: &'static str,
    /// Folder searched when `data.data_dir` is not set.
    pub default_dir: &'static str,
    /// How to get the files, for the missing-file error.
    pub hint: &'static str,
}

/// Fashion-MNIST, as installed by Debian's `dataset-fashion-mnist`.
pub const FASHION_MNIST: ImageSet = ImageSet {
    name: "fashion_mnist",
    default_dir: "/usr/share/datasets/fashion-mnist",
    hint: "install it with `apt-get install dataset-fashion-mnist`, or set data.data_dir to a folder \
           holding the four Fashion-MNIST IDX files",
};

/// MNIST.
pub const MNIST: ImageSet = ImageSet {
    name: "mnist",
    default_dir: "/usr/share/datasets/mnist",
    hint: "set data.data_dir to a folder holding the four MNIST IDX files",
};

/// `dir/base` or `dir/base.gz`, whichever exists.
fn locate(set: &ImageSet, dir: &Path, base: &str) -> Result<PathBuf> {
    [base.to_string(), format!("{base}.gz")].iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| {
        Error::Data(format!(
            "{}: file `{base}` (or `{base}.gz`) not found in {}; {}",
            set.name,
            dir.display(),
            set.hint
        ))
    })
}

/// Load (train, test) from `data_dir`, or the set's default folder.
pub fn load(set: &ImageSet, data_dir: Option<&str>) -> Result<(Dataset, Dataset)> {
    let dir = Path::new(data_dir.unwrap_or(set.default_dir));
    let split = |prefix: &str| -> Result<Dataset> {
        let images = locate(set, dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels = locate(set, dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let part = if prefix == "train" { "train" } else { "test" };
        load_idx_pair(&images, &labels, 10, &format!("{}/{part}", set.name))
    };
    Ok((split("train")?, split("t10k")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::tests::{temp_dir, write_pair};

    #[test]
    fn missing_files_say_where_and_how() {
        let dir = temp_dir("fmnist-missing");
        let d = dir.to_str().unwrap();
        let e = load(&FASHION_MNIST, Some(d)).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte") && e.contains(d), "{e}");
        assert!(e.contains("apt-get install dataset-fashion-mnist") && e.contains("data.data_dir"), "{e}");
        write_pair(&dir, "train", 3, true);
        let e = load(&MNIST, Some(d)).unwrap_err().to_string();
        assert!(e.contains("t10k-images-idx3-ubyte") && e.contains("data.data_dir") && !e.contains("apt-get"), "{e}");
        write_pair(&dir, "t10k", 2, false);
        let (train, test) = load(&MNIST, Some(d)).unwrap();
        assert_eq!(
            (train.len(), test.len(), train.name.as_str(), test.name.as_str()),
            (3, 2, "mnist/train", "mnist/test")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn real_fashion_mnist_if_installed() {
        if !Path::new(FASHION_MNIST.default_dir).is_dir() {
            eprintln!("skipped: {} not installed", FASHION_MNIST.default_dir);
            return;
        }
        let (train, test) = load(&FASHION_MNIST, None).unwrap();
        train.validate().unwrap();
        test.validate().unwrap();
        assert_eq!((train.len(), test.len(), train.classes), (60000, 10000, 10));
        assert_eq!(train.feature_shape, [1, 28, 28]);
        let all: Vec<u32> = (0..60000).collect();
        assert_eq!(train.label_histogram(&all), vec![6000; 10]);
        let (lo, hi) = train.x.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert_eq!((lo, hi), (0.0, 1.0));
    }
}
