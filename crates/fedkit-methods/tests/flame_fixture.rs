//! FLAME's clustering against Python's `hdbscan` (the package FLAME's code uses): the committed
//! fixture `tests/data/flame_hdbscan.json` (made by `make_flame_fixture.py`) holds 40 sets of
//! precomputed cosine distances and Python's labels with FLAME's parameters; the `hdbscan`
//! crate, as `flame` calls it, must give the same partition (labels up to renaming, the same
//! noise points).

use fedkit_methods::defenses::flame::flame_labels;

/// Labels renamed in order of first appearance (noise stays -1).
fn canonical(labels: &[i32]) -> Vec<i32> {
    let mut seen: Vec<i32> = Vec::new();
    labels
        .iter()
        .map(|&l| {
            if l < 0 {
                return -1;
            }
            match seen.iter().position(|&s| s == l) {
                Some(i) => i as i32,
                None => {
                    seen.push(l);
                    seen.len() as i32 - 1
                }
            }
        })
        .collect()
}

#[test]
fn labels_match_python_hdbscan_on_the_fixture() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/flame_hdbscan.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    let mut differ = Vec::new();
    for (k, c) in cases.iter().enumerate() {
        let n = c["n"].as_u64().unwrap() as usize;
        let d: Vec<f64> = c["distances"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let want: Vec<i32> = c["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect();
        let got = flame_labels(&d, n).unwrap();
        if canonical(&got) != canonical(&want) {
            differ.push(format!("case {k} (n = {n}): crate {got:?}, python {want:?}"));
        }
    }
    assert!(differ.is_empty(), "{} of 40 cases differ:\n{}", differ.len(), differ.join("\n"));
}
