use serde::{Deserialize, Serialize};

/// `[learner]`: the learner's gRPC endpoint, which every worker connects to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnerConfig {
    /// `host:port` the learner listens on and workers connect to.
    pub addr: String,
    /// Shared secret workers send as a bearer token; empty disables authentication.
    pub auth_token: String,
    /// Largest gRPC message the learner's server and a worker's client (`run --config`) accept,
    /// in MiB (adapters are sent in chunks below this).
    pub max_message_mib: usize,
}

impl LearnerConfig {
    /// `auth_token` when set (surrounding whitespace ignored).
    pub fn token(&self) -> Option<String> {
        let token = self.auth_token.trim();
        (!token.is_empty()).then(|| token.to_string())
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_mib << 20
    }
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self { addr: "127.0.0.1:50051".into(), auth_token: String::new(), max_message_mib: 64 }
    }
}
