//! fedkit methods: one file per paper method, registered by name. Algorithms (a paper's client +
//! server rule), aggregators (mean or robust rules) and pipeline stages (clipping, DP,
//! compression, attacks, defences) compose freely in one config.
//!
//! Adding a method: write `<kind>/<name>.rs` with module docs (what it does, paper, parameters
//! with the paper's symbols, example TOML), implement the trait, add one line to the kind's
//! registry in `<kind>/mod.rs`, and test its defining property at the bottom of the file.

pub mod aggregators;
pub mod algorithms;
pub mod analysis;
pub mod attacks;
pub mod compression;
pub mod defenses;
pub mod local_steps;
pub mod losses;
pub mod minimax;
pub mod model_compression;
pub mod personalization;
pub mod privacy;
pub mod privacy_attacks;
pub mod sparse;
pub mod stages;

pub use aggregators::aggregators;
pub use algorithms::algorithms;
pub use local_steps::local_steps;
pub use losses::losses;
pub use model_compression::model_compression;
pub use privacy_attacks::privacy_attacks;
pub use stages::stages;
