//! `natural`: one client per natural user of the dataset (FedProx's per-device split).
//!
//! For datasets that record which user produced each sample (`synthetic`, following FedProx's
//! `generate_synthetic.py`, where user k's data come from its own model), client i is the i-th
//! distinct user id in ascending order and holds exactly that user's training samples. This is the
//! default partition for `synthetic`. `data.clients` must equal the number of users, or be 0
//! (meaning exactly that). Errors for datasets without users (use `iid` or another partition).
//! No parameters.
//!
//! ```toml
//! [data]
//! name = "synthetic"
//! clients = 0
//! [data.partition]
//! use = "natural"
//! ```

use std::collections::BTreeMap;

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{Params, SECTION};

/// The `natural` partitioner (no parameters).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Natural {}

impl Params for Natural {}

impl Partitioner for Natural {
    fn partition(&self, data: &Dataset, n_clients: usize, _rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        let users = data.users.as_ref().ok_or_else(|| {
            Error::config(
                format!("{SECTION}.use"),
                format!(
                    "`natural` needs a dataset with users (e.g. synthetic), but {} has none; \
                     choose another partition, e.g. use = \"iid\"",
                    data.name
                ),
            )
        })?;
        let mut by_user: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (i, &u) in users.iter().enumerate() {
            by_user.entry(u).or_default().push(i as u32);
        }
        if n_clients != by_user.len() {
            return Err(Error::config(
                "data.clients",
                format!(
                    "the `natural` partition gives one client per user: {} has {} users, but data.clients = {n_clients}; \
                     set data.clients = {} or 0",
                    data.name,
                    by_user.len(),
                    by_user.len()
                ),
            ));
        }
        Ok(by_user.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn one_client_per_user_in_user_order() {
        let mut d = toy(3, 10);
        d.users = Some((0..30).map(|i| [7, 2, 5][i % 3]).collect());
        let a = run("natural", "", &d, 3, 0).unwrap();
        assert_disjoint(&a, d.len(), true);
        let users = d.users.as_ref().unwrap();
        for (p, u) in a.iter().zip([2, 5, 7]) {
            assert_eq!(p.len(), 10);
            assert!(p.iter().all(|&i| users[i as usize] == u));
        }
    }

    #[test]
    fn wrong_count_or_no_users_is_rejected() {
        let mut d = toy(3, 10);
        let e = run("natural", "", &d, 3, 0).unwrap_err().to_string();
        assert!(e.contains("iid"), "{e}");
        d.users = Some(vec![0; 30]);
        let e = run("natural", "", &d, 3, 0).unwrap_err().to_string();
        assert!(e.contains("data.clients") && e.contains("1 users"), "{e}");
    }
}
