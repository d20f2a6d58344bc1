//! One way to start a gRPC server, used by the learner and the worker status endpoint:
//! auth policy, message limits, HTTP/2 keepalive, reflection (v1 + v1alpha), health.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::{InterceptorLayer, Routes};
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::auth::AuthCheck;
use super::{TransportError, FLOW_CONTROL_WINDOW_BYTES};
use crate::config::GrpcServerConfig;

/// A started server. Dropping it does not stop the server; call [`RunningServer::shutdown`].
pub struct RunningServer {
    local_addr: SocketAddr,
    health: HealthReporter,
    services: Vec<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Reports SERVING for the server ("") and every service it was started with.
    pub async fn mark_serving(&self) {
        self.set_status(ServingStatus::Serving).await;
    }

    pub async fn mark_not_serving(&self) {
        self.set_status(ServingStatus::NotServing).await;
    }

    async fn set_status(&self, status: ServingStatus) {
        self.health.set_service_status("", status).await;
        for name in &self.services {
            self.health.set_service_status(name, status).await;
        }
    }

    /// Graceful stop: stops accepting, finishes in-flight calls, then returns.
    pub async fn shutdown(self) -> Result<(), TransportError> {
        self.shutdown_within(std::time::Duration::MAX).await
    }

    /// Graceful stop that gives up after `grace`: open client connections (a worker that is
    /// itself stopping, a stuck peer) must not keep a stopping process alive.
    pub async fn shutdown_within(mut self, grace: std::time::Duration) -> Result<(), TransportError> {
        self.mark_not_serving().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(Ok(r)) => r.map_err(TransportError::Serve),
            Ok(Err(e)) => Err(TransportError::Config(format!("server task failed: {e}"))),
            Err(_) => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "connections still open at shutdown; closing them");
                self.task.abort();
                Ok(())
            }
        }
    }

    /// Stops at once, dropping in-flight calls (tests simulate a crashed process with it).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Refuses a non-loopback bind without a token unless `insecure_no_auth` is set.
pub fn check_auth_policy(cfg: &GrpcServerConfig) -> Result<(), TransportError> {
    if let Some(t) = &cfg.auth_token {
        if t.is_empty() {
            return Err(TransportError::Config("auth token is empty".into()));
        }
    }
    if !cfg.bind.ip().is_loopback() && cfg.auth_token.is_none() && !cfg.insecure_no_auth {
        return Err(TransportError::Config(format!(
            "refusing to listen on non-loopback {} without an auth token: pass --token (or ASRL_TOKEN), \
             or --insecure-no-auth to accept unauthenticated calls",
            cfg.bind
        )));
    }
    if cfg.tls_cert.is_some() != cfg.tls_key.is_some() {
        return Err(TransportError::Config("TLS needs both a certificate and a key".into()));
    }
    if cfg.max_in_flight == 0 || cfg.max_concurrent_streams == 0 || cfg.request_timeout_ms == 0 {
        return Err(TransportError::Config(
            "max_in_flight, max_concurrent_streams and request_timeout_ms must be at least 1".into(),
        ));
    }
    if cfg.max_message_bytes < super::ADAPTER_CHUNK_BYTES + 4096 {
        return Err(TransportError::Config(format!(
            "max_message_bytes {} cannot carry a {}-byte adapter chunk",
            cfg.max_message_bytes,
            super::ADAPTER_CHUNK_BYTES
        )));
    }
    Ok(())
}

/// Binds, then serves `routes` plus reflection (v1 and v1alpha, for grpcurl 1.8's v1alpha client)
/// and health. `descriptor_sets`: encoded `FileDescriptorSet`s of the services in `routes`;
/// `service_names`: their full names, reported NOT_SERVING until [`RunningServer::mark_serving`].
///
/// Per-service message limits are set by the caller on the generated `*Server` (tonic keeps
/// them there); use `cfg.max_message_bytes`.
pub async fn serve(
    cfg: &GrpcServerConfig,
    routes: Routes,
    descriptor_sets: &[&'static [u8]],
    service_names: &[&str],
) -> Result<RunningServer, TransportError> {
    check_auth_policy(cfg)?;
    if !cfg.bind.ip().is_loopback() && cfg.tls_cert.is_none() {
        tracing::warn!(bind = %cfg.bind, "serving plaintext gRPC on a non-loopback address; the auth token travels unencrypted");
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    for name in service_names {
        health.set_service_status(*name, ServingStatus::NotServing).await;
    }

    let mut v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for fds in descriptor_sets {
        v1 = v1.register_encoded_file_descriptor_set(fds);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(fds);
    }
    let reflection_v1 = v1.build_v1().map_err(|e| TransportError::Config(format!("reflection: {e}")))?;
    let reflection_v1alpha =
        v1alpha.build_v1alpha().map_err(|e| TransportError::Config(format!("reflection: {e}")))?;

    let routes = routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);

    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|source| TransportError::Bind { addr: cfg.bind, source })?;
    let local_addr = listener.local_addr().map_err(|source| TransportError::Bind { addr: cfg.bind, source })?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    let builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_millis(cfg.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(cfg.keepalive_timeout_ms)))
        .initial_stream_window_size(FLOW_CONTROL_WINDOW_BYTES)
        .initial_connection_window_size(FLOW_CONTROL_WINDOW_BYTES)
        .max_frame_size(super::MAX_FRAME_BYTES)
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .tcp_nodelay(true);
    // Auth first, so unauthenticated calls never take an in-flight slot.
    let mut builder = tls(builder, cfg)?
        .layer(InterceptorLayer::new(AuthCheck::new(cfg.auth_token.as_deref())))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(cfg.max_in_flight));

    let (tx, rx) = oneshot::channel::<()>();
    let router = builder.add_routes(routes);
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(addr = %local_addr, auth = cfg.auth_token.is_some(), tls = cfg.tls_cert.is_some(), "gRPC server listening");
    Ok(RunningServer {
        local_addr,
        health,
        services: service_names.iter().map(|s| s.to_string()).collect(),
        shutdown: Some(tx),
        task,
    })
}

#[cfg(feature = "tls")]
fn tls(
    builder: tonic::transport::Server,
    cfg: &GrpcServerConfig,
) -> Result<tonic::transport::Server, TransportError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else { return Ok(builder) };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| TransportError::Config(format!("TLS file {}: {e}", p.display())))
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    builder
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .map_err(|e| TransportError::Config(format!("TLS config: {e}")))
}

#[cfg(not(feature = "tls"))]
fn tls(
    builder: tonic::transport::Server,
    cfg: &GrpcServerConfig,
) -> Result<tonic::transport::Server, TransportError> {
    if cfg.tls_cert.is_some() {
        return Err(TransportError::Config(
            "TLS certificate given but this binary was built without the `tls` cargo feature".into(),
        ));
    }
    Ok(builder)
}
