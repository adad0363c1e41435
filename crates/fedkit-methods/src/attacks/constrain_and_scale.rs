//! `constrain_and_scale`: constrain-and-scale, Bagdasaryan, Veit, Hua, Estrin, Shmatikov, "How
//! To Backdoor Federated Learning", AISTATS 2020 (section 4, "Evading anomaly detection").
//!
//! The attacker trains with an anomaly-evading objective L = alpha L_class + (1 - alpha) L_ano,
//! L_ano = ||w - G||^2 the squared distance to the global model G (a training-time hook: every
//! local gradient becomes alpha g + 2 (1 - alpha) (w - G)), then scales its update by gamma
//! (`boost`, as `model_replacement`; 0 = the cohort size `cohort`), and, when `norm_bound > 0`,
//! shrinks the boosted update to that norm (the largest a norm-bounding server accepts: the
//! paper's "scale up to the bound S"). Pair it with `backdoor` for the backdoor data.
//!
//! Parameters: `alpha` (in (0, 1], default 0.7); `boost` (gamma, default 0 = `cohort`); `cohort`
//! (n, default 10); `norm_bound` (S, default 0 = no bound).
//!
//! ```toml
//! [[pipeline]]
//! use = "constrain_and_scale"
//! on = "malicious"
//! alpha = 0.7
//! boost = 0.0
//! cohort = 10
//! norm_bound = 0.0
//! ```

use fedkit_core::{ClientCtx, Error, Extras, GradHook, Params, Result, Stage, Update};
use serde::{Deserialize, Serialize};

/// Constrain and scale.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConstrainAndScale {
    pub alpha: f64,
    pub boost: f64,
    pub cohort: usize,
    pub norm_bound: f64,
}

impl Default for ConstrainAndScale {
    fn default() -> Self {
        ConstrainAndScale { alpha: 0.7, boost: 0.0, cohort: 10, norm_bound: 0.0 }
    }
}

impl ConstrainAndScale {
    /// Check the parameters.
    pub fn validated(self) -> Result<Self> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(Error::config("alpha", format!("must be in (0, 1], got {}", self.alpha)));
        }
        if !(self.boost >= 0.0 && self.boost.is_finite()) || (self.boost == 0.0 && self.cohort == 0) {
            return Err(Error::config(
                "boost",
                "must be a finite number >= 0 (0: the cohort size, which must be >= 1)",
            ));
        }
        if !(self.norm_bound >= 0.0 && self.norm_bound.is_finite()) {
            return Err(Error::config("norm_bound", format!("must be a finite number >= 0, got {}", self.norm_bound)));
        }
        Ok(self)
    }
}

/// g <- alpha g + 2 (1 - alpha) (w - G).
struct AnomalyTerm<'a> {
    alpha: f32,
    global: &'a Params,
}

impl GradHook for AnomalyTerm<'_> {
    fn on_grad(&mut self, _: usize, w: &Params, g: &mut Params) {
        let k = 2.0 * (1.0 - self.alpha);
        let terms = g.as_mut_slice().iter_mut().zip(w.as_slice()).zip(self.global.as_slice());
        terms.for_each(|((g, w), g0)| *g = self.alpha * *g + k * (w - g0));
    }
}

impl Stage for ConstrainAndScale {
    fn train_hook<'a>(&'a self, cx: &ClientCtx<'a>, _mem: &'a Extras) -> Result<Option<Box<dyn GradHook + 'a>>> {
        Ok(Some(Box::new(AnomalyTerm { alpha: self.alpha as f32, global: cx.global })))
    }
    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        let gamma = if self.boost > 0.0 { self.boost } else { self.cohort as f64 };
        u.delta.scale(gamma as f32);
        let n = u.delta.l2();
        if self.norm_bound > 0.0 && n > self.norm_bound {
            u.delta.scale((self.norm_bound / n) as f32);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::cx;
    use crate::defenses::testing::update;

    #[test]
    fn the_anomaly_term_pulls_towards_the_global_model_and_the_update_is_scaled_to_the_bound() {
        let e = Extras::default();
        let c = cx(1, 0, &e);
        let s = ConstrainAndScale { alpha: 0.5, boost: 10.0, cohort: 10, norm_bound: 2.0 };
        let mut hook = s.train_hook(&c, &e).unwrap().unwrap();
        let w = update(0, &[1.0], 1.0).delta; // the global model is 0
        let mut g = update(0, &[4.0], 1.0).delta;
        hook.on_grad(0, &w, &mut g);
        assert_eq!(g.as_slice(), &[0.5 * 4.0 + 2.0 * 0.5 * 1.0]);
        let mut u = update(0, &[0.3, 0.4], 1.0);
        s.on_update(&c, &mut u, &mut Extras::default()).unwrap();
        assert!((u.delta.l2() - 2.0).abs() < 1e-6, "boosted to 5, shrunk to the bound 2");
        assert!(ConstrainAndScale { alpha: 0.0, ..ConstrainAndScale::default() }.validated().is_err());
    }
}
