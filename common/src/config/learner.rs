use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a redacted secret reads as in a written-out config: clearly not a usable token.
pub const REDACTED: &str = "<redacted>";

/// `[learner]`: the learner's gRPC endpoint, which every worker connects to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnerConfig {
    /// `host:port` the learner listens on and workers connect to.
    pub addr: String,
    /// Shared secret workers send as a bearer token; empty disables authentication. Prefer
    /// `--token-file` or `ASRL_TOKEN` (both binaries): the run directory's copy of the config
    /// has it redacted either way.
    pub auth_token: String,
    /// Largest gRPC message the learner's server and a worker's client (`run --config`) accept,
    /// in MiB (adapters are sent in chunks below this).
    pub max_message_mib: usize,
    /// PEM certificate chain the learner serves TLS with (with `tls_key`). Workers started
    /// with this config then connect over `https://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate workers verify the learner with; default `tls_cert` (a self-signed
    /// certificate is its own CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
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

    /// Whether workers reach this learner over TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls_cert.is_some() || self.tls_ca.is_some()
    }

    /// The URL a worker connects to: `https://` when TLS is configured, else `http://`.
    pub fn url(&self) -> String {
        let scheme = if self.uses_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA a worker verifies the learner's certificate with.
    pub fn worker_ca(&self) -> Option<PathBuf> {
        self.tls_ca.clone().or_else(|| self.tls_cert.clone())
    }
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:50051".into(),
            auth_token: String::new(),
            max_message_mib: 64,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }
}
