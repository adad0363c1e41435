//! `clip`: L2-norm clipping of each client's update, delta <- delta * min(1, C / ||delta||_2).
//! The client half of DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent
//! Language Models", ICLR 2018) and the norm-bounding defence of Sun et al. ("Can You Really
//! Backdoor Federated Learning?", 2019).
//!
//! Parameters: `max_norm` (the clipping bound C > 0). Records metric `clipped` (1 when the update
//! was scaled down).
//!
//! ```toml
//! [[pipeline]]
//! use = "clip"
//! max_norm = 1.0
//! ```

use fedkit_core::{ClientCtx, Error, Extras, Result, Stage, Update};
use serde::{Deserialize, Serialize};

/// Update-norm clipping.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Clip {
    /// Clipping bound C.
    pub max_norm: f64,
}

impl Default for Clip {
    fn default() -> Self {
        Clip { max_norm: 1.0 }
    }
}

impl Clip {
    /// Check C.
    pub fn validated(self) -> Result<Self> {
        if !(self.max_norm > 0.0 && self.max_norm.is_finite()) {
            return Err(Error::config("max_norm", format!("must be a positive number, got {}", self.max_norm)));
        }
        Ok(self)
    }
}

impl Stage for Clip {
    fn on_update(&self, _cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        let norm = u.delta.l2();
        let clipped = norm > self.max_norm;
        if clipped {
            u.delta.scale((self.max_norm / norm) as f32);
        }
        u.metrics.insert("clipped".into(), clipped as u8 as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::{Layout, LocalTrain, Metrics, ParamKind, Params};
    use std::sync::Arc;

    #[test]
    fn clips_to_the_bound_and_leaves_small_updates_alone() {
        let mut l = Layout::new();
        l.push("w", &[2], ParamKind::Weight);
        let l = Arc::new(l);
        let global = Params::zeros(l.clone());
        let (extras, train) = (Extras::default(), LocalTrain::default());
        let cx = ClientCtx {
            round: 1,
            client: 0,
            seed: 0,
            global: &global,
            broadcast: &extras,
            train: &train,
            epochs: 1,
            malicious: false,
            step: &fedkit_core::PlainStep,
            loss: &fedkit_core::CrossEntropyLoss,
            train_hook: None,
        };
        let stage = Clip { max_norm: 1.0 };
        let mut u = Update {
            client: 0,
            delta: Params::from_vec(l.clone(), vec![3.0, 4.0]).unwrap(),
            weight: 1.0,
            extras: Extras::default(),
            metrics: Metrics::new(),
        };
        stage.on_update(&cx, &mut u, &mut Extras::default()).unwrap();
        assert!((u.delta.l2() - 1.0).abs() < 1e-6);
        assert_eq!(u.delta.as_slice(), &[0.6, 0.8]);
        let mut small = Update { delta: Params::from_vec(l, vec![0.3, 0.4]).unwrap(), ..u };
        stage.on_update(&cx, &mut small, &mut Extras::default()).unwrap();
        assert_eq!(small.delta.as_slice(), &[0.3, 0.4]);
        assert_eq!(small.metrics["clipped"], 0.0);
    }
}
