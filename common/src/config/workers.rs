use serde::{Deserialize, Serialize};

/// `[workers]`: the learner's gRPC endpoint and the rollout workers it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// `host:port` the learner listens on and workers connect to.
    pub learner_addr: String,
    /// One rollout worker per entry, each on that device (`cpu`, `cuda`, `cuda:N`).
    /// Empty = no locally spawned workers (remote workers connect on their own).
    pub devices: Vec<String>,
    /// Shared secret workers send as a bearer token; empty disables authentication.
    pub auth_token: String,
    /// Largest gRPC message either side accepts, in MiB (adapters are sent in chunks below this).
    pub max_message_mib: usize,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            learner_addr: "127.0.0.1:50051".into(),
            devices: vec!["cpu".into()],
            auth_token: String::new(),
            max_message_mib: 64,
        }
    }
}
