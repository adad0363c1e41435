//! `fedkit privacy`: the RDP and PLD accountants from the command line (issue 10).
//! - `fedkit privacy epsilon --noise-multiplier S --sampling-rate Q --steps T --delta D` prints
//!   epsilon and the optimal order (`--json`: one object on stdout);
//! - `fedkit privacy noise --epsilon E --delta D --sampling-rate Q --steps T` prints the smallest
//!   noise multiplier that meets epsilon.
//!
//! `--sampling poisson` (default; add/remove-one neighbours) or `without-replacement` (a
//! fixed-size cohort; replace-one neighbours). `--like dp-accounting` (default), `tf-privacy` or
//! `opacus` picks that library's order grid and fractional-order series, so each library's
//! published numbers are reproduced; `--orders 2,4,8.5` replaces the grid. `--accountant pld`
//! uses the privacy-loss-distribution accountant instead (Poisson sampling; dp-accounting's
//! PLDAccountant with its defaults): tighter, and with no order.

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand, ValueEnum};
use fedkit_privacy::{Mechanism, Orders, Sampling, Series};

#[derive(Subcommand)]
pub enum PrivacyCommand {
    /// Epsilon of T subsampled Gaussian steps at delta (and the optimal RDP order).
    #[command(allow_negative_numbers = true)]
    Epsilon {
        /// The noise multiplier sigma (noise std / L2 sensitivity).
        #[arg(long)]
        noise_multiplier: f64,
        #[command(flatten)]
        common: Common,
        /// Print one JSON object {"epsilon", "order", "accountant", ...} on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The smallest noise multiplier whose T steps stay within epsilon at delta.
    #[command(allow_negative_numbers = true)]
    Noise {
        /// The target epsilon.
        #[arg(long)]
        epsilon: f64,
        #[command(flatten)]
        common: Common,
        /// Print one JSON object {"noise_multiplier", "epsilon", ...} on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct Common {
    /// The sampling rate q in (0, 1]: a client's (or record's) chance to be in a step.
    #[arg(long)]
    sampling_rate: f64,
    /// The number of steps (rounds) T, at least 1.
    #[arg(long)]
    steps: u64,
    /// The target delta in (0, 1).
    #[arg(long)]
    delta: f64,
    /// How a step's participants are drawn.
    #[arg(long, value_enum, default_value_t = SamplingArg::Poisson)]
    sampling: SamplingArg,
    /// The accountant.
    #[arg(long, value_enum, default_value_t = Accountant::Rdp)]
    accountant: Accountant,
    /// Compute as this library does (order grid and fractional-order series).
    #[arg(long, value_enum, default_value_t = Like::DpAccounting)]
    like: Like,
    /// RDP orders, comma-separated (each > 1), instead of the library's grid.
    #[arg(long)]
    orders: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplingArg {
    Poisson,
    WithoutReplacement,
}

#[derive(Clone, Copy, ValueEnum)]
enum Accountant {
    /// Rényi DP (Mironov et al. 2019; Wang et al. 2019 without replacement).
    Rdp,
    /// Privacy-loss distributions (connect the dots, FFT composition; Poisson sampling only).
    Pld,
}

#[derive(Clone, Copy, ValueEnum)]
enum Like {
    DpAccounting,
    TfPrivacy,
    Opacus,
}

struct Setup {
    mechanism: Mechanism,
    delta: f64,
    orders: Orders,
    series: Series,
    like: &'static str,
    pld: bool,
}

fn setup(c: &Common, sigma: f64) -> Result<Setup> {
    let (orders, series, like) = match c.like {
        Like::DpAccounting => (Orders::dp_accounting(), Series::Magnitudes, "dp-accounting"),
        Like::TfPrivacy => (Orders::tf_privacy(), Series::Signed, "tf-privacy"),
        Like::Opacus => (Orders::tf_privacy(), Series::Signed, "opacus"),
    };
    let orders = match &c.orders {
        Some(s) => Orders::parse(s).map_err(|e| anyhow!("--{e}"))?,
        None => orders,
    };
    let sampling = match c.sampling {
        SamplingArg::Poisson => Sampling::Poisson,
        SamplingArg::WithoutReplacement => Sampling::WithoutReplacement,
    };
    let pld = matches!(c.accountant, Accountant::Pld);
    if pld && sampling != Sampling::Poisson {
        return Err(anyhow!("--accountant pld: accounts --sampling poisson only; use --accountant rdp"));
    }
    if pld && (c.orders.is_some() || !matches!(c.like, Like::DpAccounting)) {
        return Err(anyhow!("--accountant pld: --orders and --like set the RDP accountant; drop them"));
    }
    let mechanism = Mechanism { q: c.sampling_rate, sigma, steps: c.steps, sampling };
    Ok(Setup { mechanism, delta: c.delta, orders, series, like, pld })
}

/// A privacy error as a CLI error naming the flag.
fn flag(e: fedkit_privacy::PrivacyError) -> anyhow::Error {
    anyhow!("--{}: {}", e.field.replace('_', "-"), e.message)
}

/// Epsilon at the setup's delta for noise `sigma`, with the RDP order (None for PLD).
fn epsilon(s: &Setup, sigma: f64) -> Result<(f64, Option<f64>)> {
    let m = Mechanism { sigma, ..s.mechanism };
    if s.pld {
        return Ok((fedkit_privacy::pld::epsilon(m.q, sigma, m.steps, s.delta).map_err(flag)?, None));
    }
    let (eps, order) = fedkit_privacy::epsilon(&m, s.delta, &s.orders, s.series).map_err(flag)?;
    Ok((eps, Some(order)))
}

/// How a result was computed, for the text output.
fn how(s: &Setup, order: Option<f64>) -> String {
    let n = s.mechanism.sampling.neighbours();
    match order {
        Some(o) => format!("RDP order {o}; {n} neighbours, as {}", s.like),
        None => format!("PLD accountant; {n} neighbours, as dp-accounting"),
    }
}

/// The JSON object of a result: the mechanism and accountant, epsilon with its order, sigma.
fn describe(s: &Setup, sigma: f64, eps: f64, order: Option<f64>) -> serde_json::Map<String, serde_json::Value> {
    let m = &s.mechanism;
    let mut o = serde_json::Map::new();
    o.insert("epsilon".into(), serde_json::Value::from(eps));
    o.insert("order".into(), order.map_or(serde_json::Value::Null, serde_json::Value::from));
    o.insert("noise_multiplier".into(), sigma.into());
    o.insert("accountant".into(), if s.pld { "pld" } else { "rdp" }.into());
    o.insert("like".into(), if s.pld { "dp-accounting" } else { s.like }.into());
    o.insert("sampling_rate".into(), m.q.into());
    o.insert("steps".into(), m.steps.into());
    o.insert("delta".into(), s.delta.into());
    let sampling = match m.sampling {
        Sampling::Poisson => "poisson",
        Sampling::WithoutReplacement => "without_replacement",
    };
    o.insert("sampling".into(), sampling.into());
    o.insert("neighbours".into(), m.sampling.neighbours().into());
    o
}

pub fn run(cmd: PrivacyCommand) -> Result<()> {
    match cmd {
        PrivacyCommand::Epsilon { noise_multiplier, common, json } => {
            let s = setup(&common, noise_multiplier)?;
            let (eps, order) = epsilon(&s, noise_multiplier)?;
            if json {
                println!("{}", serde_json::Value::Object(describe(&s, noise_multiplier, eps, order)));
            } else {
                println!("epsilon = {eps} at delta = {} ({})", s.delta, how(&s, order));
            }
        }
        PrivacyCommand::Noise { epsilon: target, common, json } => {
            let s = setup(&common, 1.0)?;
            fedkit_privacy::rdp::check(s.mechanism.q, 1.0).map_err(flag)?;
            let m = &s.mechanism;
            let sigma = if s.pld {
                fedkit_privacy::calibrate::pld_noise_multiplier(target, s.delta, m.q, m.steps)
            } else {
                fedkit_privacy::noise_multiplier(target, s.delta, m, &s.orders, s.series)
            }
            .map_err(flag)?;
            let (reached, order) = epsilon(&s, sigma)?;
            if json {
                let mut o = describe(&s, sigma, reached, order);
                o.insert("target_epsilon".into(), target.into());
                println!("{}", serde_json::Value::Object(o));
            } else {
                println!(
                    "noise multiplier = {sigma} (epsilon {reached} <= {target} at delta = {}, {})",
                    s.delta,
                    how(&s, order)
                );
            }
        }
    }
    Ok(())
}
