//! fedkit core: flat parameters, updates, contexts, seeded random streams, the extension traits,
//! the registry and the one error type. No ML backend and no async runtime appear here.

pub mod codec;
pub mod critical;
pub mod data;
pub mod error;
pub mod hessian;
pub mod loss;
pub mod mask;
pub mod model;
pub mod npy;
pub mod optim;
pub mod params;
pub mod partition;
pub mod protocol;
pub mod registry;
pub mod rng;
pub mod stats;
pub mod submodel;
pub mod tensor_file;
pub mod traits;
pub mod update;
pub mod wire;

pub use critical::critical_sample_ratio;
pub use data::{Batch, ClientData, Dataset, FeatureAffine, Stamp};
pub use error::{Error, Result};
pub use hessian::{HessianVectorProduct, hessian_top_eigenvalue};
pub use loss::{
    AdjustedPrediction, CrossEntropyLoss, Loss, LossData, LossRun, WithHead, balanced_accuracy, class_accuracy,
};
pub use mask::{Compress, CompressCtx, Mask, MaskHook, PruneScope};
pub use model::{
    Activation, CrossEntropy, EvalStats, GradHook, Head, LocalStep, Mode, Model, ModelSpec, NoHook, OutputGrads,
    Outputs, PlainStep, StepCtx, TrainStats, argmax, evaluate_in_domain, evaluate_range, forward_head, local_train,
    output_activations,
};
pub use optim::{LocalTrain, OptimizerKind};
pub use params::{Layout, ParamKind, Params};
pub use partition::Partitioner;
pub use rng::RngStream;
pub use submodel::SubModel;
pub use traits::{
    AdaptCtx, Aggregator, AggregatorView, Algorithm, AnyState, Architecture, BATCH_STREAM, ClientCtx, CohortSampling,
    DynAlgorithm, ModelPool, RoundCtx, RunInfo, SampleCtx, ServerView, SharedHook, Stage, State, StragglerPolicy,
    Transport, local_update, local_update_from,
};
pub use update::{
    Aggregate, ClientFailure, ClientId, Downlink, Extra, Extras, Metrics, PersonalDownlink, Update, Weighting,
};
