//! Every configuration struct of asrl-rs, each with the paper's defaults, in one place.
//!
//! Each section is a serde struct with `#[serde(default, deny_unknown_fields)]` so a TOML file
//! may set any subset of fields and a misspelt field is rejected by name.

mod grpc;
mod leases;
mod lora;
mod sampling;

pub use grpc::{GrpcClientConfig, GrpcServerConfig, DEFAULT_MAX_MESSAGE_BYTES};
pub use leases::LeaseConfig;
pub use lora::{LoraConfig, LoraTarget};
pub use sampling::SamplingParams;
