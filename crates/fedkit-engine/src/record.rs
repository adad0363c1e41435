//! One row of `metrics.jsonl` / `metrics.csv`: named numbers in a fixed order, no wall-clock
//! fields, so the files are reproducible byte for byte.

use serde::{Deserialize, Serialize};

/// The columns every run reports, in this order; method-specific metrics follow, sorted by name.
pub const STANDARD_COLUMNS: &[&str] = &[
    "round",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "client_loss",
    "sampled",
    "participants",
    "stragglers",
    "failed",
    "accepted",
    "bytes_up",
    "bytes_down",
    "model_zeros",
    "local_acc_mean",
    "local_acc_min",
    "local_acc_p10",
    "local_loss_mean",
    "local_loss_max",
    "hessian_top",
    "val_loss",
    "val_acc",
    "train_acc_clean",
    "noisy_memorized",
    "noisy_true",
    "critical_ratio",
    "test_acc_balanced",
    "val_acc_balanced",
    "detect_tpr",
    "detect_fpr",
    "backdoor_acc",
];

/// One round's metrics, in insertion order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub values: Vec<(String, f64)>,
}

impl Record {
    /// A record for `round`.
    pub fn new(round: u32) -> Self {
        Record { values: vec![("round".into(), round as f64)] }
    }
    /// Set (or replace) a value.
    pub fn set(&mut self, key: &str, v: f64) {
        match self.values.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.values.push((key.to_string(), v)),
        }
    }
    /// A value.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
    /// The round number.
    pub fn round(&self) -> u32 {
        self.get("round").unwrap_or(0.0) as u32
    }
    /// One JSON object on one line, keys in the standard order then sorted.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.ordered().into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("\"{k}\":{}", fmt_num(v)));
        }
        out.push('}');
        out
    }
    fn ordered(&self) -> Vec<(&str, f64)> {
        let mut std: Vec<(&str, f64)> = STANDARD_COLUMNS.iter().filter_map(|c| self.get(c).map(|v| (*c, v))).collect();
        let mut rest: Vec<(&str, f64)> = self
            .values
            .iter()
            .filter(|(k, _)| !STANDARD_COLUMNS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        rest.sort_by(|a, b| a.0.cmp(b.0));
        std.extend(rest);
        std
    }
}

/// Integers without a fraction, other finite numbers in Rust's shortest round-trip form,
/// non-finite numbers as null.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "null".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// All records as CSV: the standard columns present in any record, then the others, sorted.
pub fn to_csv(records: &[Record]) -> String {
    let mut cols: Vec<String> =
        STANDARD_COLUMNS.iter().filter(|c| records.iter().any(|r| r.get(c).is_some())).map(|c| c.to_string()).collect();
    let mut extra: Vec<String> = records
        .iter()
        .flat_map(|r| r.values.iter().map(|(k, _)| k.clone()))
        .filter(|k| !STANDARD_COLUMNS.contains(&k.as_str()))
        .collect();
    extra.sort();
    extra.dedup();
    cols.extend(extra);
    let mut out = cols.join(",");
    out.push('\n');
    for r in records {
        let row: Vec<String> = cols
            .iter()
            .map(|c| r.get(c).map(fmt_num).map(|s| if s == "null" { String::new() } else { s }).unwrap_or_default())
            .collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_csv_have_a_fixed_order() {
        let mut r = Record::new(3);
        r.set("zeta", 0.5);
        r.set("test_acc", 0.25);
        r.set("bytes_up", 1024.0);
        assert_eq!(r.to_json(), "{\"round\":3,\"test_acc\":0.25,\"bytes_up\":1024,\"zeta\":0.5}");
        let mut r2 = Record::new(4);
        r2.set("train_loss", f64::NAN);
        assert_eq!(to_csv(&[r, r2]), "round,train_loss,test_acc,bytes_up,zeta\n3,,0.25,1024,0.5\n4,,,,\n");
    }
}
