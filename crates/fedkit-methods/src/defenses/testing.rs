//! Fixtures for the aggregator tests: updates from plain vectors and a round context.

use std::sync::Arc;

use fedkit_core::{Extras, Layout, Metrics, ParamKind, Params, RoundCtx, Update};

/// The update of `client` with delta `v` and weight `weight`.
pub fn update(client: u32, v: &[f32], weight: f32) -> Update {
    let mut l = Layout::new();
    l.push("w", &[v.len()], ParamKind::Weight);
    let delta = Params::from_vec(Arc::new(l), v.to_vec()).unwrap();
    Update { client, delta, weight, extras: Extras::default(), metrics: Metrics::new() }
}

/// A round context of round 1 over a population of 64 honest clients (leaked: tests only).
pub fn ctx() -> RoundCtx<'static> {
    ctx_with(1, &[])
}

/// A round context of `round` in which the clients `bad` are malicious.
pub fn ctx_with(round: u32, bad: &[u32]) -> RoundCtx<'static> {
    let mut malicious = vec![false; 64];
    bad.iter().for_each(|&b| malicious[b as usize] = true);
    let global: &'static Params = Box::leak(Box::new(update(0, &[0.0], 1.0).delta));
    RoundCtx {
        round,
        cohort: &[],
        global,
        seed: 3,
        population: 64,
        malicious: Box::leak(malicious.into_boxed_slice()),
        draws: &[],
    }
}
