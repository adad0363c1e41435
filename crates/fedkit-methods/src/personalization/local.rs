//! `local`: standalone training, the no-collaboration baseline of personalised federated
//! learning (PFLlib's "Local"; the "standalone" accuracies that RFFL's fairness metric takes as
//! each client's contribution: Xu and Lyu, FL-ICML 2021, section 4).
//!
//! Every client trains a model of its own: from the common initial model in its first round,
//! then from where it stopped, with the usual local epochs each time it is sampled. Nothing is
//! shared: the server leaves the global model as it is, and a client receives no model after
//! its first round (`bytes_down` counts only that first download). Each client still reports
//! its change as its update, which `bytes_up` counts and the server ignores. A client's
//! personalised model (per-client evaluation) is its own model; one that never trained is
//! evaluated with the initial model. Clients may train different architectures
//! (`[[model.per_client]]`): each starts from its architecture's initial model.
//!
//! No parameters.
//!
//! ```toml
//! [algorithm]
//! use = "local"
//! ```

use fedkit_core::{
    Aggregate, Algorithm, BATCH_STREAM, ClientCtx, ClientData, ClientId, Metrics, Model, NoHook, Params,
    PersonalDownlink, Result, RoundCtx, Update, local_update_from,
};
use serde::{Deserialize, Serialize};

use super::Personal;

/// Standalone training (no parameters).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Local {}

/// The clients that have trained (they need no model from the server any more).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trained(pub std::collections::BTreeSet<ClientId>);

impl Algorithm for Local {
    type Client = Personal;
    type Server = Trained;

    fn keeps_client_models(&self) -> bool {
        true
    }

    fn supports_architectures(&self) -> bool {
        true
    }

    fn personal_downlink(
        &self,
        _r: &RoundCtx,
        s: &Trained,
        client: ClientId,
        _m: &dyn Model,
    ) -> Result<Option<PersonalDownlink>> {
        Ok(s.0.contains(&client).then(|| PersonalDownlink { model_values: Some(0), ..PersonalDownlink::default() }))
    }

    fn client_update(&self, cx: &ClientCtx, m: &mut dyn Model, d: &ClientData, st: &mut Personal) -> Result<Update> {
        let start = st.0.clone().unwrap_or_else(|| cx.global.clone());
        let (mut u, w) = local_update_from(cx, start.clone(), BATCH_STREAM, m, d, &mut NoHook)?;
        u.delta = w.sub(&start);
        st.0 = Some(w);
        Ok(u)
    }

    fn server_update(&self, r: &RoundCtx, _w: &mut Params, s: &mut Trained, _agg: &Aggregate) -> Result<Metrics> {
        s.0.extend(r.cohort.iter().copied());
        Ok(Metrics::new())
    }

    fn personalize(&self, _global: &Params, st: &Personal) -> Option<Params> {
        st.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::small_fed;

    // Each client's model is exactly what training alone on its data gives, whoever else takes
    // part: client 0's model is the same with and without client 1 in the federation.
    #[test]
    fn a_client_model_is_its_training_alone() {
        let mut both = small_fed(Local {}, &[12, 12], 6);
        let mut alone = small_fed(Local {}, &[12, 12], 6);
        let start = both.global.clone();
        for r in 1..=3 {
            both.round(r, &[0, 1]);
            alone.round(r, &[0]);
        }
        assert_eq!(both.global, start, "the server never moves the global model");
        let (a, b) = (both.clients[0].0.as_ref().unwrap(), alone.clients[0].0.as_ref().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, &start);
        assert_ne!(both.clients[1].0.as_ref(), Some(a));
    }

    #[test]
    fn only_the_first_round_downloads_a_model() {
        let mut f = small_fed(Local {}, &[12, 12], 6);
        f.round(1, &[0]);
        let r = RoundCtx {
            round: 2,
            cohort: &[0, 1],
            global: &f.global,
            seed: 7,
            population: 2,
            malicious: &[],
            draws: &[],
        };
        let d0 = f.algo.personal_downlink(&r, &f.server, 0, &f.model).unwrap();
        assert_eq!(d0.map(|d| d.model_values), Some(Some(0)));
        assert!(
            f.algo.personal_downlink(&r, &f.server, 1, &f.model).unwrap().is_none(),
            "client 1 still needs the initial model"
        );
    }
}
