//! Extragradient: Korpelevich, "The extragradient method for finding saddle points and other
//! problems", Ekonomika i Matematicheskie Metody, 1976. A half step with the gradients at (x, y)
//! finds the extrapolation point, and the full step from (x, y) uses the gradients there:
//! x_half = x - eta_x grad_x f(x, y), y_half = P_Y(y + eta_y grad_y f(x, y));
//! x <- x - eta_x grad_x f(x_half, y_half), y <- P_Y(y + eta_y grad_y f(x_half, y_half)).
//! It converges on bilinear games where GDA diverges, and is the base of the extra-gradient
//! difference method (Liu et al., "A Single-Loop Accelerated Extra-Gradient Difference Algorithm
//! with Improved Complexity Bounds for Constrained Minimax Optimization", NeurIPS 2023).
//!
//! As a one-point-per-call state machine, an iteration takes two calls: the first (at x) stores
//! the anchor (x, y) in the state and moves to (x_half, y_half); the second (at x_half) steps
//! from the anchor.

use fedkit_core::Result;

use super::{Domain, Oracle, Point, Solver, SolverState, ascend, descend};

/// Extragradient.
#[derive(Clone, Copy, Debug)]
pub struct Extragradient {
    /// Step eta_x for x.
    pub eta_x: f64,
    /// Step eta_y for y.
    pub eta_y: f64,
}

impl<X: Point> Solver<X> for Extragradient {
    fn advance(
        &self,
        st: &mut SolverState<X>,
        x: &mut X,
        y: &mut Vec<f64>,
        domain: Domain,
        oracle: &mut dyn Oracle<X>,
    ) -> Result<()> {
        let gx = oracle.grad_x(y)?;
        let gy = oracle.grad_y(y)?;
        match (st.anchor_x.take(), st.anchor_y.take()) {
            (Some(ax), Some(ay)) => {
                // At the extrapolation point: the full step from the anchor.
                *x = ax;
                *y = ay;
            }
            _ => {
                // At an anchor: remember it and extrapolate.
                st.anchor_x = Some(x.clone());
                st.anchor_y = Some(y.clone());
            }
        }
        descend(x, self.eta_x, &gx)?;
        ascend(y, self.eta_y, &gy, domain)?;
        st.calls += 1;
        Ok(())
    }
}
