//! `femnist` and `shakespeare`: LEAF's federated datasets, one client per writer or speaking role.
//!
//! LEAF (Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018,
//! <https://github.com/TalwalkarLab/leaf>) ships no data files: its preprocessing scripts download
//! the raw data and write `<data_dir>/train/*.json` and `<data_dir>/test/*.json`. Each file is
//! `{"users": [names], "num_samples": [counts], "user_data": {"<name>": {"x": [..], "y": [..]}}}`
//! (other fields, such as `hierarchies`, are ignored).
//!
//! - `femnist`: handwritten digits and letters of the NIST writers (Extended MNIST). Each `x` is 784
//!   pixel values (28x28, row-major), each `y` a class in 0..62 (0-9 digits, 10-35 upper case,
//!   36-61 lower case). Feature shape [1, 28, 28], 62 classes. LEAF stores the pixels in [0, 1] with
//!   the white background at 1.0 and the ink near 0 (grey level / 255, the inverse of MNIST's
//!   convention); fedkit keeps them exactly as stored and does not invert them.
//! - `shakespeare`: next-character prediction on the lines of each speaking role of Shakespeare's
//!   plays. Each `x` is a string of 80 characters, each `y` the character that follows. Characters
//!   become token ids by their position in LEAF's vocabulary (`ALL_LETTERS` of
//!   `models/utils/language_utils.py`, 80 characters: newline, space, punctuation, digits, letters);
//!   a character outside it is an error naming the file, user and sample. Feature shape [80]
//!   holding the token ids as f32, 80 classes.
//!
//! Users: every user name of the train and test files gets an id 0..U-1 in sorted name order, and
//! both datasets record each sample's user (`users`), so the `natural` partition gives one client
//! per writer (per role) with exactly its training samples; `data.clients` must then be the number
//! of users with training samples, or 0. The global test set pools all test users' samples.
//! Files are read in sorted file-name order, users in each file's `users` order, samples in file
//! order, so the data are the same on every run. `num_samples` must match each user's `x` and `y`
//! lengths; a mismatch, a row of the wrong length or a label out of range is an error naming the
//! file and the user.
//!
//! Getting the data (Python 3 with numpy and pillow): clone LEAF and run its preprocessing, e.g.
//! ```text
//! git clone https://github.com/TalwalkarLab/leaf
//! cd leaf/data/femnist && ./preprocess.sh -s niid --sf 0.05 -k 0 -t sample
//! cd leaf/data/shakespeare && ./preprocess.sh -s niid --sf 0.2 -k 0 -t sample -tf 0.8
//! ```
//! then point `data_dir` at `leaf/data/femnist/data` (or `leaf/data/shakespeare/data`), the folder
//! that holds `train/` and `test/`. `-t sample` splits each user's samples between train and test;
//! `-t user` puts whole users in one or the other (the test users then have no client).
//!
//! Parameters (`[data]`):
//! - `data_dir`: the folder holding LEAF's `train/` and `test/` folders. There is no default (the
//!   data come from LEAF's scripts, not a package); a missing folder says how to make it.
//!
//! ```toml
//! [data]
//! name = "femnist"
//! data_dir = "leaf/data/femnist/data"
//! [data.partition]
//! use = "natural"
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use fedkit_core::{Dataset, Error, Result};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// LEAF's character vocabulary (`ALL_LETTERS` of `models/utils/language_utils.py`): a character's
/// token id is its position here.
pub const ALL_LETTERS: &str = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}";

/// Characters per Shakespeare sample.
pub const SEQ_LEN: usize = 80;

/// Pixels per FEMNIST image (28 x 28).
const PIXELS: usize = 28 * 28;

/// Which LEAF dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    /// Handwritten characters, one user per writer.
    Femnist,
    /// Next character of Shakespeare's lines, one user per speaking role.
    Shakespeare,
}

impl LeafKind {
    /// Dataset name (`[data] name`).
    pub fn name(self) -> &'static str {
        match self {
            LeafKind::Femnist => "femnist",
            LeafKind::Shakespeare => "shakespeare",
        }
    }
    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            LeafKind::Femnist => 62,
            LeafKind::Shakespeare => ALL_LETTERS.len(),
        }
    }
    /// Shape of one sample.
    fn feature_shape(self) -> Vec<usize> {
        match self {
            LeafKind::Femnist => vec![1, 28, 28],
            LeafKind::Shakespeare => vec![SEQ_LEN],
        }
    }
    /// How to make the files, for the missing-folder errors.
    fn hint(self) -> String {
        let (name, flags) = match self {
            LeafKind::Femnist => ("femnist", "-s niid --sf 0.05 -k 0 -t sample"),
            LeafKind::Shakespeare => ("shakespeare", "-s niid --sf 0.2 -k 0 -t sample -tf 0.8"),
        };
        format!(
            "make it with LEAF: `git clone https://github.com/TalwalkarLab/leaf`, then \
             `cd leaf/data/{name} && ./preprocess.sh {flags}`, and set data.data_dir = \"leaf/data/{name}/data\" \
             (the folder holding train/ and test/)"
        )
    }
}

/// One file as LEAF writes it; `X` and `Y` are the types of one sample's features and label.
#[derive(Deserialize)]
struct LeafFile<X, Y> {
    users: Vec<String>,
    num_samples: Vec<usize>,
    user_data: HashMap<String, UserData<X, Y>>,
}

/// One user's samples.
#[derive(Deserialize)]
struct UserData<X, Y> {
    x: Vec<X>,
    y: Vec<Y>,
}

/// Turns one sample into features appended to the buffer and a label, or says what is wrong.
type SampleFn<X, Y> = fn(X, Y, &mut Vec<f32>) -> std::result::Result<u32, String>;

/// The samples of one split, in file order, with the users owning consecutive runs of them.
#[derive(Default)]
struct Split {
    x: Vec<f32>,
    y: Vec<u32>,
    /// (user name, number of samples) per run of samples.
    runs: Vec<(String, usize)>,
}

/// A FEMNIST sample: 784 pixels and a whole label in 0..62.
fn femnist_sample(x: Vec<f32>, y: f64, out: &mut Vec<f32>) -> std::result::Result<u32, String> {
    if x.len() != PIXELS {
        return Err(format!("{} pixel values, expected {PIXELS} (28x28)", x.len()));
    }
    let classes = LeafKind::Femnist.classes();
    if !(y >= 0.0 && y.fract() == 0.0 && y < classes as f64) {
        return Err(format!("label {y} outside 0..{classes}"));
    }
    out.extend_from_slice(&x);
    Ok(y as u32)
}

/// The token id of `c` in [`ALL_LETTERS`].
fn token(c: char) -> std::result::Result<u32, String> {
    // ALL_LETTERS is ASCII, so the byte offset is the character position.
    ALL_LETTERS
        .find(c)
        .map(|i| i as u32)
        .ok_or_else(|| format!("character {c:?} (U+{:04X}) is not in LEAF's vocabulary (ALL_LETTERS)", c as u32))
}

/// A Shakespeare sample: 80 characters and the one that follows.
fn shakespeare_sample(x: String, y: String, out: &mut Vec<f32>) -> std::result::Result<u32, String> {
    let n = x.chars().count();
    if n != SEQ_LEN {
        return Err(format!("x has {n} characters, expected {SEQ_LEN}"));
    }
    let mut next = y.chars();
    let (Some(c), None) = (next.next(), next.next()) else {
        return Err(format!("y {y:?} is not a single character"));
    };
    let label = token(c)?;
    let start = out.len();
    for ch in x.chars() {
        match token(ch) {
            Ok(t) => out.push(t as f32),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(label)
}

/// Read one LEAF file, appending its samples to `split`.
fn read_file<X: DeserializeOwned, Y: DeserializeOwned>(
    path: &Path,
    split: &mut Split,
    sample: SampleFn<X, Y>,
) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let file: LeafFile<X, Y> = serde_json::from_reader(BufReader::new(f))
        .map_err(|e| Error::Data(format!("{}: not a LEAF JSON file of this dataset: {e}", path.display())))?;
    let LeafFile { users, num_samples, mut user_data } = file;
    if users.len() != num_samples.len() {
        return Err(Error::Data(format!(
            "{}: {} users but {} num_samples entries",
            path.display(),
            users.len(),
            num_samples.len()
        )));
    }
    for (name, n) in users.into_iter().zip(num_samples) {
        let bad = |why: String| Error::Data(format!("{}: user `{name}`: {why}", path.display()));
        let Some(data) = user_data.remove(&name) else {
            return Err(bad("listed in `users` but has no `user_data` entry (or is listed twice)".into()));
        };
        if data.x.len() != n || data.y.len() != n {
            return Err(bad(format!(
                "num_samples says {n}, but x holds {} samples and y holds {}",
                data.x.len(),
                data.y.len()
            )));
        }
        for (i, (x, y)) in data.x.into_iter().zip(data.y).enumerate() {
            let label = sample(x, y, &mut split.x).map_err(|why| bad(format!("sample {i}: {why}")))?;
            split.y.push(label);
        }
        split.runs.push((name, n));
    }
    Ok(())
}

/// The `.json` files of `dir/part`, sorted by name; a missing folder or no file is a config error.
fn json_files(kind: LeafKind, root: &str, part: &str) -> Result<Vec<PathBuf>> {
    let dir = Path::new(root).join(part);
    let missing = |what: String| {
        Error::config(
            "data.data_dir",
            format!(
                "{}: {what} (data.data_dir = \"{root}\" must hold LEAF's train/ and test/ folders); {}",
                kind.name(),
                kind.hint()
            ),
        )
    };
    if !dir.is_dir() {
        return Err(missing(format!("folder {} not found", dir.display())));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(missing(format!("no .json file in {}", dir.display())));
    }
    files.sort();
    Ok(files)
}

/// Read every file of one split.
fn read_split(kind: LeafKind, files: &[PathBuf]) -> Result<Split> {
    let mut split = Split::default();
    for path in files {
        match kind {
            LeafKind::Femnist => read_file::<Vec<f32>, f64>(path, &mut split, femnist_sample)?,
            LeafKind::Shakespeare => read_file::<String, String>(path, &mut split, shakespeare_sample)?,
        }
    }
    Ok(split)
}

/// Load (train, test) of `kind` from `data_dir` (the folder holding `train/` and `test/`).
pub fn load(kind: LeafKind, data_dir: Option<&str>) -> Result<(Dataset, Dataset)> {
    let Some(root) = data_dir else {
        return Err(Error::config(
            "data.data_dir",
            format!("{} has no default folder: LEAF's data are made by its own scripts; {}", kind.name(), kind.hint()),
        ));
    };
    // Look for both folders before parsing anything, so a missing one is reported at once.
    let files = [json_files(kind, root, "train")?, json_files(kind, root, "test")?];
    let [train, test] = [read_split(kind, &files[0])?, read_split(kind, &files[1])?];
    if train.y.is_empty() {
        return Err(Error::Data(format!("{}: no training samples in {root}/train", kind.name())));
    }
    let names: BTreeSet<&String> = train.runs.iter().chain(&test.runs).map(|(n, _)| n).collect();
    let names: Vec<String> = names.into_iter().cloned().collect();
    let dataset = |split: Split, part: &str| {
        let users = split.runs.iter().flat_map(|(n, k)| {
            // Every run's name is in `names`, so the search always finds it.
            let id = names.binary_search(n).unwrap_or_default() as u32;
            std::iter::repeat_n(id, *k)
        });
        Dataset {
            name: format!("{}/{part}", kind.name()),
            users: Some(users.collect()),
            x: split.x,
            y: split.y,
            feature_shape: kind.feature_shape(),
            classes: kind.classes(),
            targets: Vec::new(),
        }
    };
    Ok((dataset(train, "train"), dataset(test, "test")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::tests::temp_dir;
    use serde_json::{Value, json};

    /// One user of a test file: name, x values, y values.
    type User<'a> = (&'a str, Vec<Value>, Vec<Value>);

    /// Write a LEAF file `dir/part/file` holding `users`, with `num_samples` the true counts unless
    /// `counts` overrides them.
    fn write_leaf(dir: &Path, part: &str, file: &str, users: &[User<'_>], counts: Option<&[usize]>) {
        let names: Vec<&str> = users.iter().map(|u| u.0).collect();
        let n: Vec<usize> = counts.map_or_else(|| users.iter().map(|u| u.1.len()).collect(), <[usize]>::to_vec);
        let data: serde_json::Map<String, Value> =
            users.iter().map(|(name, x, y)| (name.to_string(), json!({ "x": x, "y": y }))).collect();
        let doc = json!({ "users": names, "num_samples": n, "hierarchies": [], "user_data": data });
        std::fs::create_dir_all(dir.join(part)).unwrap();
        std::fs::write(dir.join(part).join(file), serde_json::to_string(&doc).unwrap()).unwrap();
    }

    /// A 784-pixel image whose values depend on `seed`.
    fn image(seed: usize) -> Vec<f32> {
        (0..PIXELS).map(|i| ((i * 7 + seed * 13) % 256) as f32 / 255.0).collect()
    }

    fn img(seed: usize) -> Value {
        json!(image(seed))
    }

    /// Two train files (users w3, w1 in one, w2 in the other) and a test file (w2, and w0 only).
    fn write_femnist(dir: &Path) {
        write_leaf(dir, "train", "b.json", &[("w2", vec![img(3)], vec![json!(9)])], None);
        write_leaf(
            dir,
            "train",
            "a.json",
            &[("w3", vec![img(0), img(1)], vec![json!(5), json!(61)]), ("w1", vec![img(2)], vec![json!(0)])],
            None,
        );
        write_leaf(
            dir,
            "test",
            "t.json",
            &[("w2", vec![img(4)], vec![json!(3)]), ("w0", vec![img(5), img(6)], vec![json!(36), json!(10)])],
            None,
        );
    }

    fn text(s: &str) -> String {
        s.chars().cycle().take(SEQ_LEN).collect()
    }

    #[test]
    fn femnist_users_files_and_pixels() {
        let dir = temp_dir("leaf-femnist");
        write_femnist(&dir);
        std::fs::write(dir.join("train").join("notes.txt"), "not json").unwrap();
        let (train, test) = load(LeafKind::Femnist, dir.to_str()).unwrap();
        train.validate().unwrap();
        test.validate().unwrap();
        assert_eq!((train.name.as_str(), test.name.as_str()), ("femnist/train", "femnist/test"));
        assert_eq!((train.feature_shape.clone(), train.classes, test.classes), (vec![1, 28, 28], 62, 62));
        // a.json before b.json; w3 before w1 as a.json lists them.
        assert_eq!(train.y, [5, 61, 0, 9]);
        // Sorted over train and test: w0 = 0, w1 = 1, w2 = 2, w3 = 3.
        assert_eq!(train.users.as_deref(), Some(&[3, 3, 1, 2][..]));
        assert_eq!(test.users.as_deref(), Some(&[2, 0, 0][..]));
        assert_eq!(test.y, [3, 36, 10]);
        assert_eq!(train.features(1), &image(1)[..]);
        assert_eq!(test.features(2), &image(6)[..]);
        let again = load(LeafKind::Femnist, dir.to_str()).unwrap().0;
        assert_eq!((again.x, again.users), (train.x, train.users));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn shakespeare_token_ids() {
        assert_eq!((ALL_LETTERS.len(), ALL_LETTERS.chars().collect::<BTreeSet<_>>().len()), (80, 80));
        let dir = temp_dir("leaf-shakespeare");
        let x = |s: &str| json!(text(s));
        write_leaf(
            &dir,
            "train",
            "all_data_0.json",
            &[
                ("THE_TEMPEST_PROSPERO", vec![x("To be, or not to be? "), x("ab\n")], vec![json!("}"), json!("\n")]),
                ("HAMLET_HORATIO", vec![x("Z[]")], vec![json!("a")]),
            ],
            None,
        );
        write_leaf(&dir, "test", "all_data_0.json", &[("HAMLET_HORATIO", vec![x("09:")], vec![json!(" ")])], None);
        let (train, test) = load(LeafKind::Shakespeare, dir.to_str()).unwrap();
        train.validate().unwrap();
        test.validate().unwrap();
        assert_eq!((train.feature_shape.clone(), train.classes, train.len(), test.len()), (vec![80], 80, 3, 1));
        assert_eq!(train.y, [79, 0, 53]);
        // T o ' ' b e , ' ' o r
        assert_eq!(train.features(0)[..10], [44.0, 67.0, 1.0, 54.0, 57.0, 8.0, 1.0, 67.0, 70.0, 1.0]);
        assert_eq!(train.features(1)[..4], [53.0, 54.0, 0.0, 53.0]);
        assert_eq!(train.features(2)[..4], [50.0, 51.0, 52.0, 50.0]);
        assert_eq!(test.features(0)[..3], [11.0, 20.0, 21.0]);
        assert_eq!(test.y, [1]);
        assert_eq!(train.users.as_deref(), Some(&[1, 1, 0][..]));
        assert_eq!(test.users.as_deref(), Some(&[0][..]));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_folders_say_how_to_get_the_data() {
        let e = load(LeafKind::Femnist, None).unwrap_err().to_string();
        assert!(e.contains("data.data_dir") && e.contains("preprocess.sh -s niid --sf 0.05"), "{e}");
        let dir = temp_dir("leaf-missing");
        let d = dir.to_str().unwrap();
        let e = load(LeafKind::Shakespeare, Some(d)).unwrap_err();
        assert!(matches!(e, Error::Config { .. }));
        let e = e.to_string();
        assert!(e.contains("data.data_dir") && e.contains(&dir.join("train").display().to_string()), "{e}");
        assert!(e.contains("preprocess.sh -s niid --sf 0.2 -k 0 -t sample -tf 0.8"), "{e}");
        assert!(e.contains("github.com/TalwalkarLab/leaf"), "{e}");
        std::fs::create_dir_all(dir.join("train")).unwrap();
        std::fs::create_dir_all(dir.join("test")).unwrap();
        let e = load(LeafKind::Femnist, Some(d)).unwrap_err().to_string();
        assert!(e.contains("no .json file") && e.contains("preprocess.sh") && e.contains("data.data_dir"), "{e}");
        write_femnist(&dir);
        std::fs::remove_dir_all(dir.join("test")).unwrap();
        let e = load(LeafKind::Femnist, Some(d)).unwrap_err().to_string();
        assert!(e.contains(&dir.join("test").display().to_string()) && e.contains("preprocess.sh"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn malformed_files_name_the_file_and_user() {
        let dir = temp_dir("leaf-bad");
        let d = dir.to_str().unwrap();
        let err = |kind| load(kind, Some(d)).unwrap_err().to_string();
        write_leaf(&dir, "test", "t.json", &[("w0", vec![img(0)], vec![json!(1)])], None);
        // num_samples disagrees with the data.
        write_leaf(&dir, "train", "a.json", &[("w9", vec![img(0), img(1)], vec![json!(1), json!(2)])], Some(&[3][..]));
        let e = err(LeafKind::Femnist);
        assert!(e.contains("a.json") && e.contains("`w9`") && e.contains("num_samples says 3"), "{e}");
        // A row of 783 pixels.
        let mut short = image(0);
        short.pop();
        write_leaf(&dir, "train", "a.json", &[("w9", vec![img(1), json!(short)], vec![json!(1), json!(2)])], None);
        let e = err(LeafKind::Femnist);
        assert!(e.contains("a.json") && e.contains("`w9`") && e.contains("sample 1") && e.contains("783"), "{e}");
        // A label outside 0..62.
        write_leaf(&dir, "train", "a.json", &[("w9", vec![img(1)], vec![json!(62)])], None);
        let e = err(LeafKind::Femnist);
        assert!(e.contains("`w9`") && e.contains("label 62 outside 0..62"), "{e}");
        // Shakespeare: a character outside the vocabulary, a short string, a two-character label.
        let bad = format!("{}~", text("abc").chars().take(SEQ_LEN - 1).collect::<String>());
        write_leaf(&dir, "train", "a.json", &[("ROLE", vec![json!(text("a")), json!(bad)], vec![json!("a"); 2])], None);
        write_leaf(&dir, "test", "t.json", &[("ROLE", vec![json!(text("a"))], vec![json!("b")])], None);
        let e = err(LeafKind::Shakespeare);
        assert!(e.contains("a.json") && e.contains("`ROLE`") && e.contains("sample 1") && e.contains("'~'"), "{e}");
        write_leaf(&dir, "train", "a.json", &[("ROLE", vec![json!("too short")], vec![json!("a")])], None);
        let e = err(LeafKind::Shakespeare);
        assert!(e.contains("`ROLE`") && e.contains("9 characters, expected 80"), "{e}");
        write_leaf(&dir, "train", "a.json", &[("ROLE", vec![json!(text("a"))], vec![json!("ab")])], None);
        assert!(err(LeafKind::Shakespeare).contains("not a single character"));
        // Femnist files read as Shakespeare (numbers where strings belong) fail to parse.
        write_leaf(&dir, "train", "a.json", &[("w9", vec![img(1)], vec![json!(1)])], None);
        let e = err(LeafKind::Shakespeare);
        assert!(e.contains("a.json") && e.contains("not a LEAF JSON file"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
