//! Pipeline stages (`[[pipeline]] use = "<name>"`, optionally `on = "all" | "malicious" |
//! "benign"`): clipping, DP, compression, attacks and filters.

pub mod clip;

use fedkit_core::Stage;
use fedkit_core::registry::{Entry, params_resolved};

/// Every registered stage.
pub fn stages() -> &'static [Entry<dyn Stage>] {
    static STAGES: &[Entry<dyn Stage>] = &[Entry {
        name: "clip",
        source: include_str!("clip.rs"),
        build: |t, r| Ok(Box::new(params_resolved::<clip::Clip>(t, "", r)?.validated()?)),
    }];
    STAGES
}
