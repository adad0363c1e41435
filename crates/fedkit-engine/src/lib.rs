//! fedkit engine: the run configuration, the deterministic round loop with in-process parallel
//! clients, checkpoints and exact resume, and the metric files of a run directory.

pub mod certify;
pub mod checkpoint;
pub mod config;
pub mod downlink;
pub mod engine;
pub mod model_store;
mod receive;
pub mod record;
pub mod run;
mod secure;
pub mod tensorboard;
pub mod workers;

pub use config::RunConfig;
pub use engine::{Engine, client_step, poisson_cohort, uniform_cohort};
pub use record::Record;
pub use run::{Progress, RunDir, Summary, drive, resume, start};
