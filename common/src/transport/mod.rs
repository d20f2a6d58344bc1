//! gRPC plumbing shared by the learner and the rollout workers.
//!
//! - [`server`]: start a server with auth, limits, keepalive, reflection (v1 + v1alpha), health.
//! - [`client`]: channels with the same limits, token injection, deadlines, reconnect backoff.
//! - [`auth`]: the shared bearer token, compared in constant time.
//! - [`adapter`]: split an adapter payload into ≤ 1 MiB checksummed chunks and reassemble it.
//! - [`convert`]: wire types ↔ [`crate::rollout`] types.
//!
//! Message size limits: both ends encode and decode at most
//! [`crate::config::DEFAULT_MAX_MESSAGE_BYTES`] (16 MiB) per message by default (tonic's own
//! decode default is 4 MiB); adapters travel as a stream of [`ADAPTER_CHUNK_BYTES`] chunks.

pub mod adapter;
pub mod auth;
pub mod client;
pub mod convert;
pub mod server;

use std::net::SocketAddr;

pub use adapter::{
    fetch_adapter, fetch_adapter_into, recycle_buffer, AdapterAssembler, AdapterPayload, AdapterTransferError,
    FetchError,
};
pub use auth::{AuthCheck, AuthInterceptor};
pub use client::{
    connect, connect_with_backoff, is_transient, learner_client, retry_transient, with_deadline, worker_client,
    AuthChannel, Backoff,
};
pub use server::{check_auth_policy, serve, RunningServer};

/// Largest adapter chunk: 1 MiB.
pub const ADAPTER_CHUNK_BYTES: usize = 1 << 20;

/// HTTP/2 flow-control window per stream and per connection: 16 MiB, so an adapter download is
/// not throttled by window updates on fast links (the HTTP/2 default is 64 KiB).
pub const FLOW_CONTROL_WINDOW_BYTES: u32 = 16 << 20;

/// Largest HTTP/2 frame either end accepts (protocol default 16 KiB): fewer frames per chunk.
pub const MAX_FRAME_BYTES: u32 = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("gRPC config: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[source] tonic::transport::Error),
}
