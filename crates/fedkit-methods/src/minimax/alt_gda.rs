//! Alternating gradient descent-ascent: x moves first, then y ascends at the new x,
//! x_{t+1} = x_t - eta_x grad_x f(x_t, y_t), y_{t+1} = P_Y(y_t + eta_y grad_y f(x_{t+1}, y_t)).
//! Yang, Orvieto, Lucchi, He, "Faster Single-loop Algorithms for Minimax Optimization without
//! Strong Concavity", AISTATS 2022, prove it faster than simultaneous GDA under a one-sided PL
//! condition.
//!
//! As a one-point-per-call state machine: the call at x_{t+1} first finishes iteration t's
//! y-step there (from the second call on), then takes the x-step of iteration t + 1 with the new
//! y. After k calls x is x_k and y is y_{k-1}.

use fedkit_core::Result;

use super::{Domain, Oracle, Point, Solver, SolverState, ascend, descend};

/// Alternating GDA.
#[derive(Clone, Copy, Debug)]
pub struct AltGda {
    /// Descent step eta_x.
    pub eta_x: f64,
    /// Ascent step eta_y.
    pub eta_y: f64,
}

impl<X: Point> Solver<X> for AltGda {
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
            ascend(y, self.eta_y, &gy, domain)?;
        }
        let gx = oracle.grad_x(y)?;
        descend(x, self.eta_x, &gx)?;
        st.calls += 1;
        Ok(())
    }
}
