//! `fedkit fairness RUN --standalone RUN0`: collaborative fairness as the RFFL paper measures
//! it (Xu and Lyu, FL-ICML 2021, section 4; Lyu et al., "Collaborative Fairness in Federated
//! Learning", 2020): the Pearson correlation between every client's contribution, the local
//! accuracy of the model it trains alone (a run of `algorithm.use = "local"`), and its reward,
//! the local accuracy of its model at the end of the federated run. Both come from the last line
//! of each run's `local_eval.jsonl` (`[eval] clients = true`); clients are matched by id and
//! `--exclude` leaves some out (the paper correlates the honest clients only).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Each client's local accuracy at the last evaluation of `dir/local_eval.jsonl`.
fn final_local_acc(dir: &Path) -> Result<(u64, BTreeMap<u64, f64>)> {
    let p = dir.join("local_eval.jsonl");
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("cannot read {} (runs need [eval] clients = true)", p.display()))?;
    let line = text.lines().rfind(|l| !l.trim().is_empty()).with_context(|| format!("{} is empty", p.display()))?;
    let v: Value = serde_json::from_str(line).with_context(|| format!("{}: the last line is not JSON", p.display()))?;
    let (Some(round), Some(ids), Some(acc)) = (v["round"].as_u64(), v["clients"].as_array(), v["acc"].as_array())
    else {
        bail!("{}: the last line lacks `round`, `clients` or `acc`", p.display());
    };
    if ids.len() != acc.len() {
        bail!("{}: {} clients but {} accuracies", p.display(), ids.len(), acc.len());
    }
    let map = ids.iter().zip(acc).filter_map(|(c, a)| Some((c.as_u64()?, a.as_f64()?))).collect();
    Ok((round, map))
}

/// The Pearson correlation of paired values (None when either side has no spread).
pub fn pearson(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len() as f64;
    if xs.len() < 2 || xs.len() != ys.len() {
        return None;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// The fairness table and correlation of `run` against `standalone`, as Markdown.
pub fn report(run: &Path, standalone: &Path, exclude: &[u64]) -> Result<String> {
    let (r1, rewards) = final_local_acc(run)?;
    let (r0, contributions) = final_local_acc(standalone)?;
    let ids: Vec<u64> =
        rewards.keys().copied().filter(|c| contributions.contains_key(c) && !exclude.contains(c)).collect();
    if ids.len() < 2 {
        bail!(
            "{} and {} share {} evaluated client(s) after --exclude; the correlation needs at least 2",
            run.display(),
            standalone.display(),
            ids.len()
        );
    }
    let xs: Vec<f64> = ids.iter().map(|c| contributions[c]).collect();
    let ys: Vec<f64> = ids.iter().map(|c| rewards[c]).collect();
    let mut md = format!(
        "Collaborative fairness: {} (round {r1}) against standalone {} (round {r0}), {} clients\n\n| client | standalone_acc | final_acc |\n|---|---|---|\n",
        run.display(),
        standalone.display(),
        ids.len()
    );
    for ((c, x), y) in ids.iter().zip(&xs).zip(&ys) {
        md += &format!("| {c} | {x:.4} | {y:.4} |\n");
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    md += &format!("\nmean final_acc {:.4} (standalone {:.4})\n", mean(&ys), mean(&xs));
    md += &match pearson(&xs, &ys) {
        Some(r) => format!("fairness (Pearson r of standalone and final accuracy): {r:.4}\n"),
        None => "fairness: undefined (every client has the same accuracy in one of the runs)\n".into(),
    };
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_matches_hand_computed_values() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        // x = 1..4, y = (1, 3, 2, 4): sxy = 4, sxx = syy = 5.
        assert!((pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn clients_are_matched_by_id_and_excluded_ones_left_out() {
        let dir = std::env::temp_dir().join(format!("fedkit-fairness-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            a.join("local_eval.jsonl"),
            "{\"round\":5,\"clients\":[0,1,2,3],\"acc\":[0.5,0.6,0.7,0.1],\"loss\":[]}\n",
        )
        .unwrap();
        std::fs::write(
            b.join("local_eval.jsonl"),
            "{\"round\":5,\"clients\":[1,2,3,0],\"acc\":[0.3,0.4,0.9,0.2],\"loss\":[]}\n",
        )
        .unwrap();
        let md = report(&a, &b, &[3]).unwrap();
        assert!(md.contains("3 clients") && md.contains("Pearson r of standalone and final accuracy): 1.0000"), "{md}");
        assert!(report(&a, &b, &[0, 1, 2]).is_err());
        assert!(report(&a, &dir.join("missing"), &[]).unwrap_err().to_string().contains("clients = true"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
