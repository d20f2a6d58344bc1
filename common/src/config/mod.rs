//! Every configuration struct of asrl-rs, each with the paper's defaults, in one place.
//!
//! Each section is a serde struct with `#[serde(default, deny_unknown_fields)]` so a TOML file
//! may set any subset of fields and a misspelt field is rejected by name.

mod data;
mod engine;
mod eval;
mod grpc;
mod keys;
mod learner;
mod leases;
mod lora;
mod reward;
mod model;
mod root;
mod run;
mod sampling;
mod schedule;
mod workers;
mod train;

pub use data::DataConfig;
pub use engine::{ActivationCheckpointing, EngineConfig};
pub use eval::EvalConfig;
pub use grpc::{GrpcClientConfig, GrpcServerConfig, DEFAULT_MAX_MESSAGE_BYTES};
pub use leases::LeaseConfig;
pub use learner::{LearnerConfig, REDACTED};
pub use lora::{LoraConfig, LoraTarget};
pub use reward::{RewardComponentConfig, RewardConfig, DEFAULT_MAX_ABS_REWARD};
pub use model::{ModelSection, WeightDtype};
pub use root::{AsrlConfig, ConfigError};
pub use run::RunConfig;
pub use sampling::{SamplingError, SamplingField, SamplingParams};
pub use schedule::{Monitor, ScheduleConfig, ScheduleKind};
pub use workers::{WorkersConfig, DEFAULT_MAX_SEQUENCES};
pub use train::{
    AdvantageScaling, CheckpointConfig, GrpoConfig, LossAggregation, OptimiserConfig, SftConfig,
    TrainConfig,
};
