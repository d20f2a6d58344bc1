//! Client channels with the same limits as the servers, token injection, call deadlines and
//! reconnection with exponential backoff.

use std::future::Future;
use std::time::Duration;

use asrl_proto::v1::learner_client::LearnerClient;
use asrl_proto::v1::worker_client::WorkerClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::auth::AuthInterceptor;
use super::{TransportError, FLOW_CONTROL_WINDOW_BYTES};
use crate::config::GrpcClientConfig;

/// A channel that adds the auth token to every call.
pub type AuthChannel = InterceptedService<Channel, AuthInterceptor>;

pub fn endpoint(cfg: &GrpcClientConfig) -> Result<Endpoint, TransportError> {
    let ep = Endpoint::from_shared(cfg.url.clone())
        .map_err(|e| TransportError::Config(format!("learner URL {:?}: {e}", cfg.url)))?
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .timeout(Duration::from_millis(cfg.request_timeout_ms.max(cfg.adapter_fetch_timeout_ms)))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_millis(cfg.keepalive_interval_ms))
        .keep_alive_timeout(Duration::from_millis(cfg.keepalive_timeout_ms))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(FLOW_CONTROL_WINDOW_BYTES)
        .initial_connection_window_size(FLOW_CONTROL_WINDOW_BYTES)
        .max_frame_size(super::MAX_FRAME_BYTES);
    tls(ep, cfg)
}

#[cfg(feature = "tls")]
fn tls(ep: Endpoint, cfg: &GrpcClientConfig) -> Result<Endpoint, TransportError> {
    if !cfg.url.starts_with("https://") {
        return Ok(ep);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = &cfg.tls_ca {
        let pem = std::fs::read(ca).map_err(|e| TransportError::Config(format!("TLS CA {}: {e}", ca.display())))?;
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    if let Some(domain) = &cfg.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    ep.tls_config(tls).map_err(|e| TransportError::Config(format!("TLS config: {e}")))
}

#[cfg(not(feature = "tls"))]
fn tls(ep: Endpoint, cfg: &GrpcClientConfig) -> Result<Endpoint, TransportError> {
    if cfg.url.starts_with("https://") || cfg.tls_ca.is_some() {
        return Err(TransportError::Config(
            "https URL or TLS CA given but this binary was built without the `tls` cargo feature".into(),
        ));
    }
    Ok(ep)
}

/// Connects once.
pub async fn connect(cfg: &GrpcClientConfig) -> Result<Channel, TransportError> {
    endpoint(cfg)?
        .connect()
        .await
        .map_err(|source| TransportError::Connect { url: cfg.url.clone(), source })
}

/// Connects, retrying with exponential backoff until it succeeds (a learner that is restarting
/// comes back). Configuration errors are returned at once.
pub async fn connect_with_backoff(cfg: &GrpcClientConfig) -> Result<Channel, TransportError> {
    let ep = endpoint(cfg)?;
    let mut backoff = Backoff::from_config(cfg);
    loop {
        match ep.connect().await {
            Ok(ch) => return Ok(ch),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(url = %cfg.url, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reach server");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

pub fn learner_client(channel: Channel, cfg: &GrpcClientConfig) -> Result<LearnerClient<AuthChannel>, TransportError> {
    Ok(LearnerClient::with_interceptor(channel, AuthInterceptor::new(cfg.auth_token.as_deref())?)
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes))
}

pub fn worker_client(channel: Channel, cfg: &GrpcClientConfig) -> Result<WorkerClient<AuthChannel>, TransportError> {
    Ok(WorkerClient::with_interceptor(channel, AuthInterceptor::new(cfg.auth_token.as_deref())?)
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes))
}

/// Wraps a message with a call deadline (sent as `grpc-timeout`, enforced by both ends).
pub fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(deadline);
    r
}

/// Exponential backoff: initial, 2×, 4× … capped, with ±20 % deterministic jitter so a fleet of
/// workers does not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    jitter_state: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9);
        Self { initial, max, current: initial, jitter_state: seed | 1 }
    }

    pub fn from_config(cfg: &GrpcClientConfig) -> Self {
        Self::new(Duration::from_millis(cfg.backoff_initial_ms), Duration::from_millis(cfg.backoff_max_ms))
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        // xorshift64: cheap jitter without a rand dependency in this path.
        self.jitter_state ^= self.jitter_state << 13;
        self.jitter_state ^= self.jitter_state >> 7;
        self.jitter_state ^= self.jitter_state << 17;
        let factor = 0.8 + 0.4 * (self.jitter_state % 1000) as f64 / 1000.0;
        base.mul_f64(factor).min(self.max)
    }
}

/// Retries `op` while it fails with a transient status (UNAVAILABLE, or a connection-level
/// error), sleeping with backoff; returns the first success or non-transient error.
pub async fn retry_transient<T, F, Fut>(backoff: &mut Backoff, mut op: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    loop {
        match op().await {
            Ok(v) => {
                backoff.reset();
                return Ok(v);
            }
            Err(s) if is_transient(&s) => {
                let wait = backoff.next_delay();
                tracing::warn!(code = ?s.code(), message = s.message(), retry_in_ms = wait.as_millis() as u64, "transient gRPC failure");
                tokio::time::sleep(wait).await;
            }
            Err(s) => return Err(s),
        }
    }
}

/// UNAVAILABLE is what a dropped connection or a restarting server looks like; a connection
/// that breaks mid-call can also surface as UNKNOWN with a transport/h2 message.
pub fn is_transient(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown => {
            let m = status.message();
            m.contains("transport") || m.contains("h2") || m.contains("connection")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<_> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert!((80..=120).contains(&d[0]), "{d:?}");
        assert!((160..=240).contains(&d[1]), "{d:?}");
        assert!(d[7] <= 1000 && d[7] >= 800, "{d:?}");
        b.reset();
        assert!(b.next_delay().as_millis() <= 120);
    }

    #[test]
    fn bad_url_is_config_error() {
        let cfg = GrpcClientConfig { url: "not a url".into(), ..Default::default() };
        assert!(matches!(endpoint(&cfg), Err(TransportError::Config(_))));
    }
}
