//! `synthetic_feature`: FCUBE's real feature-skew split into 4 clients (NIID-Bench's "real"
//! partition of the generated FCUBE data).
//!
//! NIID-Bench generates FCUBE location by location (1000 points each) and gives location i to
//! party i, so each client's points lie in one pair of mirrored octants: the same labels, different
//! feature regions. This partitioner recovers that assignment from the features alone, whatever the
//! sample order: a point with x1 > 0 goes to client `2 * (x2 < 0) + (x3 < 0)`; any other point (the
//! mirror image -p of a generated point p) goes to the client of its mirror, `2 * (-x2 < 0) +
//! (-x3 < 0)`. Signs are read from the sign bit, so the +-0.0 of a zero uniform draw land where
//! NIID-Bench puts them. A point and its mirror image always go to the same client, so each client
//! holds one octant of label 0 and the opposite octant of label 1, half of each label.
//!
//! Requires samples of exactly 3 features (FCUBE: `[data] name = "fcube"`) and `data.clients = 4`.
//! No parameters.
//!
//! ```toml
//! [data]
//! name = "fcube"
//! clients = 4
//! [data.partition]
//! use = "synthetic_feature"
//! ```

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, SECTION};

/// The `synthetic_feature` partitioner (no parameters).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticFeature {}

impl Params for SyntheticFeature {}

/// The FCUBE location (0..4) of a 3-D point, see the module docs.
fn location(x: &[f32]) -> usize {
    let flip = x[0].is_sign_negative();
    let neg = |v: f32| usize::from(v.is_sign_negative() != flip);
    2 * neg(x[1]) + neg(x[2])
}

impl Partitioner for SyntheticFeature {
    fn partition(&self, data: &Dataset, n_clients: usize, _rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        if data.feature_len() != 3 {
            return Err(Error::config(
                format!("{SECTION}.use"),
                format!(
                    "`synthetic_feature` needs 3-D points (data.name = \"fcube\"), but {} has feature shape {:?}",
                    data.name, data.feature_shape
                ),
            ));
        }
        if n_clients != 4 {
            return Err(Error::config(
                "data.clients",
                format!(
                    "the `synthetic_feature` partition makes exactly 4 clients; set data.clients = 4 (got {n_clients})"
                ),
            ));
        }
        let mut out = vec![Vec::new(); 4];
        for i in 0..data.len() {
            out[location(data.features(i))].push(i as u32);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use fedkit_core::RngStream;

    #[test]
    fn recovers_niid_bench_locations_with_mirrors_together() {
        let (train, _) = crate::fcube::generate(&mut RngStream::new(3));
        let a = run("synthetic_feature", "", &train, 4, 0).unwrap();
        assert_disjoint(&a, train.len(), true);
        for (c, p) in a.iter().enumerate() {
            // NIID-Bench's "real" split: array_split of 0..4000 into 4 consecutive blocks.
            let want: Vec<u32> = (c as u32 * 1000..(c as u32 + 1) * 1000).collect();
            assert_eq!(p, &want);
            assert_eq!(train.label_histogram(p), [500, 500]);
        }
        for i in 0..train.len() {
            let mirror: Vec<f32> = train.features(i).iter().map(|v| -v).collect();
            assert_eq!(super::location(train.features(i)), super::location(&mirror));
        }
    }

    #[test]
    fn wrong_shape_or_client_count_is_rejected() {
        let (train, _) = crate::fcube::generate(&mut RngStream::new(3));
        let e = run("synthetic_feature", "", &train, 5, 0).unwrap_err().to_string();
        assert!(e.contains("data.clients") && e.contains('4'), "{e}");
        let e = run("synthetic_feature", "", &toy(2, 10), 4, 0).unwrap_err().to_string();
        assert!(e.contains("fcube"), "{e}");
    }
}
