//! Shared by the agnostic / distributionally robust algorithms (`afl`, `drfa`): the mixture
//! weights lambda over the clients (a point of the probability simplex), their metrics, and
//! checks of the updates they read.

use fedkit_core::{Error, Metrics, Result, Update};

/// lambda, initialised to the uniform mixture over `n` clients when empty; an error when it was
/// made for another number of clients.
pub fn mixture_weights(lambda: &mut Vec<f64>, n: usize) -> Result<&mut Vec<f64>> {
    if n == 0 {
        return Err(Error::Method("mixture weights over no clients".into()));
    }
    if lambda.is_empty() {
        *lambda = vec![1.0 / n as f64; n];
    }
    if lambda.len() != n {
        return Err(Error::Method(format!(
            "the mixture weights cover {} clients but the federation has {n}",
            lambda.len()
        )));
    }
    Ok(lambda)
}

/// `lambda_max`, `lambda_entropy` (-sum lambda ln lambda; ln N for the uniform mixture) and
/// `worst_client_loss` (the largest loss among those observed this round).
pub fn mixture_metrics(lambda: &[f64], losses: impl Iterator<Item = f64>) -> Metrics {
    let mut m = Metrics::new();
    m.insert("lambda_max".into(), lambda.iter().copied().fold(0.0, f64::max));
    m.insert("lambda_entropy".into(), -lambda.iter().filter(|&&l| l > 0.0).map(|l| l * l.ln()).sum::<f64>());
    m.insert("worst_client_loss".into(), losses.fold(f64::NEG_INFINITY, f64::max));
    m
}

/// The updates sorted by client id (sums in a fixed order), each id checked to be below `n`.
pub fn by_client(updates: &[Update], n: usize) -> Result<Vec<&Update>> {
    let mut order: Vec<&Update> = updates.iter().collect();
    order.sort_by_key(|u| u.client);
    if let Some(u) = order.last().filter(|u| u.client as usize >= n) {
        return Err(Error::Method(format!("update from client {} outside the federation of {n}", u.client)));
    }
    Ok(order)
}

/// Check a mixture step size: finite and positive.
pub fn check_step(key: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(Error::config(key, format!("must be a finite number > 0, got {v}")));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests_support {
    //! Updates and clients for the tests of `afl` and `drfa`, on `testing::LinReg::new(2)`.
    use fedkit_core::{ClientData, Extras, Metrics, Params, RngStream, Update};

    use crate::algorithms::testing::{LinReg, dataset, split};

    /// Parameters (w1, w2, b) of `LinReg::new(2)`.
    pub fn params(v: [f32; 3]) -> Params {
        LinReg::new(2).params(&v[..2], v[2])
    }

    /// An update of `client` with `delta`, weight `weight`, one local step and, when given,
    /// metric `loss_at_global`.
    pub fn update(client: u32, delta: [f32; 3], weight: f32, loss: Option<f64>) -> Update {
        let mut metrics = Metrics::new();
        if let Some(l) = loss {
            metrics.insert("loss_at_global".into(), l);
        }
        metrics.insert("steps".into(), 1.0);
        Update { client, delta: params(delta), weight, extras: Extras::default(), metrics }
    }

    /// One client per entry of `labels`, holding `samples` samples of that label with N(0, 1)
    /// features: at w = 0 client k's loss is labels[k]^2 / 2.
    pub fn labelled_clients(labels: &[u32], samples: usize) -> Vec<ClientData> {
        let mut rng = RngStream::new(5);
        let x: Vec<Vec<f32>> =
            (0..labels.len() * samples).map(|_| vec![rng.normal() as f32, rng.normal() as f32]).collect();
        let y: Vec<u32> = labels.iter().flat_map(|&l| std::iter::repeat_n(l, samples)).collect();
        split(&dataset(&x, &y), &vec![samples; labels.len()])
    }
}
