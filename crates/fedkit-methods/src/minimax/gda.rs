//! Simultaneous gradient descent-ascent: both players step from the same point,
//! x <- x - eta_x grad_x f(x, y), y <- P_Y(y + eta_y grad_y f(x, y)).
//! The baseline of the minimax papers (e.g. Yang et al., AISTATS 2022; Zhang et al., NeurIPS
//! 2020); it converges on strongly-convex-strongly-concave problems with small steps and spirals
//! out on bilinear ones.

use fedkit_core::Result;

use super::{Domain, Oracle, Point, Solver, SolverState, ascend, descend};

/// Simultaneous GDA.
#[derive(Clone, Copy, Debug)]
pub struct Gda {
    /// Descent step eta_x.
    pub eta_x: f64,
    /// Ascent step eta_y.
    pub eta_y: f64,
}

impl<X: Point> Solver<X> for Gda {
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
        descend(x, self.eta_x, &gx)?;
        ascend(y, self.eta_y, &gy, domain)?;
        st.calls += 1;
        Ok(())
    }
}
