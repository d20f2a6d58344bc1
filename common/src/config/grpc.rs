use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest gRPC message either end encodes or decodes: 16 MiB.
///
/// tonic's default decode limit is 4 MiB. Adapter chunks are at most 1 MiB, but one
/// `SubmitGroups` carries every group of a lease (tokens + log-probs: 8 bytes per token, so
/// 8 prompts × 6 completions × 4096 tokens ≈ 1.6 MiB plus framing) and a long lease may hit
/// 4 MiB. 16 MiB leaves room while still bounding what one request can make the learner allocate.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// How a gRPC server (learner, or a worker's status endpoint) listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcServerConfig {
    /// Listen address. Default `127.0.0.1:50051`; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Shared secret every call must carry as `authorization: Bearer <token>`. Required when
    /// `bind` is not a loopback address, unless `insecure_no_auth`. Default: none.
    pub auth_token: Option<String>,
    /// Allow a non-loopback bind without a token. Default false.
    pub insecure_no_auth: bool,
    /// PEM certificate chain for TLS (needs the `tls` cargo feature). Default: none (plaintext).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS. Default: none.
    pub tls_key: Option<PathBuf>,
    /// Decode/encode limit per message. Default [`DEFAULT_MAX_MESSAGE_BYTES`] (16 MiB).
    pub max_message_bytes: usize,
    /// HTTP/2 PING interval. Default 20 s.
    pub keepalive_interval_ms: u64,
    /// A connection whose PING is unanswered this long is closed. Default 20 s.
    pub keepalive_timeout_ms: u64,
    /// Server-side deadline of every call (until its response starts; a streamed adapter
    /// download is bounded by the client's own deadline). Default 60 s.
    pub request_timeout_ms: u64,
    /// HTTP/2 streams one connection may have open at once. Default 64.
    pub max_concurrent_streams: u32,
    /// Calls the whole server handles at once; more wait (and time out after
    /// `request_timeout_ms`). With `max_message_bytes` it bounds the memory requests can pin.
    /// Default 256.
    pub max_in_flight: usize,
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50051)),
            auth_token: None,
            insecure_no_auth: false,
            tls_cert: None,
            tls_key: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            keepalive_interval_ms: 20_000,
            keepalive_timeout_ms: 20_000,
            request_timeout_ms: 60_000,
            max_concurrent_streams: 64,
            max_in_flight: 256,
        }
    }
}

/// How a client (worker → learner, bench, tests) connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcClientConfig {
    /// `http://host:port` or `https://host:port`. Default `http://127.0.0.1:50051`.
    pub url: String,
    /// Sent as `authorization: Bearer <token>` on every call. Default: none.
    pub auth_token: Option<String>,
    /// PEM CA certificate that signed the server's certificate (`https` URLs, `tls` feature).
    pub tls_ca: Option<PathBuf>,
    /// Server name to verify in the certificate; default: the URL's host.
    pub tls_domain: Option<String>,
    /// TCP connect timeout. Default 5 s.
    pub connect_timeout_ms: u64,
    /// Deadline of a unary call. Default 30 s.
    pub request_timeout_ms: u64,
    /// Deadline of a whole adapter download. Default 300 s.
    pub adapter_fetch_timeout_ms: u64,
    /// Decode/encode limit per message. Default [`DEFAULT_MAX_MESSAGE_BYTES`] (16 MiB).
    pub max_message_bytes: usize,
    /// HTTP/2 PING interval. Default 20 s.
    pub keepalive_interval_ms: u64,
    /// A connection whose PING is unanswered this long is dropped. Default 20 s.
    pub keepalive_timeout_ms: u64,
    /// First reconnect delay; doubles per failure. Default 200 ms.
    pub backoff_initial_ms: u64,
    /// Reconnect delay cap. Default 10 s.
    pub backoff_max_ms: u64,
}

impl Default for GrpcClientConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50051".to_string(),
            auth_token: None,
            tls_ca: None,
            tls_domain: None,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            adapter_fetch_timeout_ms: 300_000,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            keepalive_interval_ms: 20_000,
            keepalive_timeout_ms: 20_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 10_000,
        }
    }
}
