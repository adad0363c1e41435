//! Fixtures for the attack tests: small image data and client contexts.

use std::sync::Arc;

use fedkit_core::{ClientCtx, ClientData, Dataset, Extras, LocalTrain, Params};

/// `n` 1x8x8 images with labels i mod 3.
pub fn images(n: usize) -> ClientData {
    let d = Dataset {
        name: "img".into(),
        x: (0..n * 64).map(|i| (i % 7) as f32 / 7.0).collect(),
        y: (0..n).map(|i| (i % 3) as u32).collect(),
        feature_shape: vec![1, 8, 8],
        classes: 3,
        users: None,
        targets: Vec::new(),
    };
    ClientData::whole(Arc::new(d))
}

/// The context of `client` in `round` (leaked: tests only).
pub fn cx(round: u32, client: u32, broadcast: &Extras) -> ClientCtx<'_> {
    let global: &'static Params = Box::leak(Box::new(crate::defenses::testing::update(0, &[0.0], 1.0).delta));
    let train: &'static LocalTrain = Box::leak(Box::default());
    ClientCtx {
        round,
        client,
        seed: 5,
        global,
        broadcast,
        train,
        epochs: 1,
        malicious: true,
        step: &fedkit_core::PlainStep,
        loss: &fedkit_core::CrossEntropyLoss,
        train_hook: None,
    }
}
