//! Minimax solvers for min_x max_{y in Y} f(x, y), given gradient oracles grad_x f and grad_y f,
//! with Y = R^n or the probability simplex (Euclidean projection, [`project_simplex`]). Agnostic
//! and distributionally robust FL (`afl`, `drfa`) use them with x = the model and y = the mixture
//! weights lambda over clients.
//!
//! Solvers (one file each; `solver = "<name>"` in `afl`):
//! - [`gda`]: simultaneous gradient descent-ascent;
//! - [`alt_gda`]: alternating GDA (Yang, Orvieto, Lucchi, He, "Faster Single-loop Algorithms for
//!   Minimax Optimization without Strong Concavity", AISTATS 2022);
//! - [`smoothed_gda`]: smoothed GDA (Zhang, Xiao, Sun, Luo, "A Single-Loop Smoothed Gradient
//!   Descent-Ascent Algorithm for Nonconvex-Concave Min-Max Problems", NeurIPS 2020);
//! - [`extragradient`]: Korpelevich's extragradient method ("The extragradient method for finding
//!   saddle points and other problems", Ekonomika i Matematicheskie Metody, 1976), the base of
//!   the extra-gradient difference method (Liu et al., NeurIPS 2023).
//!
//! Not implemented: the extra-gradient difference acceleration itself and the accelerated
//! proximal-point solvers of Thekumparampil et al. ("Efficient Algorithms for Smooth Minimax
//! Optimization", NeurIPS 2019) and Lin, Jin, Jordan ("Near-Optimal Algorithms for Minimax
//! Optimization", COLT 2020), whose nested loops do not map onto one round per oracle call.
//!
//! The solvers are written as state machines that make progress from gradients at *one* x per
//! call ([`Solver::advance`]), for any y (an [`Oracle`] at a fixed x): a federated round supplies
//! exactly that (the clients' deltas and losses at the broadcast model combine with any mixture
//! weights), so one call is one round. Alternating and smoothed GDA need grad_y at the new x:
//! their call at x first finishes the previous iteration's y-step there, then takes the next
//! x-step (one call per iteration, y one half-step behind). Extragradient needs two calls per
//! iteration (extrapolation, then the update from the anchor). [`solve`] runs a solver on
//! closures.

pub mod alt_gda;
pub mod extragradient;
pub mod gda;
pub mod simplex;
pub mod smoothed_gda;

pub use simplex::{in_simplex, project_simplex};

use fedkit_core::{Error, Params, Result};
use serde::{Deserialize, Serialize};

/// An iterate of the minimising player: a flat vector or model parameters.
pub trait Point: Clone {
    /// Number of values.
    fn len(&self) -> usize;
    /// True when there are no values.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// self += a * d (same length).
    fn axpy(&mut self, a: f64, d: &Self);
    /// self *= a.
    fn scale(&mut self, a: f64);
}

impl Point for Vec<f64> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn axpy(&mut self, a: f64, d: &Self) {
        self.iter_mut().zip(d).for_each(|(s, v)| *s += a * v);
    }
    fn scale(&mut self, a: f64) {
        self.iter_mut().for_each(|s| *s *= a);
    }
}

impl Point for Vec<f32> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn axpy(&mut self, a: f64, d: &Self) {
        self.iter_mut().zip(d).for_each(|(s, v)| *s = (*s as f64 + a * *v as f64) as f32);
    }
    fn scale(&mut self, a: f64) {
        self.iter_mut().for_each(|s| *s = (*s as f64 * a) as f32);
    }
}

impl Point for Params {
    fn len(&self) -> usize {
        Params::len(self)
    }
    fn axpy(&mut self, a: f64, d: &Self) {
        Params::axpy(self, a as f32, d);
    }
    fn scale(&mut self, a: f64) {
        Params::scale(self, a as f32);
    }
}

/// The maximising player's domain Y.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Y = R^n (no projection).
    Free,
    /// Y = the probability simplex (Euclidean projection).
    Simplex,
}

impl Domain {
    /// Project `y` onto this domain.
    pub fn project(self, y: &mut Vec<f64>) -> Result<()> {
        if self == Domain::Simplex {
            *y = project_simplex(y)?;
        }
        Ok(())
    }
}

/// Gradients of f at a fixed x (the solver's current x during one [`Solver::advance`]), for any y.
pub trait Oracle<X> {
    /// grad_x f(x, y).
    fn grad_x(&mut self, y: &[f64]) -> Result<X>;
    /// grad_y f(x, y).
    fn grad_y(&mut self, y: &[f64]) -> Result<Vec<f64>>;
}

/// What a solver keeps between calls; serialisable, so it survives checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SolverState<X> {
    /// Calls of [`Solver::advance`] so far.
    pub calls: u64,
    /// Smoothed GDA's auxiliary point z; extragradient's anchor x (set between its two calls).
    pub anchor_x: Option<X>,
    /// Extragradient's anchor y (set between its two calls).
    pub anchor_y: Option<Vec<f64>>,
}

impl<X> Default for SolverState<X> {
    fn default() -> Self {
        SolverState { calls: 0, anchor_x: None, anchor_y: None }
    }
}

/// A minimax solver as a state machine: each call uses gradients at the current x only.
pub trait Solver<X: Point> {
    /// Make progress with the gradients at the current `x` (any y), updating `x`, `y` and the
    /// state in place; `y` stays in `domain`. After the call `x` is where the next gradients are
    /// needed.
    fn advance(
        &self,
        st: &mut SolverState<X>,
        x: &mut X,
        y: &mut Vec<f64>,
        domain: Domain,
        oracle: &mut dyn Oracle<X>,
    ) -> Result<()>;
}

/// Which solver (`solver = "..."` in a method's config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverKind {
    /// Simultaneous gradient descent-ascent.
    #[default]
    Gda,
    /// Alternating gradient descent-ascent.
    AltGda,
    /// Smoothed gradient descent-ascent (Zhang et al., NeurIPS 2020).
    SmoothedGda,
    /// Korpelevich's extragradient.
    Extragradient,
}

/// Step sizes and smoothing parameters shared by the solvers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Steps {
    /// Descent step for x (eta_x; smoothed GDA's c).
    pub eta_x: f64,
    /// Ascent step for y (eta_y; smoothed GDA's alpha).
    pub eta_y: f64,
    /// Smoothed GDA's proximal weight p (K = f + p/2 ||x - z||^2).
    pub p: f64,
    /// Smoothed GDA's averaging weight beta (z <- z + beta (x - z)), in (0, 1].
    pub beta: f64,
}

impl SolverKind {
    /// The solver of this kind with `steps`.
    pub fn build<X: Point + 'static>(self, steps: Steps) -> Box<dyn Solver<X>> {
        let Steps { eta_x, eta_y, p, beta } = steps;
        match self {
            SolverKind::Gda => Box::new(gda::Gda { eta_x, eta_y }),
            SolverKind::AltGda => Box::new(alt_gda::AltGda { eta_x, eta_y }),
            SolverKind::SmoothedGda => Box::new(smoothed_gda::SmoothedGda { c: eta_x, alpha: eta_y, p, beta }),
            SolverKind::Extragradient => Box::new(extragradient::Extragradient { eta_x, eta_y }),
        }
    }
    /// Oracle calls (federated rounds) per iteration: 2 for extragradient, else 1.
    pub fn calls_per_iteration(self) -> u64 {
        if self == SolverKind::Extragradient { 2 } else { 1 }
    }
}

/// x <- x - eta * g, checking the gradient's length.
pub(crate) fn descend<X: Point>(x: &mut X, eta: f64, g: &X) -> Result<()> {
    if g.len() != x.len() {
        return Err(Error::Shape(format!("grad_x has {} values, x has {}", g.len(), x.len())));
    }
    x.axpy(-eta, g);
    Ok(())
}

/// y <- P_Y(y + eta * g), checking the gradient's length.
pub(crate) fn ascend(y: &mut Vec<f64>, eta: f64, g: &[f64], domain: Domain) -> Result<()> {
    if g.len() != y.len() {
        return Err(Error::Shape(format!("grad_y has {} values, y has {}", g.len(), y.len())));
    }
    y.iter_mut().zip(g).for_each(|(y, g)| *y += eta * g);
    domain.project(y)
}

/// An [`Oracle`] at a fixed x from gradient closures of (x, y).
struct FnOracle<'a, X> {
    x: X,
    grad_x: &'a dyn Fn(&X, &[f64]) -> X,
    grad_y: &'a dyn Fn(&X, &[f64]) -> Vec<f64>,
}

impl<X> Oracle<X> for FnOracle<'_, X> {
    fn grad_x(&mut self, y: &[f64]) -> Result<X> {
        Ok((self.grad_x)(&self.x, y))
    }
    fn grad_y(&mut self, y: &[f64]) -> Result<Vec<f64>> {
        Ok((self.grad_y)(&self.x, y))
    }
}

/// Run `solver` for `calls` calls from (x, y) (y is projected onto `domain` first) with gradient
/// closures; `observe` sees every iterate. Returns the final (x, y).
#[allow(clippy::too_many_arguments)]
pub fn solve<X: Point>(
    solver: &dyn Solver<X>,
    mut x: X,
    mut y: Vec<f64>,
    domain: Domain,
    calls: usize,
    grad_x: &dyn Fn(&X, &[f64]) -> X,
    grad_y: &dyn Fn(&X, &[f64]) -> Vec<f64>,
    observe: &mut dyn FnMut(&X, &[f64]),
) -> Result<(X, Vec<f64>)> {
    let mut st = SolverState::default();
    domain.project(&mut y)?;
    for _ in 0..calls {
        let mut oracle = FnOracle { x: x.clone(), grad_x, grad_y };
        solver.advance(&mut st, &mut x, &mut y, domain, &mut oracle)?;
        observe(&x, &y);
    }
    Ok((x, y))
}

#[cfg(test)]
mod tests {
    //! The defining properties of every solver: convergence to the saddle point of a
    //! strongly-convex-strongly-concave quadratic and of a simplex-constrained problem (with y in
    //! the simplex at every iterate); on the bilinear f = x^T y extragradient converges while
    //! simultaneous GDA spirals out.
    use super::*;

    const ALL: [SolverKind; 4] =
        [SolverKind::Gda, SolverKind::AltGda, SolverKind::SmoothedGda, SolverKind::Extragradient];

    fn steps(eta: f64) -> Steps {
        Steps { eta_x: eta, eta_y: eta, p: 1.0, beta: 0.5 }
    }

    fn dist(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
    }

    #[test]
    fn every_solver_finds_the_saddle_of_a_strongly_convex_strongly_concave_quadratic() {
        // f = a/2 |x - xs|^2 + (x - xs)^T B (y - ys) - c/2 |y - ys|^2, saddle (xs, ys).
        let (a, c) = (1.0, 0.5);
        let b = [[0.8, -0.3, 0.5], [0.2, 1.0, -0.7]]; // 2 x 3
        let (xs, ys) = (vec![1.0, -2.0], vec![0.5, 3.0, -1.0]);
        let gx = |x: &Vec<f64>, y: &[f64]| -> Vec<f64> {
            (0..2).map(|i| a * (x[i] - xs[i]) + (0..3).map(|j| b[i][j] * (y[j] - ys[j])).sum::<f64>()).collect()
        };
        let gy = |x: &Vec<f64>, y: &[f64]| -> Vec<f64> {
            (0..3).map(|j| (0..2).map(|i| b[i][j] * (x[i] - xs[i])).sum::<f64>() - c * (y[j] - ys[j])).collect()
        };
        for kind in ALL {
            let solver = kind.build::<Vec<f64>>(steps(0.1));
            let calls = 3000 * kind.calls_per_iteration() as usize;
            let (x, y) =
                solve(solver.as_ref(), vec![0.0; 2], vec![0.0; 3], Domain::Free, calls, &gx, &gy, &mut |_, _| {})
                    .unwrap();
            let err = dist(&x, &xs).max(dist(&y, &ys));
            assert!(err < 1e-4, "{kind:?}: distance to the saddle point {err:e} (x {x:?}, y {y:?})");
        }
    }

    #[test]
    fn on_the_bilinear_game_extragradient_converges_and_simultaneous_gda_diverges() {
        // f = x^T y: the saddle is (0, 0); grad_x = y, grad_y = x.
        let gx = |_: &Vec<f64>, y: &[f64]| y.to_vec();
        let gy = |x: &Vec<f64>, _: &[f64]| x.clone();
        let (x0, y0) = (vec![1.0, -0.5], vec![0.5, 1.0]);
        let start = dist(&x0, &[0.0; 2]).hypot(dist(&y0, &[0.0; 2]));
        let run = |kind: SolverKind, iterations: usize| {
            let solver = kind.build::<Vec<f64>>(steps(0.2));
            let calls = iterations * kind.calls_per_iteration() as usize;
            let (x, y) =
                solve(solver.as_ref(), x0.clone(), y0.clone(), Domain::Free, calls, &gx, &gy, &mut |_, _| {}).unwrap();
            dist(&x, &[0.0; 2]).hypot(dist(&y, &[0.0; 2]))
        };
        let eg = run(SolverKind::Extragradient, 1000);
        assert!(eg < 1e-4, "extragradient should converge to the saddle: distance {eg:e}");
        let gda = run(SolverKind::Gda, 1000);
        // Each GDA step multiplies the distance by sqrt(1 + eta^2).
        assert!(gda > 10.0 * start, "simultaneous GDA should spiral out: distance {gda} from {start}");
    }

    #[test]
    fn every_solver_finds_the_minimax_point_over_the_simplex_and_stays_in_it() {
        // min_x max_{lambda in simplex} sum_k lambda_k (x - a_k)^2 / 2 = max_k (x - a_k)^2 / 2:
        // the centre of the smallest enclosing interval, x* = (min a + max a) / 2, with lambda*
        // split evenly between the two extreme points.
        let a = [-1.0, 0.5, 3.0, 2.0];
        let (xs, ls) = (1.0, [0.5, 0.0, 0.5, 0.0]);
        let gx = |x: &Vec<f64>, l: &[f64]| vec![l.iter().zip(a).map(|(l, a)| l * (x[0] - a)).sum::<f64>()];
        let gy = |x: &Vec<f64>, _: &[f64]| a.iter().map(|a| (x[0] - a) * (x[0] - a) / 2.0).collect::<Vec<_>>();
        for kind in ALL {
            let solver = kind.build::<Vec<f64>>(steps(0.05));
            let calls = 20_000 * kind.calls_per_iteration() as usize;
            let mut seen = 0;
            let mut check = |_: &Vec<f64>, l: &[f64]| {
                assert!(in_simplex(l, 1e-6), "{kind:?}: lambda left the simplex: {l:?}");
                seen += 1;
            };
            let (x, l) = solve(
                solver.as_ref(),
                vec![-3.0],
                vec![1.0, 0.0, 0.0, 0.0],
                Domain::Simplex,
                calls,
                &gx,
                &gy,
                &mut check,
            )
            .unwrap();
            assert_eq!(seen, calls);
            assert!((x[0] - xs).abs() < 1e-4, "{kind:?}: x = {} (want {xs})", x[0]);
            assert!(dist(&l, &ls) < 1e-4, "{kind:?}: lambda = {l:?} (want {ls:?})");
        }
    }

    #[test]
    fn solvers_work_on_f32_vectors_and_check_gradient_lengths() {
        let gx = |x: &Vec<f32>, _: &[f64]| x.iter().map(|v| v - 2.0).collect::<Vec<f32>>();
        let gy = |_: &Vec<f32>, y: &[f64]| y.iter().map(|v| -v).collect::<Vec<f64>>();
        let solver = SolverKind::Gda.build::<Vec<f32>>(steps(0.5));
        let (x, y) =
            solve(solver.as_ref(), vec![0.0f32; 3], vec![1.0], Domain::Free, 60, &gx, &gy, &mut |_, _| {}).unwrap();
        assert!(x.iter().all(|v| (v - 2.0).abs() < 1e-5), "{x:?}");
        assert!(y[0].abs() < 1e-5);
        let short = |_: &Vec<f32>, _: &[f64]| vec![0.0f32; 2];
        assert!(
            solve(solver.as_ref(), vec![0.0f32; 3], vec![1.0], Domain::Free, 1, &short, &gy, &mut |_, _| {}).is_err()
        );
    }
}
