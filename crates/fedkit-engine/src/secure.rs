//! Secure aggregation inside a round (`[secure_aggregation]`, issue 10): the engine's side of
//! `fedkit_privacy::secagg` and `fedkit_privacy::hybridalpha`.

use fedkit_core::protocol::{Faults, Traffic};
use fedkit_core::{
    Aggregate, ClientId, Error, Extras, Metrics, Params, Result, RngStream, RoundCtx, Update, Weighting,
};
use std::collections::BTreeSet;

use crate::config::{EntropySource, RunConfig, SecAggProtocol, SecureAggregation};
use crate::record::Record;

/// Secure aggregation of a round's updates (`[secure_aggregation]`): every client fixed-point
/// encodes its update and runs SecAgg / SecAgg+ / HybridAlpha with the server in process; the
/// server learns the sum of the clients whose input arrived and returns their uniform mean. A
/// phase's clients run on `threads` threads (the engine's worker count). Secrets come from the
/// run seed (simulation only) or from the OS (`entropy = "os"`).
pub(crate) fn secure_aggregate(
    cfg: &RunConfig,
    r: &RoundCtx,
    global: &Params,
    ups: &[Update],
    rec: &mut Record,
    threads: usize,
) -> Result<Aggregate> {
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
    let dropped = (sa.dropout * n as f64).round() as usize;
    let ids: Vec<ClientId> = ups.iter().map(|u| u.client).collect();
    let gone = RngStream::derive(cfg.seed, "secagg_dropout", r.round as u64, 0)
        .choose(n, dropped)
        .into_iter()
        .map(|i| ids[i])
        .collect();
    let phase = if sa.protocol == SecAggProtocol::Hybridalpha { 0 } else { sa.dropout_phase };
    let faults = Dropouts { gone, phase };
    let (sum, summed, traffic) = match sa.protocol {
        SecAggProtocol::Hybridalpha => hybridalpha(cfg, r, ups, &faults, threads)?,
        _ => secagg(cfg, r, global, ups, &faults, threads)?,
    };
    let k = summed.len() as f64;
    let mean: Vec<f32> = sum.into_iter().map(|v| (v / k) as f32).collect();
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

/// Simulated dropouts: `gone` never sends from phase `phase` on.
struct Dropouts {
    gone: BTreeSet<ClientId>,
    phase: usize,
}

impl Faults for Dropouts {
    fn online(&self, k: usize, c: ClientId) -> bool {
        k < self.phase || !self.gone.contains(&c)
    }
}

/// 32 bytes of secret entropy for `purpose` (a client's or the key authority's).
fn entropy(cfg: &RunConfig, sa: &SecureAggregation, purpose: &str, round: u32, who: u64) -> Result<[u8; 32]> {
    match sa.entropy {
        EntropySource::Os => {
            fedkit_privacy::noise::os_entropy().map_err(|e| Error::config("secure_aggregation.entropy", e.message))
        }
        EntropySource::Seed => {
            let mut rng = RngStream::derive(cfg.seed, purpose, round as u64, who);
            let mut entropy = [0u8; 32];
            entropy.chunks_exact_mut(8).for_each(|c| c.copy_from_slice(&rng.next_u64().to_le_bytes()));
            Ok(entropy)
        }
    }
}

fn failed(r: &RoundCtx, e: Error) -> Error {
    Error::Method(format!("round {}: secure aggregation: {e}", r.round))
}

/// The decoded sum, the clients it holds and the traffic.
type Summed = (Vec<f64>, Vec<ClientId>, Traffic);

fn secagg(
    cfg: &RunConfig,
    r: &RoundCtx,
    global: &Params,
    ups: &[Update],
    faults: &Dropouts,
    threads: usize,
) -> Result<Summed> {
    use fedkit_privacy::secagg::{self, Encoding};
    let sa = &cfg.secure_aggregation;
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
            let e = entropy(cfg, sa, "secagg_entropy", r.round, u.client as u64)?;
            Ok((u.client, secagg::encode(&enc, u.delta.as_slice()), e))
        })
        .collect::<Result<Vec<_>>>()?;
    let (server, traffic) = secagg::run_in_process(&params, inputs, faults, threads).map_err(|e| failed(r, e))?;
    let sum = server.sum().ok_or_else(|| Error::Method("secure aggregation ended without a sum".into()))?;
    Ok((secagg::decode_sum(&enc, sum), server.summed(), traffic))
}

fn hybridalpha(cfg: &RunConfig, r: &RoundCtx, ups: &[Update], faults: &Dropouts, threads: usize) -> Result<Summed> {
    use fedkit_privacy::hybridalpha::{Encoding, run_in_process};
    let sa = &cfg.secure_aggregation;
    let n = ups.len();
    let enc = Encoding::new(n, sa.bound, sa.range_bits)?;
    let inputs = ups.iter().map(|u| (u.client, enc.encode(u.delta.as_slice()))).collect();
    let tpa = entropy(cfg, sa, "hybridalpha_tpa", r.round, 0)?;
    let min_parties = fedkit_privacy::secagg::threshold(sa.threshold, n);
    let (server, traffic) =
        run_in_process(r.round as u64, inputs, &tpa, min_parties, enc.range, sa.table_bits, faults, threads)
            .map_err(|e| failed(r, e))?;
    let sum = server.sum().ok_or_else(|| Error::Method("secure aggregation ended without a sum".into()))?;
    Ok((enc.decode_sum(sum), server.summed().to_vec(), traffic))
}
