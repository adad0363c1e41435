//! `fp16` and `bf16`: the update cast to 16-bit floats (IEEE 754-2008 half precision, or
//! bfloat16's 8 exponent bits, Kalamkar et al., "A Study of BFLOAT16 for Deep Learning
//! Training", 2019; round to nearest even), half the bytes of f32. Lossless for values the format
//! represents; otherwise each value moves by at most half an ulp of the format (f16 overflows
//! to infinity beyond 65504 and is refused then).
//!
//! No parameters.
//!
//! ```toml
//! [[pipeline]]
//! use = "fp16"
//! ```
//!
//! ```toml
//! [[pipeline]]
//! use = "bf16"
//! ```

use fedkit_core::wire::{Block, Half};
use fedkit_core::{ClientCtx, Error, Extras, Result, Stage, Update};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use super::send;

/// A cast to a 16-bit float format.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cast {
    #[serde(skip)]
    pub format: Option<Half>,
}

impl Cast {
    pub fn f16() -> Self {
        Cast { format: Some(Half::F16) }
    }
    pub fn bf16() -> Self {
        Cast { format: Some(Half::Bf16) }
    }
}

/// The 16-bit block of `x`.
pub fn half_block(x: &[f32], format: Half) -> Result<Block> {
    let bits: Vec<u16> = match format {
        Half::F16 => x.iter().map(|&v| f16::from_f32(v).to_bits()).collect(),
        Half::Bf16 => x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect(),
    };
    if format == Half::F16 && bits.iter().zip(x).any(|(&b, v)| f16::from_bits(b).is_infinite() && v.is_finite()) {
        return Err(Error::Method("fp16: an update value beyond 65504 overflows half precision: use bf16".into()));
    }
    Ok(Block::Half { format, bits })
}

impl Stage for Cast {
    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        let b = half_block(u.delta.as_slice(), self.format.unwrap_or(Half::F16))?;
        send(u, vec![b])
    }
}
