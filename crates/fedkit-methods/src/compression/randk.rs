//! `randk`: random-k sparsification, k = fraction d coordinates drawn uniformly without
//! replacement from the client's stream `randk` (Wangni, Wang, Liu, Zhang, "Gradient
//! Sparsification for Communication-Efficient Distributed Optimization", NeurIPS 2018). Without
//! error feedback the sent values are scaled by d / k, so the estimate is unbiased; with error
//! feedback they are sent as they are and the remainder is kept for the next round.
//!
//! Parameters: `fraction` (k / d in (0, 1], default 0.01), `error_feedback` (default false).
//!
//! ```toml
//! [[pipeline]]
//! use = "randk"
//! fraction = 0.01
//! error_feedback = false
//! ```

use fedkit_core::wire::Block;
use fedkit_core::{ClientCtx, Extras, Result, Stage, Update};
use serde::{Deserialize, Serialize};

use super::{check_fraction, k_of, keep_residual, send, with_residual};

/// Random-k sparsification.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandK {
    pub fraction: f64,
    pub error_feedback: bool,
}

impl Default for RandK {
    fn default() -> Self {
        RandK { fraction: 0.01, error_feedback: false }
    }
}

impl RandK {
    pub fn validated(self) -> Result<Self> {
        check_fraction(self.fraction)?;
        Ok(self)
    }
}

const RESIDUAL: &str = "randk_residual";

impl Stage for RandK {
    fn on_update(&self, cx: &ClientCtx, u: &mut Update, mem: &mut Extras) -> Result<()> {
        let x = if self.error_feedback {
            with_residual(mem, RESIDUAL, u.delta.as_slice())
        } else {
            u.delta.as_slice().to_vec()
        };
        let d = x.len();
        let k = k_of(self.fraction, d);
        let mut indices: Vec<u32> = cx.rng("randk").choose(d, k).into_iter().map(|i| i as u32).collect();
        indices.sort_unstable();
        let scale = if self.error_feedback { 1.0 } else { d as f32 / k as f32 };
        let values = indices.iter().map(|&i| x[i as usize] * scale).collect();
        send(u, vec![Block::Sparse { len: d as u32, indices, values }])?;
        if self.error_feedback {
            keep_residual(mem, RESIDUAL, &x, u.delta.as_slice());
        }
        Ok(())
    }
}
