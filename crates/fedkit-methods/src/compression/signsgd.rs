//! `signsgd`: one bit a coordinate.
//! - Plain (Bernstein, Wang, Azizzadenesheli, Anandkumar, "signSGD: Compressed Optimisation
//!   for Non-Convex Problems", ICML 2018): the client sends sign(x) with the scale ||x||_1 / d.
//!   With `vote = true` the server takes the majority vote of the signs (Bernstein et al.,
//!   "signSGD with Majority Vote is Communication Efficient and Fault Tolerant", ICLR 2019) and
//!   steps by the clients' mean scale: aggregate = mean_i(||x_i||_1 / d) sign(sum_i sign(x_i)).
//! - `error_feedback = true`: EF-signSGD (Karimireddy, Rebjock, Stich, Jaggi, "Error Feedback
//!   Fixes SignSGD and other Gradient Compression Schemes", ICML 2019): p = x + e, send
//!   (||p||_1 / d) sign(p), keep e = p - sent.
//!
//! A coordinate that is exactly 0 is sent as +scale (the block has no zero).
//! The vote refuses robust aggregators (it replaces the aggregate) and central DP stages (their
//! noise is sized for the mean, not for the vote).
//!
//! Parameters: `vote` (default false), `error_feedback` (default false).
//!
//! ```toml
//! [[pipeline]]
//! use = "signsgd"
//! vote = true
//! error_feedback = false
//! ```

use std::sync::Mutex;

use fedkit_core::wire::Block;
use fedkit_core::{Aggregate, ClientCtx, Extras, Result, RoundCtx, Stage, Update};
use serde::{Deserialize, Serialize};

use super::{keep_residual, send, with_residual};

/// signSGD, with majority vote or error feedback.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignSgd {
    pub vote: bool,
    pub error_feedback: bool,
    /// The round's vote, from `on_cohort`: the mean scale and sign(sum of signs).
    #[serde(skip)]
    tally: Mutex<Option<(f32, Vec<f32>)>>,
}

impl SignSgd {
    pub fn validated(self) -> Result<Self> {
        Ok(self)
    }
}

/// The sign block of `x`, scaled by ||x||_1 / d.
pub fn sign_block(x: &[f32]) -> Block {
    let scale = (x.iter().map(|v| v.abs() as f64).sum::<f64>() / x.len().max(1) as f64) as f32;
    Block::Signs { scale, negative: x.iter().map(|v| v.is_sign_negative()).collect() }
}

const RESIDUAL: &str = "signsgd_residual";

impl Stage for SignSgd {
    fn prepare(&mut self, run: &fedkit_core::RunInfo) -> Result<()> {
        if self.vote && run.aggregator != "mean" {
            return Err(fedkit_core::Error::config(
                "aggregator.use",
                format!(
                    "the majority vote is the aggregation rule; `{}` would filter the votes first: use \"mean\"",
                    run.aggregator
                ),
            ));
        }
        Ok(())
    }

    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, mem: &mut Extras) -> Result<()> {
        let x = if self.error_feedback {
            with_residual(mem, RESIDUAL, u.delta.as_slice())
        } else {
            u.delta.as_slice().to_vec()
        };
        send(u, vec![sign_block(&x)])?;
        if self.error_feedback {
            keep_residual(mem, RESIDUAL, &x, u.delta.as_slice());
        }
        Ok(())
    }

    fn on_cohort(&mut self, _r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        if !self.vote || us.is_empty() {
            return Ok(());
        }
        let d = us[0].delta.len();
        let mut votes = vec![0i64; d];
        let mut scale = 0.0f64;
        for u in us.iter() {
            let v = u.delta.as_slice();
            scale += v.iter().map(|x| x.abs() as f64).sum::<f64>() / d.max(1) as f64;
            votes.iter_mut().zip(v).for_each(|(t, x)| *t += if x.is_sign_negative() { -1 } else { 1 });
        }
        let signs = votes.iter().map(|&t| t.signum() as f32).collect();
        *self.tally.lock().unwrap_or_else(|e| e.into_inner()) = Some(((scale / us.len() as f64) as f32, signs));
        Ok(())
    }

    fn on_aggregate(&mut self, _r: &RoundCtx, a: &mut Aggregate) -> Result<()> {
        if let Some((scale, signs)) = self.tally.lock().unwrap_or_else(|e| e.into_inner()).take() {
            a.delta.as_mut_slice().iter_mut().zip(&signs).for_each(|(x, s)| *x = scale * s);
        }
        Ok(())
    }
}
