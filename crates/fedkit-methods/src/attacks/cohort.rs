//! Shared by the cohort-aware attacks (`alie`, `ipm`, `min_max`, `min_sum`): they run on the
//! server side of the round (`on_cohort`), read the threat model (`RoundCtx::malicious`) and
//! replace the attacking clients' updates. `knowledge = "full"`: the attackers see every benign
//! update of the round (the papers' omniscient setting); `"partial"`: only their own honest
//! updates (they trained on their own data before the stage replaced what they send). Not a
//! registered method.

pub use fedkit_core::stats::normal_quantile;
use fedkit_core::{Error, Params, Result, RoundCtx, Update};
use serde::{Deserialize, Serialize};

/// What the attackers know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knowledge {
    #[default]
    Full,
    Partial,
}

/// The indices of the attacking updates and of the reference updates the attack's statistics
/// come from (benign ones with full knowledge, the attackers' own with partial).
pub fn split(r: &RoundCtx, us: &[Update], knowledge: Knowledge) -> (Vec<usize>, Vec<usize>) {
    let bad: Vec<usize> =
        (0..us.len()).filter(|&i| r.malicious.get(us[i].client as usize).copied().unwrap_or(false)).collect();
    let reference = match knowledge {
        Knowledge::Full => (0..us.len()).filter(|i| !bad.contains(i)).collect(),
        Knowledge::Partial => bad.clone(),
    };
    (bad, reference)
}

/// Coordinate-wise mean and standard deviation (population) of the reference deltas, in f64.
pub fn mean_std(us: &[Update], reference: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
    let first =
        reference.first().ok_or_else(|| Error::Method("the attack has no reference updates this round".into()))?;
    let d = us[*first].delta.len();
    let n = reference.len() as f64;
    let mut mean = vec![0.0f64; d];
    for &i in reference {
        mean.iter_mut().zip(us[i].delta.as_slice()).for_each(|(m, v)| *m += *v as f64 / n);
    }
    let mut var = vec![0.0f64; d];
    for &i in reference {
        var.iter_mut().zip(us[i].delta.as_slice()).zip(&mean).for_each(|((s, v), m)| *s += (*v as f64 - m).powi(2) / n);
    }
    Ok((mean, var.into_iter().map(f64::sqrt).collect()))
}

/// Set every attacking update's delta to `values`.
pub fn replace(us: &mut [Update], bad: &[usize], values: &[f64]) -> Result<()> {
    for &i in bad {
        let layout = us[i].delta.layout().clone();
        us[i].delta = Params::from_vec(layout, values.iter().map(|v| *v as f32).collect())?;
    }
    Ok(())
}

/// The perturbation direction p of the AGR-agnostic attacks (Shejwalkar and Houmansadr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perturbation {
    /// -mu / ||mu||, the inverse unit vector of the benign mean (the paper's default).
    #[default]
    UnitVec,
    /// -sigma, the inverse coordinate-wise standard deviation.
    Std,
    /// -sign(mu).
    Sign,
}

/// p for the reference mean and standard deviation.
pub fn perturbation(kind: Perturbation, mu: &[f64], sigma: &[f64]) -> Vec<f64> {
    match kind {
        Perturbation::UnitVec => {
            let n = mu.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
            mu.iter().map(|x| -x / n).collect()
        }
        Perturbation::Std => sigma.iter().map(|s| -s).collect(),
        Perturbation::Sign => mu.iter().map(|x| -x.signum() * (*x != 0.0) as u8 as f64).collect(),
    }
}

/// The largest gamma (to 1e-5) for which `ok(gamma)` holds, by the halving search of Shejwalkar
/// and Houmansadr's code (gamma starts at 10 and moves by step / 2, halving the step, until two
/// successive values are within the threshold); 0 when even tiny gammas fail.
pub fn largest_gamma(mut ok: impl FnMut(f64) -> bool) -> f64 {
    let (mut gamma, mut step, mut best) = (10.0f64, 5.0f64, 0.0f64);
    for _ in 0..200 {
        if ok(gamma) {
            best = best.max(gamma);
            gamma += step;
        } else {
            gamma -= step;
        }
        step /= 2.0;
        if step < 1e-5 {
            break;
        }
    }
    best
}

/// Squared distance between a vector and a delta.
pub fn sq_dist(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - *y as f64).powi(2)).sum()
}
