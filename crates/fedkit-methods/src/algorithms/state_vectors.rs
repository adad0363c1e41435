//! Helpers for algorithms that keep parameter-shaped state vectors (SCAFFOLD's control variates,
//! FedDyn's dual variables): zeros until first used, nothing kept on running-statistic buffers,
//! side payloads checked against the model's shape, and exact sums over the cohort's updates.

use fedkit_core::{ClientId, Error, Extras, ParamKind, Params, Result, Update};

/// The stored vector, or zeros shaped like `like` while nothing is stored yet (`None`).
pub fn stored_or_zeros(stored: &Option<Params>, like: &Params) -> Result<Params> {
    match stored {
        Some(p) if p.len() != like.len() => {
            Err(Error::Shape(format!("stored state vector has {} values, the model {}", p.len(), like.len())))
        }
        Some(p) => Ok(p.clone()),
        None => Ok(like.zeros_like()),
    }
}

/// Set the running-statistic entries (`ParamKind::Buffer`) of `p` to zero: gradients never train
/// them, so gradient-based state vectors carry nothing there.
pub fn zero_buffers(p: &mut Params) {
    let buffers: Vec<std::ops::Range<usize>> =
        p.layout().entries().iter().filter(|e| e.kind == ParamKind::Buffer).map(|e| e.range()).collect();
    for r in buffers {
        p.as_mut_slice()[r].fill(0.0);
    }
}

/// The parameters at `key` of `extras`, checked to have the length of `like`; the error names
/// `method` and the key.
pub fn params_extra<'a>(extras: &'a Extras, key: &str, like: &Params, method: &str) -> Result<&'a Params> {
    let p = extras
        .params(key)
        .ok_or_else(|| Error::Method(format!("{method}: the payload has no parameter vector `{key}`")))?;
    if p.len() != like.len() {
        return Err(Error::Shape(format!("{method}: `{key}` has {} values, the model {}", p.len(), like.len())));
    }
    Ok(p)
}

/// The sum of `pick(u)` over the updates whose client the aggregator accepted, in f64 and in
/// client-id order (so the result does not depend on arrival order), and how many there were.
pub fn accepted_sum<'a>(
    updates: &'a [Update],
    accepted: &[ClientId],
    len: usize,
    pick: impl Fn(&'a Update) -> Result<&'a Params>,
) -> Result<(Vec<f64>, usize)> {
    let mut accepted = accepted.to_vec();
    accepted.sort_unstable();
    let mut order: Vec<&Update> = updates.iter().filter(|u| accepted.binary_search(&u.client).is_ok()).collect();
    order.sort_by_key(|u| u.client);
    let mut sum = vec![0.0f64; len];
    for u in &order {
        let v = pick(u)?;
        if v.len() != len {
            return Err(Error::Shape(format!("client {} sent {} values, expected {len}", u.client, v.len())));
        }
        sum.iter_mut().zip(v.as_slice()).for_each(|(s, x)| *s += *x as f64);
    }
    Ok((sum, order.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::{Extra, Layout, Metrics};
    use std::sync::Arc;

    fn layout() -> Arc<Layout> {
        let mut l = Layout::new();
        l.push("w", &[2], ParamKind::Weight);
        l.push("running_mean", &[1], ParamKind::Buffer);
        Arc::new(l)
    }

    fn update(client: ClientId, v: Vec<f32>) -> Update {
        let delta = Params::from_vec(layout(), v).unwrap();
        Update { client, delta, weight: 1.0, extras: Extras::default(), metrics: Metrics::new() }
    }

    #[test]
    fn sums_only_accepted_clients_whatever_the_order() {
        let ups = vec![update(5, vec![1.0, 2.0, 3.0]), update(1, vec![10.0, 20.0, 30.0]), update(3, vec![0.5; 3])];
        let (sum, n) = accepted_sum(&ups, &[5, 1], 3, |u| Ok(&u.delta)).unwrap();
        assert_eq!((sum, n), (vec![11.0, 22.0, 33.0], 2));
        let rev: Vec<Update> = ups.iter().rev().cloned().collect();
        assert_eq!(accepted_sum(&rev, &[1, 5], 3, |u| Ok(&u.delta)).unwrap().0, vec![11.0, 22.0, 33.0]);
        assert!(accepted_sum(&ups, &[1], 2, |u| Ok(&u.delta)).is_err(), "length mismatch is an error");
    }

    #[test]
    fn buffers_are_zeroed_and_missing_state_is_zero() {
        let mut p = Params::from_vec(layout(), vec![1.0, 2.0, 3.0]).unwrap();
        zero_buffers(&mut p);
        assert_eq!(p.as_slice(), &[1.0, 2.0, 0.0]);
        assert_eq!(stored_or_zeros(&None, &p).unwrap().as_slice(), &[0.0; 3]);
        assert_eq!(stored_or_zeros(&Some(p.clone()), &p).unwrap(), p);
        let mut e = Extras::default();
        e.insert("c", Extra::Params(p.clone()));
        assert!(params_extra(&e, "c", &p, "m").is_ok());
        assert!(params_extra(&e, "d", &p, "m").is_err());
    }
}
