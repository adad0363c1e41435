//! `dirichlet_label`: label-distribution skew by Dirichlet proportions (NIID-Bench's
//! "noniid-labeldir", #p_k ~ Dir(beta)).
//!
//! Follows NIID-Bench's `partition_data(partition="noniid-labeldir")`. Repeat: for each class k,
//! shuffle the class's samples, draw proportions p ~ Dir(alpha) over the clients, set p_j = 0 for
//! every client already holding at least N / clients samples, renormalise, and cut the class at
//! `(cumsum(p) * n_k)` (as integers, the last cut dropped), appending piece j to client j; until
//! the smallest client holds at least `min_size` samples. Finally each client's list is shuffled.
//! Smaller `alpha` gives more skewed label histograms (alpha = 0.1: most clients see few classes;
//! alpha = 100: nearly IID).
//!
//! Parameters:
//! - `alpha` (default 0.5): Dirichlet concentration, > 0. The NIID-Bench paper calls it beta, so
//!   `beta` is accepted as an alias.
//! - `min_size` (default 10, NIID-Bench's `min_require_size`): the smallest allowed client.
//!
//! After 1000 redraws without every client reaching `min_size` it stops with an error suggesting
//! fewer clients, a larger alpha or a smaller min_size (NIID-Bench would loop forever). If every
//! client that may still receive samples got proportion 0 (possible only for tiny alpha), the class
//! is split evenly among those clients (numpy would divide by zero there).
//!
//! ```toml
//! [data.partition]
//! use = "dirichlet_label"
//! alpha = 0.5
//! min_size = 10
//! ```

use fedkit_core::{Dataset, Error, Partitioner, Result, RngStream};
use serde::{Deserialize, Serialize};

use super::{
    MAX_REDRAWS, Params, SECTION, check_min_size, check_positive, class_indices, proportion_cuts, split_at_cuts,
};

/// The `dirichlet_label` partitioner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirichletLabel {
    /// Dirichlet concentration (the paper's beta).
    #[serde(alias = "beta")]
    pub alpha: f64,
    /// Smallest allowed client size.
    pub min_size: usize,
}

impl Default for DirichletLabel {
    fn default() -> Self {
        DirichletLabel { alpha: 0.5, min_size: 10 }
    }
}

impl Params for DirichletLabel {
    fn check(&self) -> Result<()> {
        check_positive("alpha", self.alpha)
    }
}

impl DirichletLabel {
    /// One pass over the classes (one iteration of NIID-Bench's while loop).
    fn draw(&self, by_class: &[Vec<u32>], total: usize, n: usize, rng: &mut RngStream) -> Vec<Vec<u32>> {
        let cap = total as f64 / n as f64;
        let mut batch: Vec<Vec<u32>> = vec![Vec::new(); n];
        for class in by_class {
            let mut idx_k = class.clone();
            rng.shuffle(&mut idx_k);
            let mut p = rng.dirichlet(self.alpha, n);
            let open: Vec<bool> = batch.iter().map(|b| (b.len() as f64) < cap).collect();
            p.iter_mut().zip(&open).filter(|(_, o)| !**o).for_each(|(x, _)| *x = 0.0);
            let mut sum: f64 = p.iter().sum();
            if sum <= 0.0 {
                let any_open = open.iter().any(|&o| o);
                p = open.iter().map(|&o| if o || !any_open { 1.0 } else { 0.0 }).collect();
                sum = p.iter().sum();
            }
            p.iter_mut().for_each(|x| *x /= sum);
            let cuts = proportion_cuts(&p, idx_k.len());
            for (b, part) in batch.iter_mut().zip(split_at_cuts(&idx_k, &cuts)) {
                b.extend_from_slice(part);
            }
        }
        batch
    }
}

impl Partitioner for DirichletLabel {
    fn partition(&self, data: &Dataset, n_clients: usize, rng: &mut RngStream) -> Result<Vec<Vec<u32>>> {
        check_min_size(self.min_size, n_clients, data.len())?;
        let by_class = class_indices(data);
        for _ in 0..MAX_REDRAWS {
            let mut batch = self.draw(&by_class, data.len(), n_clients, rng);
            if batch.iter().all(|b| b.len() >= self.min_size) {
                batch.iter_mut().for_each(|b| rng.shuffle(b));
                return Ok(batch);
            }
        }
        Err(Error::config(
            format!("{SECTION}.alpha"),
            format!(
                "no split gave each of {n_clients} clients at least {} samples in {MAX_REDRAWS} Dirichlet draws \
                 (alpha = {}, {} samples); use fewer clients (data.clients), a larger alpha or a smaller min_size",
                self.min_size,
                self.alpha,
                data.len()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    /// Mean over clients of the largest label share: 1/classes when balanced, 1 when one-class.
    fn mean_top_share(d: &fedkit_core::Dataset, parts: &[Vec<u32>]) -> f64 {
        let tops = parts.iter().map(|p| {
            let h = d.label_histogram(p);
            *h.iter().max().unwrap() as f64 / p.len() as f64
        });
        tops.sum::<f64>() / parts.len() as f64
    }

    #[test]
    fn disjoint_covering_min_size_deterministic() {
        let d = toy(10, 500);
        for alpha in ["0.1", "0.5", "100.0"] {
            let cfg = format!("alpha = {alpha}");
            let a = run("dirichlet_label", &cfg, &d, 20, 5).unwrap();
            assert_eq!(a.len(), 20);
            assert_disjoint(&a, d.len(), true);
            assert!(a.iter().all(|p| p.len() >= 10), "alpha {alpha}: {:?}", a.iter().map(Vec::len).collect::<Vec<_>>());
            assert_eq!(a, run("dirichlet_label", &cfg, &d, 20, 5).unwrap());
        }
    }

    #[test]
    fn small_alpha_is_much_more_skewed() {
        let d = toy(10, 500);
        let skewed = mean_top_share(&d, &run("dirichlet_label", "alpha = 0.1", &d, 10, 9).unwrap());
        let flat = mean_top_share(&d, &run("dirichlet_label", "alpha = 100.0", &d, 10, 9).unwrap());
        assert!(skewed > 0.5, "alpha 0.1: mean top share {skewed}");
        assert!(flat < 0.2, "alpha 100: mean top share {flat}");
    }

    #[test]
    fn beta_alias_and_validation() {
        let d = toy(10, 100);
        assert_eq!(
            run("dirichlet_label", "beta = 0.3", &d, 5, 1).unwrap(),
            run("dirichlet_label", "alpha = 0.3", &d, 5, 1).unwrap()
        );
        let e = make("dirichlet_label", "alpha = -1.0").err().unwrap().to_string();
        assert!(e.contains("data.partition.alpha"), "{e}");
        let e = run("dirichlet_label", "", &d, 101, 1).unwrap_err().to_string();
        assert!(e.contains("fewer clients"), "{e}");
    }

    #[test]
    fn impossible_min_size_gives_up_with_advice() {
        // 2 classes of 30, 3 clients that must hold 20 each, alpha tiny: the first class lands
        // whole on one client, which then holds 30, so another must stay under 20.
        let d = toy(2, 30);
        let e = run("dirichlet_label", "alpha = 0.0001\nmin_size = 20", &d, 3, 1).unwrap_err().to_string();
        assert!(e.contains("larger alpha"), "{e}");
    }
}
