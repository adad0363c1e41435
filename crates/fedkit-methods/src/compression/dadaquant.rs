//! `dadaquant`: doubly-adaptive quantisation, Hönig, Zhao, Mullins, "DAdaQuant: Doubly-adaptive
//! quantization for communication-efficient Federated Learning", ICML 2022.
//!
//! Federated QSGD (`qsgd`'s quantiser on the update) whose level changes over time and across
//! clients:
//! - **Time-adaptive.** The server keeps G~_t = psi G~_(t-1) + (1 - psi) G^_t, a running
//!   average of the weighted training loss G^_t = sum_k w_k F_k. The level starts at q_min. When
//!   G~ has not fallen over the last phi rounds (G~_t >= G~_(t-phi)) and the level has held for
//!   phi rounds, it doubles, up to q_max.
//! - **Client-adaptive** (the paper's Theorem 1). With w_i the sampled clients' weights (sample
//!   counts over their sum), client i gets q_i = max(1, round(sqrt(a / b) w_i^(2/3))), where
//!   a = sum_j w_j^(2/3) and b = sum_j w_j^2 / q_t^2. This keeps the expected quantisation
//!   variance of the static level q_t with fewer levels in all.
//!
//! The server plans both before each round (`on_round_start`); in a deployment the levels
//! travel with the broadcast.
//!
//! Departure: the paper's F_k is client k's loss on the received model, one extra evaluation
//! pass. fedkit uses the mean training loss of the local epochs the client ran anyway (the
//! update's `loss` metric), the same quantity one local pass later, at no cost.
//!
//! Parameters (the paper's symbols): `q_min` (default 1), `q_max` (default 16), `psi` (psi in
//! [0, 1), default 0.9), `phi` (phi >= 1 rounds, default 0 = a tenth of the run's rounds),
//! `bucket` (coordinates per QSGD bucket, 0 = the whole update), `time_adaptive` and
//! `client_adaptive` (both default true; both off is static QSGD at q_max). Logs `dadaquant_q`
//! (q_t) and `dadaquant_mean_q` (the cohort's mean q_i).
//!
//! ```toml
//! [[pipeline]]
//! use = "dadaquant"
//! q_min = 1
//! q_max = 16
//! psi = 0.9
//! phi = 0
//! bucket = 0
//! time_adaptive = true
//! client_adaptive = true
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;

use fedkit_core::{Aggregate, ClientCtx, ClientId, Error, Extras, Result, RoundCtx, RunInfo, Stage, Update};
use serde::{Deserialize, Serialize};

use super::qsgd::quantize_buckets;
use super::send;

/// DAdaQuant.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DAdaQuant {
    pub q_min: u32,
    pub q_max: u32,
    pub psi: f64,
    pub phi: u32,
    pub bucket: usize,
    pub time_adaptive: bool,
    pub client_adaptive: bool,
    #[serde(skip)]
    state: Mutex<Schedule>,
}

/// The server's schedule, saved in checkpoints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Schedule {
    q: u32,
    /// G~ after each round.
    history: Vec<f64>,
    /// The round of the last doubling.
    last_increase: u32,
    /// This round's level per client.
    levels: BTreeMap<ClientId, u32>,
}

impl Default for DAdaQuant {
    fn default() -> Self {
        DAdaQuant {
            q_min: 1,
            q_max: 16,
            psi: 0.9,
            phi: 0,
            bucket: 0,
            time_adaptive: true,
            client_adaptive: true,
            state: Mutex::new(Schedule::default()),
        }
    }
}

impl DAdaQuant {
    pub fn validated(self) -> Result<Self> {
        if self.q_min == 0 || self.q_max < self.q_min {
            return Err(Error::config(
                "q_min",
                format!("need 1 <= q_min <= q_max, got {} and {}", self.q_min, self.q_max),
            ));
        }
        if !(0.0..1.0).contains(&self.psi) {
            return Err(Error::config("psi", format!("must be in [0, 1), got {}", self.psi)));
        }
        Ok(self)
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Theorem 1's levels for weights `w` (summing to 1) at level `q`.
pub fn client_levels(w: &[f64], q: u32) -> Vec<u32> {
    let a: f64 = w.iter().map(|x| x.powf(2.0 / 3.0)).sum();
    let b: f64 = w.iter().map(|x| x * x).sum::<f64>() / (q as f64 * q as f64);
    let c = (a / b).sqrt();
    w.iter().map(|x| ((c * x.powf(2.0 / 3.0)).round() as u32).max(1)).collect()
}

impl Stage for DAdaQuant {
    fn prepare(&mut self, run: &RunInfo) -> Result<()> {
        if self.phi == 0 {
            self.phi = (run.rounds / 10).max(1);
        }
        let mut s = self.schedule();
        if s.q == 0 {
            s.q = if self.time_adaptive { self.q_min } else { self.q_max };
        }
        Ok(())
    }

    fn on_round_start(&mut self, r: &RoundCtx, sizes: &[usize]) -> Result<()> {
        let (phi, q_max, time_adaptive, client_adaptive) =
            (self.phi, self.q_max, self.time_adaptive, self.client_adaptive);
        let mut s = self.schedule();
        let h = &s.history;
        let prev = r.round.saturating_sub(1);
        if time_adaptive
            && h.len() > phi as usize
            && prev.saturating_sub(s.last_increase) >= phi
            && h[h.len() - 1] >= h[h.len() - 1 - phi as usize]
            && s.q < q_max
        {
            s.q = (2 * s.q).min(q_max);
            s.last_increase = prev;
        }
        let total: f64 = sizes.iter().map(|&n| n as f64).sum::<f64>().max(1.0);
        let w: Vec<f64> = sizes.iter().map(|&n| n as f64 / total).collect();
        let levels = if client_adaptive { client_levels(&w, s.q) } else { vec![s.q; w.len()] };
        s.levels = r.cohort.iter().copied().zip(levels).collect();
        Ok(())
    }

    fn on_update(&self, cx: &ClientCtx, u: &mut Update, _mem: &mut Extras) -> Result<()> {
        let q = self.schedule().levels.get(&cx.client).copied().unwrap_or(self.q_max);
        let blocks = quantize_buckets(u.delta.as_slice(), q, self.bucket, &mut cx.rng("dadaquant"));
        send(u, blocks)
    }

    fn on_cohort(&mut self, _r: &RoundCtx, us: &mut Vec<Update>) -> Result<()> {
        let (w, l) = us
            .iter()
            .filter_map(|u| u.metrics.get("loss").map(|l| (u.weight as f64, *l)))
            .fold((0.0, 0.0), |(w, l), (wi, li)| (w + wi, l + wi * li));
        if w > 0.0 {
            let psi = self.psi;
            let mut s = self.schedule();
            let g = l / w;
            let smoothed = match s.history.last() {
                Some(&prev) => psi * prev + (1.0 - psi) * g,
                None => g,
            };
            s.history.push(smoothed);
        }
        Ok(())
    }

    fn on_aggregate(&mut self, _r: &RoundCtx, a: &mut Aggregate) -> Result<()> {
        let s = self.schedule();
        a.metrics.insert("dadaquant_q".into(), s.q as f64);
        let mean = s.levels.values().map(|&q| q as f64).sum::<f64>() / s.levels.len().max(1) as f64;
        a.metrics.insert("dadaquant_mean_q".into(), mean);
        Ok(())
    }

    fn state(&self) -> Result<Vec<u8>> {
        fedkit_core::codec::to_bytes(&*self.schedule(), "dadaquant state")
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            *self.schedule() = fedkit_core::codec::from_bytes(bytes, "dadaquant: a foreign checkpoint")?;
        }
        Ok(())
    }
}
