//! Personalised federated learning (issue 13): algorithms whose clients end with a model of
//! their own. Each is an [`fedkit_core::Algorithm`] (registered with the other algorithms) and
//! is measured with per-client local evaluation (`[eval] clients = true`), which calls its
//! [`fedkit_core::Algorithm::adapt`].

pub mod fedaws;
pub mod fedbe;
pub mod feddf;
pub mod fedfomo;
pub mod fedgen;
pub mod fedhenn;
pub mod heterofl;
pub mod ifca;
pub mod local;
pub mod perfedavg;
pub mod pfedme;
pub mod rffl;

use std::sync::Mutex;

use fedkit_core::{Batch, ClientData, Params, RngStream};
use serde::{Deserialize, Serialize};

/// A client's own model after the last round it took part in (pFedMe's theta_i, RFFL's and the
/// standalone baseline's w_i); `None` before its first round.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Personal(pub Option<Params>);

/// A mini-batch of `b` samples drawn without replacement from `data` with `rng`.
pub(crate) fn sample_batch(data: &ClientData, b: usize, rng: &mut RngStream) -> Batch {
    let ids = rng.choose(data.len(), b.clamp(1, data.len().max(1)));
    let mut batch = Batch::default();
    batch.fill(data, &ids, rng);
    batch
}

/// `w += a x` on the trainable entries only (never the running statistics).
pub(crate) fn axpy_trainable(w: &mut Params, a: f32, x: &Params) {
    let layout = w.layout().clone();
    let (ws, xs) = (w.as_mut_slice(), x.as_slice());
    for r in layout.trainable_ranges() {
        ws[r.clone()].iter_mut().zip(&xs[r]).for_each(|(w, x)| *w += a * x);
    }
}

/// Copy `src`'s running statistics (its `Buffer` entries) into `dst`.
pub(crate) fn copy_buffers(dst: &mut Params, src: &Params) {
    let layout = dst.layout().clone();
    for e in layout.entries().iter().filter(|e| e.kind == fedkit_core::ParamKind::Buffer) {
        let r = e.range();
        dst.as_mut_slice()[r.clone()].copy_from_slice(&src.as_slice()[r]);
    }
}

/// Refuse a local step rule that draws its own batches (`dp_sgd`'s Poisson batches): the extra
/// gradient passes of a personalised step are not what its privacy accountant counts.
pub(crate) fn refuse_own_batches(cx: &fedkit_core::ClientCtx, name: &str) -> fedkit_core::Result<()> {
    if cx.step.epoch_batches(1, 1, &mut RngStream::new(0)).is_some() {
        return Err(fedkit_core::Error::config(
            "algorithm.use",
            format!(
                "{name} wraps the local step rule in extra gradient passes, which the rule's own batches (dp_sgd) do not account for; use fedavg with dp_sgd"
            ),
        ));
    }
    Ok(())
}

/// The lock's value even when another thread panicked holding it.
pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
