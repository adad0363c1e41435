//! Activation sparsity (Li, You, Bhojanapalli, Li, Rawat, Reddi, Ye, Chern, Yu, Guo, Kumar, "The
//! Lazy Neuron Phenomenon: On Emergence of Activation Sparsity in Transformers", ICLR 2023): the
//! share of a ReLU layer's activations that are exactly zero on a probe set, tracked over
//! training. The paper finds it rises as training proceeds (few neurons fire per input) without
//! any regulariser asking for it. `fedkit analyze sparsity` measures it on every global model a
//! run kept, per layer.
//!
//! Only layers after a ReLU have exact zeros: for the `transformer`'s residual stream (and the
//! `logits`) the share stays 0 and says nothing. Top-k activation at inference is not built.
//!
//! ```text
//! fedkit analyze sparsity --run runs/mlp --samples 500 --out sparsity
//! ```

/// The share of exactly-zero entries of `values` (0 for none).
pub fn zero_share(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().filter(|&&v| v == 0.0).count() as f64 / values.len() as f64
}

/// The share of units (columns of the `rows x dim` `values`) that are zero on every row: dead
/// neurons.
pub fn dead_share(values: &[f32], dim: usize) -> f64 {
    if dim == 0 || values.is_empty() {
        return 0.0;
    }
    let dead = (0..dim).filter(|&j| values.iter().skip(j).step_by(dim).all(|&v| v == 0.0)).count();
    dead as f64 / dim as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_zero_entries_and_dead_units() {
        // 3 rows x 2 units: unit 1 is dead, unit 0 fires twice
        let v = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0];
        assert!((zero_share(&v) - 4.0 / 6.0).abs() < 1e-12);
        assert!((dead_share(&v, 2) - 0.5).abs() < 1e-12);
        assert_eq!((zero_share(&[]), dead_share(&[], 2)), (0.0, 0.0));
    }
}
