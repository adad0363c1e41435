//! Secure aggregation inside a round (`[secure_aggregation]`, issue 10): the engine's side of
//! `fedkit_privacy::secagg` and `fedkit_privacy::hybridalpha`.

use fedkit_core::protocol::{Faults, Traffic};
use fedkit_core::{
    Aggregate, ClientId, Error, Extras, Metrics, Params, Result, RngStream, RoundCtx, Update, Weighting,
};
use std::collections::BTreeSet;

use crate::config::{DistributedDp, EntropySource, RunConfig, SecAggProtocol, SecureAggregation};
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
    let skellam = match sa.dp {
        DistributedDp::Skellam => Some(SkellamPlan::new(cfg, r, global.len())?),
        DistributedDp::None => None,
    };
    let inputs = match &skellam {
        Some(p) => ups.iter().map(|u| Ok((u.client, p.encode(cfg, r, u)?))).collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    // Distributed DP's survivor floor is enforced inside the protocol: clients refuse to
    // unmask, and the key authority to issue a key, for fewer inputs.
    let floor = skellam.as_ref().map_or(0, |p| p.min_survivors);
    let (sum, summed, traffic) = match sa.protocol {
        SecAggProtocol::Hybridalpha => hybridalpha(cfg, r, ups, (inputs, floor), &faults, threads)?,
        _ => secagg(cfg, r, global, ups, (inputs, floor), &faults, threads)?,
    };
    let k = summed.len() as f64;
    let mut metrics = Metrics::new();
    let mean: Vec<f32> = match &skellam {
        Some(p) => {
            if summed.len() < p.min_survivors {
                return Err(Error::Method(format!(
                    "round {}: secure aggregation: only {} clients' noise reached the sum, fewer than the {} the distributed DP needs (secure_aggregation.dp_min_survivors): the round fails without a result",
                    r.round,
                    summed.len(),
                    p.min_survivors
                )));
            }
            metrics.insert("epsilon".into(), p.epsilon(r.round, p.q)?);
            // Against the server, which draws the cohort, sampling hides nobody.
            metrics.insert("epsilon_server".into(), p.epsilon(r.round, 1.0)?);
            // The integers back to reals, over the fixed denominator q N.
            sum.into_iter().map(|v| (v / p.denominator) as f32).collect()
        }
        None => sum.into_iter().map(|v| (v / k) as f32).collect(),
    };
    rec.set("bytes_up", traffic.up as f64);
    rec.set("bytes_down", (rec.get("bytes_down").unwrap_or(0.0)) + traffic.down as f64);
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

/// `ints`: the clients' integer inputs under distributed DP (then the sum comes back as
/// integers; empty: encode the updates), and the fewest inputs the clients let be summed.
fn secagg(
    cfg: &RunConfig,
    r: &RoundCtx,
    global: &Params,
    ups: &[Update],
    (ints, floor): (Vec<(ClientId, Vec<i64>)>, usize),
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
        min_summed: floor,
    };
    let enc = Encoding::new(n, sa.bound)?;
    let integers = !ints.is_empty();
    let mut ints: std::collections::BTreeMap<ClientId, Vec<i64>> = ints.into_iter().collect();
    let inputs = ups
        .iter()
        .map(|u| {
            let e = entropy(cfg, sa, "secagg_entropy", r.round, u.client as u64)?;
            let x = match ints.remove(&u.client) {
                Some(v) => v.into_iter().map(|x| x as i32 as u32).collect(),
                None => secagg::encode(&enc, u.delta.as_slice()),
            };
            Ok((u.client, x, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let (server, traffic) = secagg::run_in_process(&params, inputs, faults, threads).map_err(|e| failed(r, e))?;
    let sum = server.sum().ok_or_else(|| Error::Method("secure aggregation ended without a sum".into()))?;
    let sum = if integers { sum.iter().map(|&v| v as i32 as f64).collect() } else { secagg::decode_sum(&enc, sum) };
    Ok((sum, server.summed(), traffic))
}

fn hybridalpha(
    cfg: &RunConfig,
    r: &RoundCtx,
    ups: &[Update],
    (ints, floor): (Vec<(ClientId, Vec<i64>)>, usize),
    faults: &Dropouts,
    threads: usize,
) -> Result<Summed> {
    use fedkit_privacy::hybridalpha::{Encoding, run_in_process};
    let sa = &cfg.secure_aggregation;
    let n = ups.len();
    let enc = Encoding::new(n, sa.bound, sa.range_bits)?;
    let integers = !ints.is_empty();
    let inputs = if integers { ints } else { ups.iter().map(|u| (u.client, enc.encode(u.delta.as_slice()))).collect() };
    let tpa = entropy(cfg, sa, "hybridalpha_tpa", r.round, 0)?;
    let min_parties = fedkit_privacy::secagg::threshold(sa.threshold, n).max(floor);
    let (server, traffic) =
        run_in_process(r.round as u64, inputs, &tpa, min_parties, enc.range, sa.table_bits, faults, threads)
            .map_err(|e| failed(r, e))?;
    let sum = server.sum().ok_or_else(|| Error::Method("secure aggregation ended without a sum".into()))?;
    let sum = if integers { sum.iter().map(|&v| v as f64).collect() } else { enc.decode_sum(sum) };
    Ok((sum, server.summed().to_vec(), traffic))
}

/// P(X < m) for X ~ Poisson(`mean`).
fn poisson_below(mean: f64, m: usize) -> f64 {
    let mut log_p = -mean;
    let mut total = 0.0;
    for k in 0..m {
        if k > 0 {
            log_p += mean.ln() - (k as f64).ln();
        }
        total += log_p.exp();
    }
    total.min(1.0)
}

/// Distributed DP with Skellam noise (`[secure_aggregation] dp = "skellam"`), for a round.
struct SkellamPlan {
    clip: f64,
    gamma: f64,
    /// Each client's Skellam parameter: mu / min_survivors.
    lambda: f64,
    mu: f64,
    l2: f64,
    l1: f64,
    q: f64,
    delta: f64,
    min_survivors: usize,
    /// q N, in the integers' units (gamma q N).
    denominator: f64,
}

impl SkellamPlan {
    fn new(cfg: &RunConfig, r: &RoundCtx, d: usize) -> Result<Self> {
        use fedkit_privacy::skellam;
        let sa = &cfg.secure_aggregation;
        let q = cfg.sampling.rate;
        let expected = q * r.population as f64;
        let clip = sa.dp_clip;
        let gamma = if sa.dp_scale > 0.0 { sa.dp_scale } else { 100.0 * (d as f64).sqrt() / clip };
        let (l2, l1) = skellam::sensitivity(clip, gamma, d);
        let mu = (sa.dp_noise_multiplier * l2).powi(2) / 2.0;
        let min_survivors = if sa.dp_min_survivors > 0 {
            sa.dp_min_survivors
        } else {
            fedkit_privacy::secagg::threshold(sa.threshold, expected.round().max(2.0) as usize)
        };
        // A Poisson cohort below min_survivors fails its round: refuse a plan that would fail
        // one run in a hundred.
        let below = poisson_below(expected, min_survivors);
        let per_run = 1.0 - (1.0 - below).powi(cfg.rounds as i32);
        if per_run > 0.01 {
            return Err(Error::config(
                "secure_aggregation.dp_min_survivors",
                format!(
                    "{min_survivors} survivors needed, but a Poisson cohort of mean {expected} falls below that with probability {below:.2e} a round ({per_run:.2} over {} rounds): lower dp_min_survivors or threshold",
                    cfg.rounds
                ),
            ));
        }
        // No sum may leave the ring: n (gamma C + 1) plus 12 standard deviations of the noise.
        let cohort = r.cohort.len() as f64;
        let reach = cohort * (gamma * clip + 1.0) + 12.0 * (2.0 * mu * cohort / min_survivors as f64).sqrt();
        let ring = match sa.protocol {
            SecAggProtocol::Hybridalpha => (1u64 << sa.range_bits) as f64,
            _ => i32::MAX as f64,
        };
        if reach >= ring {
            return Err(Error::config(
                "secure_aggregation.dp_scale",
                format!(
                    "sums of {cohort} clients at scale {gamma} reach {reach:.3e}, beyond the ring's {ring:.3e}: lower dp_scale (or raise range_bits)"
                ),
            ));
        }
        let delta = if sa.dp_delta > 0.0 { sa.dp_delta } else { (r.population as f64).powf(-1.1) };
        Ok(SkellamPlan {
            clip,
            gamma,
            lambda: mu / min_survivors as f64,
            mu,
            l2,
            l1,
            q,
            delta,
            min_survivors,
            denominator: gamma * expected,
        })
    }

    /// A client's noised integers; noise and rounding from the run seed (stream
    /// `skellam_noise`) or the OS (`entropy = "os"`).
    fn encode(&self, cfg: &RunConfig, r: &RoundCtx, u: &Update) -> Result<Vec<i64>> {
        use fedkit_privacy::skellam::{SkellamNoise, encode};
        let seed = entropy(cfg, &cfg.secure_aggregation, "skellam_noise", r.round, u.client as u64)?;
        let mut noise = SkellamNoise::new(self.lambda, fedkit_privacy::noise::seeded_rng(seed))
            .map_err(|e| Error::config("secure_aggregation.dp_noise_multiplier", e.message))?;
        Ok(encode(u.delta.as_slice(), self.clip, self.gamma, &mut noise))
    }

    /// Epsilon after `rounds` rounds, sampled at rate `q`.
    fn epsilon(&self, rounds: u32, q: f64) -> Result<f64> {
        fedkit_privacy::skellam::epsilon(q, self.mu, self.l2, self.l1, rounds as u64, self.delta)
            .map(|e| e.0)
            .map_err(|e| Error::Method(format!("secure_aggregation.dp: {e}")))
    }
}
