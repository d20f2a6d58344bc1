//! The worker's own `asrl.v1.Worker` status endpoint.

use std::sync::{Arc, Mutex, MutexGuard};

use asrl_common::config::GrpcServerConfig;
use asrl_common::transport::{self, RunningServer, TransportError};
use asrl_proto::v1 as pb;
use asrl_proto::v1::worker_server::{Worker, WorkerServer};
use tonic::{Request, Response, Status};

pub const WORKER_SERVICE_NAME: &str = "asrl.v1.Worker";

/// Shared between the rollout loop (writer) and the status service (reader).
#[derive(Clone, Default)]
pub struct WorkerStatusHandle {
    inner: Arc<Mutex<pb::WorkerStatus>>,
}

impl WorkerStatusHandle {
    pub fn new(name: &str, device: &str, learner_url: &str) -> Self {
        let status = pb::WorkerStatus {
            name: name.into(),
            device: device.into(),
            learner_url: learner_url.into(),
            state: "connecting".into(),
            ..Default::default()
        };
        Self { inner: Arc::new(Mutex::new(status)) }
    }

    pub fn lock(&self) -> MutexGuard<'_, pb::WorkerStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> pb::WorkerStatus {
        self.lock().clone()
    }

    pub fn set_state(&self, state: &str) {
        self.lock().state = state.into();
    }
}

#[derive(Clone)]
pub struct WorkerStatusService {
    status: WorkerStatusHandle,
}

#[tonic::async_trait]
impl Worker for WorkerStatusService {
    async fn get_status(&self, _request: Request<pb::WorkerStatusRequest>) -> Result<Response<pb::WorkerStatus>, Status> {
        Ok(Response::new(self.status.snapshot()))
    }
}

/// Serves the worker status endpoint (with reflection, health and the config's auth/limits).
pub async fn serve_worker_status(cfg: &GrpcServerConfig, status: WorkerStatusHandle) -> Result<RunningServer, TransportError> {
    let server = WorkerServer::new(WorkerStatusService { status })
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes);
    let running =
        transport::serve(cfg, tonic::service::Routes::new(server), &[asrl_proto::FILE_DESCRIPTOR_SET], &[WORKER_SERVICE_NAME]).await?;
    running.mark_serving().await;
    Ok(running)
}
