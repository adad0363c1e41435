//! Secure aggregation inside a round (`[secure_aggregation]`, issue 10): the engine's side of
//! `fedkit_privacy::secagg`.

use fedkit_core::{Aggregate, Error, Extras, Metrics, Params, Result, RngStream, RoundCtx, Update, Weighting};

use crate::config::{EntropySource, RunConfig, SecAggProtocol};
use crate::record::Record;

/// Secure aggregation of a round's updates (`[secure_aggregation]`): every client fixed-point
/// encodes its update and runs SecAgg / SecAgg+ with the server in process; the server learns
/// the sum of the clients that sent masked input and returns their uniform mean. A phase's
/// clients run on `threads` threads (the engine's worker count). Client secrets come from the
/// run seed (simulation only) or from the OS (`entropy = "os"`).
pub(crate) fn secure_aggregate(
    cfg: &RunConfig,
    r: &RoundCtx,
    global: &Params,
    ups: &[Update],
    rec: &mut Record,
    threads: usize,
) -> Result<Aggregate> {
    use fedkit_core::ClientId;
    use fedkit_core::protocol::Faults;
    use fedkit_privacy::secagg::{self, Encoding};
    let sa = &cfg.secure_aggregation;
    if let Some(u) = ups.iter().find(|u| !u.extras.0.is_empty()) {
        let key = u.extras.0.keys().next().cloned().unwrap_or_default();
        return Err(Error::config(
            "secure_aggregation.use",
            format!(
                "client {} sends `{key}` beside its update, which secure aggregation would reveal: use an algorithm and stages without client extras",
                u.client
            ),
        ));
    }
    let n = ups.len();
    let neighbours = match sa.protocol {
        SecAggProtocol::SecaggPlus if sa.neighbours > 0 => sa.neighbours,
        SecAggProtocol::SecaggPlus => {
            let k = (3.0 * (n.max(2) as f64).log2()).ceil() as usize;
            k + k % 2
        }
        _ => 0,
    };
    let params = secagg::Params {
        len: global.len(),
        threshold: sa.threshold,
        neighbours,
        round_seed: RngStream::derive(cfg.seed, "secagg_graph", r.round as u64, 0).next_u64(),
    };
    let enc = Encoding::new(n, sa.bound)?;
    let inputs = ups
        .iter()
        .map(|u| {
            let entropy = match sa.entropy {
                EntropySource::Os => fedkit_privacy::noise::os_entropy()
                    .map_err(|e| Error::config("secure_aggregation.entropy", e.message))?,
                EntropySource::Seed => {
                    let mut rng = RngStream::derive(cfg.seed, "secagg_entropy", r.round as u64, u.client as u64);
                    let mut entropy = [0u8; 32];
                    entropy.chunks_exact_mut(8).for_each(|c| c.copy_from_slice(&rng.next_u64().to_le_bytes()));
                    entropy
                }
            };
            Ok((u.client, secagg::encode(&enc, u.delta.as_slice()), entropy))
        })
        .collect::<Result<Vec<_>>>()?;
    struct Dropouts {
        gone: std::collections::BTreeSet<ClientId>,
        phase: usize,
    }
    impl Faults for Dropouts {
        fn online(&self, k: usize, c: ClientId) -> bool {
            k < self.phase || !self.gone.contains(&c)
        }
    }
    let dropped = (sa.dropout * n as f64).round() as usize;
    let ids: Vec<ClientId> = ups.iter().map(|u| u.client).collect();
    let gone = RngStream::derive(cfg.seed, "secagg_dropout", r.round as u64, 0)
        .choose(n, dropped)
        .into_iter()
        .map(|i| ids[i])
        .collect();
    let (server, traffic) =
        secagg::run_in_process(&params, inputs, &Dropouts { gone, phase: sa.dropout_phase }, threads)
            .map_err(|e| Error::Method(format!("round {}: secure aggregation: {e}", r.round)))?;
    let summed = server.summed();
    let sum = server.sum().ok_or_else(|| Error::Method("secure aggregation ended without a sum".into()))?;
    let k = summed.len() as f64;
    let mean: Vec<f32> = secagg::decode_sum(&enc, sum).into_iter().map(|v| (v / k) as f32).collect();
    rec.set("bytes_up", traffic.up as f64);
    rec.set("bytes_down", (rec.get("bytes_down").unwrap_or(0.0)) + traffic.down as f64);
    let mut metrics = Metrics::new();
    metrics.insert("secagg_summed".into(), k);
    metrics.insert("secagg_dropped".into(), (n - summed.len()) as f64);
    Ok(Aggregate {
        delta: Params::from_vec(global.layout().clone(), mean)?,
        weight: k as f32,
        extras: Extras::default(),
        accepted: summed,
        metrics,
        weighting: Weighting::Uniform,
    })
}
