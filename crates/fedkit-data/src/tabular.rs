//! `tabular`: a classification table from CSV or NPY files, e.g. UCI Adult, covertype or features
//! exported from another pipeline.
//!
//! The training file is partitioned among the clients, the test file is the global test set.
//! Both files are .csv or both .npy (told apart by the extension). Relative paths are read from
//! the current directory.
//! - CSV: one sample per row, every row with the same number of columns. One column is the label,
//!   an optional one names the sample's user, every other column is a feature and must parse as a
//!   finite number (an error names the file, the row, counted from 1 with the header as row 1,
//!   and the column, counted from 0). Feature shape [d], d = the number of feature columns. With a
//!   header, the test file's feature columns must carry the same names in the same order.
//! - NPY: features of shape [n, d] (or [n, d1, d2, ...]: feature shape [d1, d2, ...]) in any
//!   numeric dtype, read as f32, and a separate label file of shape [n] (integers, or whole
//!   floats). The two files of a split must hold the same n.
//!
//! Labels: when every CSV label of both files is a non-negative integer, it is the class and
//! classes = the largest label + 1 (as for NPY labels); otherwise the distinct label strings of
//! train and test together, sorted, become classes 0..K-1 (so "<=50K" is 0 and ">50K" is 1).
//! More than 65536 classes is refused (usually a wrong `label` column).
//!
//! Parameters (`[data.tabular]`):
//! - `train`, `test`: the .csv or .npy files of the training and test sets (required).
//! - `label` (CSV): the label column, by header name or by 0-based index ("3"); empty (default):
//!   the last column.
//! - `train_labels`, `test_labels` (NPY, required there): the .npy label files.
//! - `user` (CSV, optional): a column naming each sample's owner; its distinct values (train and
//!   test together, sorted as strings, so "u10" before "u2") become users 0..U-1, for the `natural`
//!   partition (one client per user; the default partition, with `clients = 0` meaning one per
//!   user, when `user` is set). Empty (default): no users, and the default partition is `iid`.
//! - `header` (CSV, default true): the first row holds the column names.
//! - `standardize` (default false): z-score every feature with the training set's mean and
//!   (population) standard deviation, applied to both sets; a constant feature has std 1 and
//!   becomes 0.
//!
//! ```toml
//! [data]
//! name = "tabular"
//! clients = 10
//! [data.tabular]
//! train = "data/adult_train.csv"
//! test = "data/adult_test.csv"
//! label = "income"
//! standardize = true
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use fedkit_core::{Dataset, Error, Result, npy};
use serde::{Deserialize, Serialize};

/// Config section of the parameters.
const SECTION: &str = "data.tabular";

/// Most classes accepted (a larger integer label is most likely not a label).
const MAX_CLASSES: usize = 1 << 16;

/// Header names shown when a column name is not found.
const SHOWN_COLUMNS: usize = 20;

/// The `[data.tabular]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TabularParams {
    /// Training features: a .csv file (label column included) or a .npy file.
    pub train: String,
    /// Test features, in the same format as `train`.
    pub test: String,
    /// CSV: the label column, by header name or 0-based index; empty = the last column.
    pub label: String,
    /// NPY: the training labels' .npy file (shape [n]).
    pub train_labels: String,
    /// NPY: the test labels' .npy file (shape [n]).
    pub test_labels: String,
    /// CSV: a column naming each sample's user (for the `natural` partition); empty = none.
    pub user: String,
    /// CSV: the first row is a header.
    pub header: bool,
    /// Z-score the features with the training set's mean and standard deviation.
    pub standardize: bool,
}

impl Default for TabularParams {
    fn default() -> Self {
        TabularParams {
            train: String::new(),
            test: String::new(),
            label: String::new(),
            train_labels: String::new(),
            test_labels: String::new(),
            user: String::new(),
            header: true,
            standardize: false,
        }
    }
}

/// The file formats read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Npy,
}

/// The format of `path`, by its extension.
fn format_of(path: &str, key: &str) -> Result<Format> {
    let ext = Path::new(path).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("npy") => Ok(Format::Npy),
        _ => Err(Error::config(key, format!("`{path}`: expected a .csv or .npy file"))),
    }
}

/// `path`, if it is a file; else a config error at `key` naming it.
fn existing<'a>(path: &'a str, key: &str) -> Result<&'a Path> {
    let p = Path::new(path);
    if p.is_file() {
        return Ok(p);
    }
    let from = match std::env::current_dir() {
        Ok(cwd) if p.is_relative() => format!(" (relative to {})", cwd.display()),
        _ => String::new(),
    };
    Err(Error::config(key, format!("file `{path}` not found{from}")))
}

/// Load (train, test) as `p` describes.
pub fn load(p: &TabularParams) -> Result<(Dataset, Dataset)> {
    for (key, value) in [("train", &p.train), ("test", &p.test)] {
        if value.is_empty() {
            return Err(Error::config(
                format!("{SECTION}.{key}"),
                "the tabular dataset needs data.tabular.train and data.tabular.test: two .csv files (features \
                 and a label column, `label`, default the last) or two .npy feature files (with `train_labels` \
                 and `test_labels`), e.g.\n[data.tabular]\ntrain = \"data/adult_train.csv\"\n\
                 test = \"data/adult_test.csv\"\nlabel = \"income\"",
            ));
        }
    }
    let format = format_of(&p.train, &format!("{SECTION}.train"))?;
    if format_of(&p.test, &format!("{SECTION}.test"))? != format {
        return Err(Error::config(
            format!("{SECTION}.test"),
            format!("`{}` and `{}` must both be .csv or both .npy files", p.train, p.test),
        ));
    }
    let (mut train, mut test) = match format {
        Format::Csv => load_csv(p)?,
        Format::Npy => load_npy(p)?,
    };
    if train.feature_shape != test.feature_shape {
        return Err(Error::Data(format!(
            "{} has feature shape {:?} but {} has {:?}; train and test need the same features",
            p.train, train.feature_shape, p.test, test.feature_shape
        )));
    }
    if p.standardize {
        standardize(&mut train, &mut test);
    }
    Ok((train, test))
}

/// Z-score every feature of both sets with the training set's mean and population standard
/// deviation; a constant feature keeps std 1 (and becomes exactly 0).
fn standardize(train: &mut Dataset, test: &mut Dataset) {
    let d = train.feature_len();
    if d == 0 || train.is_empty() {
        return;
    }
    let n = train.len() as f64;
    let mut mean = vec![0.0f64; d];
    let (mut lo, mut hi) = (vec![f32::INFINITY; d], vec![f32::NEG_INFINITY; d]);
    for row in train.x.chunks_exact(d) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64;
            lo[j] = lo[j].min(v);
            hi[j] = hi[j].max(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0f64; d];
    for row in train.x.chunks_exact(d) {
        for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v as f64 - m).powi(2);
        }
    }
    let mut sd = Vec::with_capacity(d);
    for (((m, s), l), h) in mean.iter_mut().zip(&var).zip(&lo).zip(&hi) {
        if l == h {
            // Exactly the constant, so the feature becomes exactly 0.
            *m = *l as f64;
            sd.push(1.0);
        } else {
            sd.push((s / n).sqrt());
        }
    }
    for x in [&mut train.x, &mut test.x] {
        for row in x.chunks_exact_mut(d) {
            for ((v, m), s) in row.iter_mut().zip(&mean).zip(&sd) {
                *v = ((*v as f64 - m) / s) as f32;
            }
        }
    }
}

/// The number of classes for labels up to `max`; `what` names their source in the error.
fn classes_from(max: Option<u32>, what: &str) -> Result<usize> {
    let classes = max.map_or(0, |m| m as usize + 1);
    if classes > MAX_CLASSES {
        return Err(Error::Data(format!(
            "{what}: integer label {} means {classes} classes, more than {MAX_CLASSES}; is it the label column?",
            classes - 1
        )));
    }
    Ok(classes)
}

/// Ids of the strings of `a` and `b` in the sorted set of both, and the size of that set.
fn sorted_ids(a: &[String], b: &[String]) -> (Vec<u32>, Vec<u32>, usize) {
    let distinct: BTreeSet<&str> = a.iter().chain(b).map(String::as_str).collect();
    let ids: BTreeMap<&str, u32> = distinct.into_iter().zip(0..).collect();
    // Every string is in `ids` by construction.
    let of = |v: &[String]| -> Vec<u32> { v.iter().map(|s| ids[s.as_str()]).collect() };
    (of(a), of(b), ids.len())
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Where the label, the user and the features sit in a CSV row.
#[derive(Clone, Copy, Debug)]
struct Layout {
    width: usize,
    label: usize,
    user: Option<usize>,
}

impl Layout {
    /// Resolve `label` and `user` for rows of `width` columns.
    fn resolve(p: &TabularParams, path: &str, header: Option<&[String]>, width: usize) -> Result<Layout> {
        let needed = 2 + usize::from(!p.user.is_empty());
        if width < needed {
            return Err(Error::Data(format!(
                "{path}: {width} column(s), but at least {needed} are needed (the label{}, and a feature)",
                if needed == 3 { ", the user" } else { "" }
            )));
        }
        let label = match p.label.as_str() {
            "" => width - 1,
            spec => column(spec, &format!("{SECTION}.label"), path, header, width)?,
        };
        let user = match p.user.as_str() {
            "" => None,
            spec => Some(column(spec, &format!("{SECTION}.user"), path, header, width)?),
        };
        if user == Some(label) {
            return Err(Error::config(format!("{SECTION}.user"), format!("column {label} is also the label column")));
        }
        Ok(Layout { width, label, user })
    }
}

/// The column `spec` names (a header name, else a 0-based index).
fn column(spec: &str, key: &str, path: &str, header: Option<&[String]>, width: usize) -> Result<usize> {
    if let Some(i) = header.and_then(|h| h.iter().position(|c| c.as_str() == spec)) {
        return Ok(i);
    }
    let msg = match (spec.parse::<usize>(), header) {
        (Ok(i), _) if i < width => return Ok(i),
        (Ok(i), _) => format!("column index {i} is outside 0..{width} ({path} has {width} columns)"),
        (Err(_), Some(h)) => {
            let shown: Vec<&str> = h.iter().take(SHOWN_COLUMNS).map(String::as_str).collect();
            let more = if h.len() > SHOWN_COLUMNS { ", ..." } else { "" };
            format!("{path} has no column `{spec}`; its columns: {}{more}", shown.join(", "))
        }
        (Err(_), None) => {
            format!("`{spec}` is not a column index, and {path} has no header ({SECTION}.header = false)")
        }
    };
    Err(Error::config(key, msg))
}

/// "3 (`age`)" with a header, "3" without.
fn column_name(header: Option<&[String]>, j: usize) -> String {
    match header.and_then(|h| h.get(j)) {
        Some(name) => format!("{j} (`{name}`)"),
        None => j.to_string(),
    }
}

/// One CSV file: its features parsed, its label and user cells as text.
struct CsvPart {
    /// Header names of the feature columns, with a header.
    names: Option<Vec<String>>,
    x: Vec<f32>,
    /// Feature columns.
    d: usize,
    labels: Vec<String>,
    users: Vec<String>,
}

/// Read the CSV file `path` (the value of `key`).
fn read_csv(p: &TabularParams, path: &str, key: &str) -> Result<CsvPart> {
    let file = File::open(existing(path, key)?).map_err(|e| Error::io(path, e))?;
    let mut reader =
        csv::ReaderBuilder::new().has_headers(p.header).flexible(true).trim(csv::Trim::All).from_reader(file);
    let csv_error = |e: csv::Error| Error::Data(format!("{path}: {e}"));
    let header: Option<Vec<String>> = if p.header {
        let names: Vec<String> = reader.headers().map_err(csv_error)?.iter().map(str::to_string).collect();
        if names.is_empty() {
            return Err(Error::Data(format!("{path}: empty file (no header row; {SECTION}.header = true)")));
        }
        Some(names)
    } else {
        None
    };
    let mut layout = match &header {
        Some(h) => Some(Layout::resolve(p, path, Some(h.as_slice()), h.len())?),
        None => None,
    };
    let (mut x, mut labels, mut users) = (Vec::new(), Vec::new(), Vec::new());
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(csv_error)?;
        let row = record.position().map_or(i as u64 + 1 + u64::from(p.header), |pos| pos.line());
        let l = match layout {
            Some(l) => l,
            None => {
                let l = Layout::resolve(p, path, None, record.len())?;
                layout = Some(l);
                l
            }
        };
        if record.len() != l.width {
            let first = if header.is_some() { "the header" } else { "the first row" };
            return Err(Error::Data(format!(
                "{path}: row {row} has {} columns, but {first} has {}",
                record.len(),
                l.width
            )));
        }
        for (j, cell) in record.iter().enumerate() {
            if j == l.label {
                labels.push(cell.to_string());
            } else if l.user == Some(j) {
                users.push(cell.to_string());
            } else {
                match cell.parse::<f32>() {
                    Ok(v) if v.is_finite() => x.push(v),
                    _ => {
                        return Err(Error::Data(format!(
                            "{path}: row {row}, column {}: `{cell}` is not a finite number (a feature column; is it \
                             the label?)",
                            column_name(header.as_deref(), j)
                        )));
                    }
                }
            }
        }
    }
    let Some(l) = layout.filter(|_| !labels.is_empty()) else {
        return Err(Error::Data(format!("{path}: no data rows")));
    };
    let names: Option<Vec<String>> = header.map(|h| {
        h.into_iter().enumerate().filter(|&(j, _)| j != l.label && l.user != Some(j)).map(|(_, n)| n).collect()
    });
    Ok(CsvPart { names, x, d: l.width - 1 - usize::from(l.user.is_some()), labels, users })
}

/// Integer labels when every one is a non-negative integer, else ids of the sorted strings;
/// and the number of classes.
fn label_ids(train: &[String], test: &[String], what: &str) -> Result<(Vec<u32>, Vec<u32>, usize)> {
    let ints = |v: &[String]| -> Option<Vec<u32>> { v.iter().map(|s| s.parse::<u32>().ok()).collect() };
    if let (Some(a), Some(b)) = (ints(train), ints(test)) {
        let classes = classes_from(a.iter().chain(&b).copied().max(), what)?;
        return Ok((a, b, classes));
    }
    let (a, b, classes) = sorted_ids(train, test);
    if classes > MAX_CLASSES {
        return Err(Error::Data(format!(
            "{what}: {classes} distinct labels, more than {MAX_CLASSES}; is it the label column?"
        )));
    }
    Ok((a, b, classes))
}

/// Both CSV files.
fn load_csv(p: &TabularParams) -> Result<(Dataset, Dataset)> {
    for (key, value) in [("train_labels", &p.train_labels), ("test_labels", &p.test_labels)] {
        if !value.is_empty() {
            return Err(Error::config(
                format!("{SECTION}.{key}"),
                format!("only for .npy features; a CSV file holds its labels in a column ({SECTION}.label)"),
            ));
        }
    }
    let train = read_csv(p, &p.train, &format!("{SECTION}.train"))?;
    let test = read_csv(p, &p.test, &format!("{SECTION}.test"))?;
    if let (Some(a), Some(b)) = (&train.names, &test.names)
        && let Some(j) = a.iter().zip(b).position(|(x, y)| x != y)
    {
        return Err(Error::Data(format!(
            "{} has feature column `{}` where {} has `{}`; train and test need the same feature columns in the \
             same order",
            p.test, b[j], p.train, a[j]
        )));
    }
    let (y_train, y_test, classes) =
        label_ids(&train.labels, &test.labels, &format!("the label column of {} and {}", p.train, p.test))?;
    let (u_train, u_test) = if p.user.is_empty() {
        (None, None)
    } else {
        let (a, b, _) = sorted_ids(&train.users, &test.users);
        (Some(a), Some(b))
    };
    let dataset = |part: CsvPart, y: Vec<u32>, users: Option<Vec<u32>>, name: &str| Dataset {
        name: format!("tabular/{name}"),
        x: part.x,
        y,
        feature_shape: vec![part.d],
        classes,
        users,
        targets: Vec::new(),
    };
    Ok((dataset(train, y_train, u_train, "train"), dataset(test, y_test, u_test, "test")))
}

// ---------------------------------------------------------------------------------------------
// NPY

/// The features and labels of one split (`part` = "train" or "test"); `classes` is left 0.
fn read_npy_pair(features: &str, labels: &str, part: &str) -> Result<Dataset> {
    let labels_key = format!("{SECTION}.{part}_labels");
    if labels.is_empty() {
        return Err(Error::config(
            labels_key,
            format!("required with .npy features: the .npy file of the {part} labels, shape [n]"),
        ));
    }
    let a = npy::read(existing(features, &format!("{SECTION}.{part}"))?)?;
    let l = npy::read(existing(labels, &labels_key)?)?;
    if a.shape.len() < 2 || a.shape[1..].contains(&0) {
        return Err(Error::Data(format!(
            "{features}: shape {:?}; features need shape [n, d] (or [n, d1, d2, ...])",
            a.shape
        )));
    }
    if !matches!(l.shape[..], [_] | [_, 1]) {
        return Err(Error::Data(format!("{labels}: shape {:?}; labels need shape [n]", l.shape)));
    }
    let n = a.shape[0];
    if l.shape[0] != n {
        return Err(Error::Data(format!("{features} holds {n} samples but {labels} holds {} labels", l.shape[0])));
    }
    if n == 0 {
        return Err(Error::Data(format!("{features}: no samples")));
    }
    let y = l.to_labels().map_err(|e| Error::Data(format!("{labels}: {e}")))?;
    let x = a.to_f32();
    let d = x.len() / n;
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::Data(format!(
            "{features}: sample {}, feature {}: {} is not a finite number",
            i / d,
            i % d,
            x[i]
        )));
    }
    Ok(Dataset {
        name: format!("tabular/{part}"),
        x,
        y,
        feature_shape: a.shape[1..].to_vec(),
        classes: 0,
        users: None,
        targets: Vec::new(),
    })
}

/// Both NPY splits.
fn load_npy(p: &TabularParams) -> Result<(Dataset, Dataset)> {
    for (key, value) in [("label", &p.label), ("user", &p.user)] {
        if !value.is_empty() {
            return Err(Error::config(
                format!("{SECTION}.{key}"),
                format!(
                    "only for CSV files; .npy features take their labels from {SECTION}.train_labels and \
                     {SECTION}.test_labels, and have no users"
                ),
            ));
        }
    }
    let mut train = read_npy_pair(&p.train, &p.train_labels, "train")?;
    let mut test = read_npy_pair(&p.test, &p.test_labels, "test")?;
    let max = train.y.iter().chain(&test.y).copied().max();
    let classes = classes_from(max, &format!("{} and {}", p.train_labels, p.test_labels))?;
    train.classes = classes;
    test.classes = classes;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::tests::temp_dir;
    use fedkit_core::npy::{Npy, NpyData};
    use std::path::PathBuf;

    /// Write `text` to `dir/name`, returning the path as a string.
    fn file(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn params(train: &str, test: &str) -> TabularParams {
        TabularParams { train: train.into(), test: test.into(), ..TabularParams::default() }
    }

    fn err(p: &TabularParams) -> String {
        load(p).unwrap_err().to_string()
    }

    #[test]
    fn params_parse_with_defaults() {
        let p: TabularParams = toml::from_str("train = \"a.csv\"\ntest = \"b.csv\"\nlabel = \"3\"").unwrap();
        assert_eq!((p.label.as_str(), p.header, p.standardize, p.user.as_str()), ("3", true, false, ""));
        assert!(toml::from_str::<TabularParams>("trian = \"a.csv\"").is_err());
    }

    #[test]
    fn csv_string_labels_by_header_name() {
        let dir = temp_dir("tabular-strings");
        let train = file(&dir, "train.csv", "age,city,income,hours\n39,1.5,<=50K,40\n50,-2,>50K,13\n38, 0 ,<=50K,40\n");
        let test = file(&dir, "test.csv", "age,city,income,hours\n28,3,>50K,45\n44,0.25,?,60\n");
        let p = TabularParams { label: "income".into(), ..params(&train, &test) };
        let (tr, te) = load(&p).unwrap();
        tr.validate().unwrap();
        te.validate().unwrap();
        assert_eq!((tr.name.as_str(), te.name.as_str()), ("tabular/train", "tabular/test"));
        assert_eq!((tr.feature_shape.clone(), tr.classes, te.classes), (vec![3], 3, 3));
        // Sorted over train and test: "<=50K" = 0, ">50K" = 1, "?" = 2.
        assert_eq!((tr.y.clone(), te.y.clone()), (vec![0, 1, 0], vec![1, 2]));
        assert_eq!(tr.x, [39.0, 1.5, 40.0, 50.0, -2.0, 13.0, 38.0, 0.0, 40.0]);
        assert_eq!(te.features(1), [44.0, 0.25, 60.0]);
        assert!(tr.users.is_none() && te.users.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn csv_integer_labels_by_index_without_header() {
        let dir = temp_dir("tabular-ints");
        let train = file(&dir, "train.csv", "2,1.0,2\n0,3,4\n1,5,6\n");
        let test = file(&dir, "test.csv", "4,7,8\n");
        let p = TabularParams { label: "0".into(), header: false, ..params(&train, &test) };
        let (tr, te) = load(&p).unwrap();
        assert_eq!((tr.y.clone(), te.y.clone(), tr.classes), (vec![2, 0, 1], vec![4], 5));
        assert_eq!(tr.x, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(te.x, [7.0, 8.0]);
        // Default label column: the last one; all integers.
        let p = TabularParams { header: false, ..params(&train, &test) };
        let (tr, _) = load(&p).unwrap();
        assert_eq!((tr.y.clone(), tr.classes, tr.x.clone()), (vec![2, 4, 6], 9, vec![2.0, 1.0, 0.0, 3.0, 1.0, 5.0]));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn csv_user_column_maps_sorted_names() {
        let dir = temp_dir("tabular-users");
        let train = file(&dir, "train.csv", "client,x,y\nu2,1,0\nu10,2,1\nu2,3,1\nu1,4,0\n");
        let test = file(&dir, "test.csv", "client,x,y\nu3,5,1\nu1,6,0\n");
        let p = TabularParams { user: "client".into(), label: "y".into(), ..params(&train, &test) };
        let (tr, te) = load(&p).unwrap();
        tr.validate().unwrap();
        // Sorted as strings: u1 = 0, u10 = 1, u2 = 2, u3 = 3.
        assert_eq!(tr.users.as_deref(), Some(&[2, 1, 2, 0][..]));
        assert_eq!(te.users.as_deref(), Some(&[3, 0][..]));
        assert_eq!((tr.feature_shape.clone(), tr.x.clone(), tr.classes), (vec![1], vec![1.0, 2.0, 3.0, 4.0], 2));
        let p = TabularParams { user: "y".into(), label: "y".into(), ..params(&train, &test) };
        assert!(err(&p).contains("data.tabular.user"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn standardize_uses_training_statistics() {
        let dir = temp_dir("tabular-std");
        let train = file(&dir, "train.csv", "a,b,label\n1,7,0\n2,7,1\n3,7,0\n4,7,1\n");
        let test = file(&dir, "test.csv", "a,b,label\n5,8,0\n");
        let p = TabularParams { standardize: true, ..params(&train, &test) };
        let (tr, te) = load(&p).unwrap();
        // Column a: mean 2.5, population std sqrt(1.25); column b is constant (std 1).
        let s = 1.25f64.sqrt();
        let want: Vec<f32> = [1.0f64, 2.0, 3.0, 4.0].iter().flat_map(|a| [((a - 2.5) / s) as f32, 0.0]).collect();
        for (got, want) in tr.x.iter().zip(&want) {
            assert!((got - want).abs() < 1e-6, "{:?} vs {want:?}", tr.x);
        }
        assert_eq!(tr.x.iter().skip(1).step_by(2).copied().collect::<Vec<_>>(), [0.0; 4]);
        assert!((te.x[0] - (2.5 / s) as f32).abs() < 1e-6 && te.x[1] == 1.0, "{:?}", te.x);
        let mean: f32 = tr.x.iter().step_by(2).sum::<f32>() / 4.0;
        let var: f32 = tr.x.iter().step_by(2).map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{mean} {var}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn npy_features_and_labels() {
        let dir = temp_dir("tabular-npy");
        let write = |name: &str, shape: Vec<usize>, data: NpyData| -> String {
            let path: PathBuf = dir.join(name);
            npy::write(&path, &Npy { shape, data }).unwrap();
            path.to_str().unwrap().to_string()
        };
        let xtr = write("xtr.npy", vec![3, 2, 2], NpyData::F32((0..12).map(|v| v as f32 / 2.0).collect()));
        let ytr = write("ytr.npy", vec![3], NpyData::I64(vec![0, 2, 1]));
        let xte = write("xte.npy", vec![1, 2, 2], NpyData::F64(vec![1.0, -1.0, 0.5, 4.0]));
        let yte = write("yte.npy", vec![1], NpyData::U8(vec![5]));
        let p = TabularParams { train_labels: ytr, test_labels: yte, ..params(&xtr, &xte) };
        let (tr, te) = load(&p).unwrap();
        tr.validate().unwrap();
        te.validate().unwrap();
        assert_eq!((tr.feature_shape.clone(), tr.len(), te.len(), tr.classes, te.classes), (vec![2, 2], 3, 1, 6, 6));
        assert_eq!((tr.y.clone(), te.y.clone()), (vec![0, 2, 1], vec![5]));
        assert_eq!(tr.features(1), [2.0, 2.5, 3.0, 3.5]);
        assert_eq!(te.x, [1.0, -1.0, 0.5, 4.0]);
        // Sample counts that disagree name both files.
        let short = write("short.npy", vec![2], NpyData::I64(vec![0, 1]));
        let e = err(&TabularParams { train_labels: short.clone(), ..p.clone() });
        assert!(e.contains(&xtr) && e.contains(&short) && e.contains("3 samples") && e.contains("2 labels"), "{e}");
        // Labels are required, and the CSV-only keys are refused.
        let e = err(&TabularParams { test_labels: String::new(), ..p.clone() });
        assert!(e.contains("data.tabular.test_labels") && e.contains("required"), "{e}");
        let e = err(&TabularParams { label: "3".into(), ..p.clone() });
        assert!(e.contains("data.tabular.label") && e.contains("only for CSV"), "{e}");
        // Negative labels and mismatched feature shapes.
        let neg = write("neg.npy", vec![1], NpyData::I32(vec![-1]));
        assert!(err(&TabularParams { test_labels: neg, ..p.clone() }).contains("not a non-negative integer"));
        let flat = write("flat.npy", vec![1, 3], NpyData::F32(vec![0.0; 3]));
        let e = err(&TabularParams { test: flat, ..p.clone() });
        assert!(e.contains("[2, 2]") && e.contains("[3]") && e.contains("same features"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn csv_errors_name_the_place() {
        let dir = temp_dir("tabular-errors");
        let good = file(&dir, "good.csv", "a,b,y\n1,2,0\n3,4,1\n");
        // A non-numeric cell: row 3 (the header is row 1), column 1 (`b`).
        let bad = file(&dir, "bad.csv", "a,b,y\n1,2,0\n3,abc,1\n");
        let e = err(&params(&bad, &good));
        assert!(e.contains("bad.csv") && e.contains("row 3, column 1 (`b`)") && e.contains("`abc`"), "{e}");
        let nan = file(&dir, "nan.csv", "a,b,y\n1,NaN,0\n");
        assert!(err(&params(&good, &nan)).contains("row 2, column 1"));
        // Ragged rows.
        let ragged = file(&dir, "ragged.csv", "a,b,y\n1,2,0\n3,4,1\n5,1\n");
        let e = err(&params(&ragged, &good));
        assert!(e.contains("ragged.csv") && e.contains("row 4 has 2 columns") && e.contains("header has 3"), "{e}");
        // Missing and empty paths.
        let missing = dir.join("nothing.csv").to_str().unwrap().to_string();
        let e = err(&params(&good, &missing));
        assert!(e.contains("data.tabular.test") && e.contains(&missing) && e.contains("not found"), "{e}");
        let e = err(&params("", &good));
        assert!(e.contains("data.tabular.train") && e.contains("train = \"data/adult_train.csv\""), "{e}");
        let e = err(&params(&good, ""));
        assert!(e.contains("data.tabular.test"), "{e}");
        // An unknown label column lists the columns; an index out of range says so.
        let e = err(&TabularParams { label: "income".into(), ..params(&good, &good) });
        assert!(e.contains("data.tabular.label") && e.contains("no column `income`") && e.contains("a, b, y"), "{e}");
        let e = err(&TabularParams { label: "3".into(), ..params(&good, &good) });
        assert!(e.contains("outside 0..3"), "{e}");
        // Train and test disagree on the features.
        let other = file(&dir, "other.csv", "a,c,y\n1,2,0\n");
        let e = err(&params(&good, &other));
        assert!(e.contains("other.csv has feature column `c` where") && e.contains("good.csv has `b`"), "{e}");
        let narrow = file(&dir, "narrow.csv", "a,y\n1,0\n");
        assert!(err(&params(&good, &narrow)).contains("same features"));
        // Mixed formats, unknown extensions, labels files with CSV, no rows.
        let e = err(&params(&good, &dir.join("x.npy").to_str().unwrap().to_string()));
        assert!(e.contains("both be .csv or both .npy"), "{e}");
        assert!(err(&params(&good, "data.txt")).contains("expected a .csv or .npy file"));
        let e = err(&TabularParams { train_labels: "y.npy".into(), ..params(&good, &good) });
        assert!(e.contains("data.tabular.train_labels"), "{e}");
        let empty = file(&dir, "empty.csv", "a,b,y\n");
        assert!(err(&params(&empty, &good)).contains("no data rows"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
