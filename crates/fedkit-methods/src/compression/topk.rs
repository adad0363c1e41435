//! `topk`: top-k sparsification, the k = fraction d largest-magnitude coordinates sent as a
//! sparse block (delta-coded indices, f32 values); with error feedback the unsent remainder is
//! added to the next round's update (Stich, Cordonnier, Jaggi, "Sparsified SGD with Memory",
//! NeurIPS 2018; Aji and Heafield 2017). The selection is linear time (`select_nth_unstable`).
//!
//! Parameters: `fraction` (k / d in (0, 1], default 0.01), `error_feedback` (default false).
//!
//! ```toml
//! [[pipeline]]
//! use = "topk"
//! fraction = 0.01
//! error_feedback = true
//! ```

use fedkit_core::wire::Block;
use fedkit_core::{ClientCtx, Extras, Result, Stage, Update};
use serde::{Deserialize, Serialize};

use super::{check_fraction, k_of, keep_residual, send, with_residual};

/// Top-k sparsification.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopK {
    pub fraction: f64,
    pub error_feedback: bool,
}

impl Default for TopK {
    fn default() -> Self {
        TopK { fraction: 0.01, error_feedback: false }
    }
}

impl TopK {
    pub fn validated(self) -> Result<Self> {
        check_fraction(self.fraction)?;
        Ok(self)
    }
}

/// The sparse block of the k largest magnitudes of `x`.
pub fn top_k_block(x: &[f32], k: usize) -> Block {
    let indices = crate::sparse::top_k(x, k);
    let values = indices.iter().map(|&i| x[i as usize]).collect();
    Block::Sparse { len: x.len() as u32, indices, values }
}

const RESIDUAL: &str = "topk_residual";

impl Stage for TopK {
    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, mem: &mut Extras) -> Result<()> {
        let x = if self.error_feedback {
            with_residual(mem, RESIDUAL, u.delta.as_slice())
        } else {
            u.delta.as_slice().to_vec()
        };
        send(u, vec![top_k_block(&x, k_of(self.fraction, x.len()))])?;
        if self.error_feedback {
            keep_residual(mem, RESIDUAL, &x, u.delta.as_slice());
        }
        Ok(())
    }
}
