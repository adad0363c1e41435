//! Smoothed gradient descent-ascent: Zhang, Xiao, Sun, Luo, "A Single-Loop Smoothed Gradient
//! Descent-Ascent Algorithm for Nonconvex-Concave Min-Max Problems", NeurIPS 2020 (Algorithm 1).
//!
//! GDA on the regularised K(x, z; y) = f(x, y) + (p/2) ||x - z||^2 with a slowly moving
//! auxiliary point z, which damps GDA's oscillation:
//! x_{t+1} = x_t - c grad_x K(x_t, z_t; y_t) = x_t - c (grad_x f(x_t, y_t) + p (x_t - z_t)),
//! y_{t+1} = P_Y(y_t + alpha grad_y f(x_{t+1}, y_t)),
//! z_{t+1} = z_t + beta (x_{t+1} - z_t), with z_0 = x_0.
//!
//! As a one-point-per-call state machine (like alternating GDA): the call at x_{t+1} first
//! finishes iteration t's y-step there, then takes the x- and z-steps of iteration t + 1. z is
//! kept in [`SolverState::anchor_x`].

use fedkit_core::Result;

use super::{Domain, Oracle, Point, Solver, SolverState, ascend, descend};

/// Smoothed GDA.
#[derive(Clone, Copy, Debug)]
pub struct SmoothedGda {
    /// Descent step c.
    pub c: f64,
    /// Ascent step alpha.
    pub alpha: f64,
    /// Proximal weight p.
    pub p: f64,
    /// Averaging weight beta of z, in (0, 1].
    pub beta: f64,
}

impl<X: Point> Solver<X> for SmoothedGda {
    fn advance(
        &self,
        st: &mut SolverState<X>,
        x: &mut X,
        y: &mut Vec<f64>,
        domain: Domain,
        oracle: &mut dyn Oracle<X>,
    ) -> Result<()> {
        if st.calls > 0 {
            let gy = oracle.grad_y(y)?;
            ascend(y, self.alpha, &gy, domain)?;
        }
        let mut z = st.anchor_x.take().unwrap_or_else(|| x.clone());
        let mut pull = x.clone(); // p (x - z)
        pull.axpy(-1.0, &z);
        pull.scale(self.p);
        let gx = oracle.grad_x(y)?;
        descend(x, self.c, &gx)?;
        descend(x, self.c, &pull)?;
        z.scale(1.0 - self.beta);
        z.axpy(self.beta, x);
        st.anchor_x = Some(z);
        st.calls += 1;
        Ok(())
    }
}
