//! The similarity metrics by name, and the comparisons `fedkit analyze cka` reports: a layer x
//! layer matrix between two models and Kornblith et al.'s layer-identification test (does
//! layer i of one model match layer i of another, trained from a different seed, best?).

use fedkit_core::{Error, Result};
use serde::Serialize;

use super::representation::Representation;
use super::{cca, cka, procrustes};

/// A representation-similarity metric; every one is a similarity in [0, 1] (1: the same
/// representation up to the metric's invariances).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Linear CKA ([`cka`]).
    Cka,
    /// RBF CKA ([`cka`]), bandwidth [`Options::rbf_sigma`].
    RbfCka,
    /// CCA's mean correlation rho-bar ([`cca`]).
    Cca,
    /// CCA's mean squared correlation R^2_CCA ([`cca`]).
    CcaR2,
    /// SVCCA ([`cca`]), [`Options::svcca_share`] of the variance.
    Svcca,
    /// PWCCA ([`cca`]).
    Pwcca,
    /// The Procrustes similarity ||X^T Y||_* ([`procrustes`]); distance 2 - 2 x it.
    Procrustes,
}

/// Parameters of the metrics that have them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Options {
    /// RBF CKA's sigma as a fraction of the median distance (Kornblith et al.'s demo: 0.5).
    pub rbf_sigma: f64,
    /// SVCCA's share of variance kept (Raghu et al.: 0.99).
    pub svcca_share: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { rbf_sigma: 0.5, svcca_share: 0.99 }
    }
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 7] =
        [Metric::Cka, Metric::RbfCka, Metric::Cca, Metric::CcaR2, Metric::Svcca, Metric::Pwcca, Metric::Procrustes];

    /// The metric's name (`--metric` value).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cka => "cka",
            Metric::RbfCka => "rbf_cka",
            Metric::Cca => "cca",
            Metric::CcaR2 => "cca_r2",
            Metric::Svcca => "svcca",
            Metric::Pwcca => "pwcca",
            Metric::Procrustes => "procrustes",
        }
    }

    /// The metric named `s`; the error lists the names.
    pub fn parse(s: &str) -> Result<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            Error::config("--metric", format!("unknown metric {s:?}: one of {}, or all", names.join(", ")))
        })
    }

    /// The similarity of `a` and `b` (representations of the same probe samples).
    pub fn similarity(self, a: &Representation, b: &Representation, o: &Options) -> Result<f64> {
        if a.n() != b.n() {
            return Err(Error::Shape(format!("representations of {} and {} samples", a.n(), b.n())));
        }
        match self {
            Metric::Cka => Ok(cka::linear_cka(a, b)),
            Metric::RbfCka => Ok(cka::rbf_cka(a, b, o.rbf_sigma)),
            Metric::Cca => cca::mean_cca(a, b),
            Metric::CcaR2 => cca::mean_squared_cca(a, b),
            Metric::Svcca => cca::svcca(a, b, o.svcca_share),
            Metric::Pwcca => cca::pwcca(a, b),
            Metric::Procrustes => procrustes::procrustes_similarity(a, b),
        }
    }
}

/// The `a.len() x b.len()` matrix (row-major) of `metric` between every layer of `a` and every
/// layer of `b`.
pub fn layer_matrix(metric: Metric, a: &[Representation], b: &[Representation], o: &Options) -> Result<Vec<f64>> {
    let mut m = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            m.push(metric.similarity(x, y, o)?);
        }
    }
    Ok(m)
}

/// How many of the `rows` layers of a square layer x layer `matrix` are most similar to the
/// layer of the same index (Kornblith et al.'s Table 2 counts these); ties count as misses.
pub fn identified(matrix: &[f64], rows: usize) -> usize {
    (0..rows)
        .filter(|&i| {
            let row = &matrix[i * rows..(i + 1) * rows];
            (0..rows).all(|j| j == i || row[j] < row[i])
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_identification_counts_strict_maxima() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.name()).unwrap(), m);
        }
        let e = Metric::parse("cka2").unwrap_err().to_string();
        assert!(e.contains("--metric") && e.contains("rbf_cka"), "{e}");
        // rows: layer 0 matches 0, layer 1 ties, layer 2 prefers 1
        let m = [0.9, 0.1, 0.2, 0.5, 0.5, 0.1, 0.3, 0.8, 0.7];
        assert_eq!(identified(&m, 3), 1);
    }
}
