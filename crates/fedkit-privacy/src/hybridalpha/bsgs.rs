//! Discrete logarithms of small integers in ristretto255 by baby-step giant-step, over a table
//! built once per process.
//!
//! The table holds the first 8 bytes of compress(2 k G) for k in [0, 2^bits); a point is
//! looked up through compress(2 P), because ristretto255 compresses doubled points in a batch
//! with one field inversion ([`RistrettoPoint::double_and_compress_batch`]), and doubling is
//! injective in a prime-order group. A match is confirmed by recomputing m G, so a collision
//! of the 8-byte keys can never return a wrong value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use fedkit_core::{Error, Result};

/// Baby steps computed per batch compression.
const BATCH: usize = 4096;

/// The baby-step table: 2^bits entries.
pub struct Table {
    bits: u32,
    baby: HashMap<u64, u32>,
}

fn key(c: &[u8; 32]) -> u64 {
    u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
}

/// The signed integer `m` as a scalar.
pub fn scalar_of(m: i64) -> Scalar {
    let s = Scalar::from(m.unsigned_abs());
    if m < 0 { -s } else { s }
}

impl Table {
    /// Build a table of 2^`bits` baby steps (`bits` in 8..=26; 2^20 takes about a second and
    /// 24 MB).
    pub fn build(bits: u32) -> Result<Self> {
        if !(8..=26).contains(&bits) {
            return Err(Error::config("secure_aggregation.table_bits", format!("must be in 8..=26, got {bits}")));
        }
        let n = 1usize << bits;
        let mut baby = HashMap::with_capacity(n);
        let mut p = RistrettoPoint::identity();
        let mut chunk = Vec::with_capacity(BATCH);
        let mut k = 0u32;
        while (k as usize) < n {
            chunk.clear();
            for _ in 0..BATCH.min(n - k as usize) {
                chunk.push(p);
                p += G;
            }
            for c in RistrettoPoint::double_and_compress_batch(&chunk) {
                baby.insert(key(c.as_bytes()), k);
                k += 1;
            }
        }
        Ok(Table { bits, baby })
    }

    /// The process's table of 2^`bits` entries, built on first use.
    pub fn shared(bits: u32) -> Result<Arc<Table>> {
        static TABLES: OnceLock<Mutex<HashMap<u32, Arc<Table>>>> = OnceLock::new();
        let mut tables = TABLES.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tables.get(&bits) {
            return Ok(t.clone());
        }
        let t = Arc::new(Table::build(bits)?);
        tables.insert(bits, t.clone());
        Ok(t)
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The m in [-`bound`, `bound`] with m G = P, for every point of `points`, in lock-step
    /// giant steps (one batch compression per step for all points still unsolved). An error if
    /// some point is not in range.
    pub fn solve(&self, points: &[RistrettoPoint], bound: i64) -> Result<Vec<i64>> {
        let step = 1i64 << self.bits;
        let giant = scalar_of(step) * G;
        // Shift to [0, 2 bound]: Q = P + bound G.
        let shift = scalar_of(bound) * G;
        let mut q: Vec<RistrettoPoint> = points.iter().map(|p| p + shift).collect();
        let mut out: Vec<Option<i64>> = vec![None; points.len()];
        let mut open: Vec<usize> = (0..points.len()).collect();
        let mut i = 0i64;
        while !open.is_empty() && i * step <= 2 * bound {
            let batch: Vec<RistrettoPoint> = open.iter().map(|&j| q[j]).collect();
            let compressed = RistrettoPoint::double_and_compress_batch(&batch);
            let mut still = Vec::with_capacity(open.len());
            for (&j, c) in open.iter().zip(&compressed) {
                let hit = self.baby.get(&key(c.as_bytes())).map(|&k| i * step + k as i64 - bound);
                match hit {
                    Some(m) if m <= bound && scalar_of(m) * G == points[j] => out[j] = Some(m),
                    _ => {
                        q[j] -= giant;
                        still.push(j);
                    }
                }
            }
            open = still;
            i += 1;
        }
        if let Some(&j) = open.first() {
            return Err(Error::Method(format!(
                "hybridalpha: coordinate {j} of the decrypted sum lies outside [-{bound}, {bound}]: a client sent an input outside the encoding's bound"
            )));
        }
        Ok(out.into_iter().map(|m| m.unwrap_or_default()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_every_value_in_range_and_refuses_out_of_range() {
        let t = Table::build(8).unwrap();
        let bound = 1000;
        let ms: Vec<i64> = (-bound..=bound).step_by(7).chain([-bound, bound, 0, 255, 256, -256]).collect();
        let pts: Vec<RistrettoPoint> = ms.iter().map(|&m| scalar_of(m) * G).collect();
        assert_eq!(t.solve(&pts, bound).unwrap(), ms);
        let err = t.solve(&[scalar_of(bound + 1) * G], bound).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }
}
