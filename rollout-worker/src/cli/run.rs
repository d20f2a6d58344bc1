//! `asrl-rollout-worker run`: connect to a learner and roll out until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use asrl_common::config::{GrpcClientConfig, GrpcServerConfig};
use asrl_common::rollout::RewardFn;
use clap::Args;

use crate::engine::RolloutEngine;
use crate::status::{serve_worker_status, WorkerStatusHandle};
use crate::worker::{run_worker, WorkerOptions};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Base model the learner trains: an HF model dir or a .gguf file (same as the learner's).
    #[arg(long)]
    pub model: PathBuf,
    /// Weight dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Learner URL, e.g. http://127.0.0.1:50051 (https:// needs the `tls` feature).
    #[arg(long)]
    pub learner: String,
    /// Device to generate on: `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Name shown in the learner's status (default: hostname-pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Shared auth token for the learner and this worker's status endpoint.
    #[arg(long, env = "ASRL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where this worker's own status service listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub status_bind: SocketAddr,
    /// Allow a non-loopback --status-bind without a token.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Prompts per lease to ask for (0: the learner's default).
    #[arg(long, default_value_t = 0)]
    pub max_prompts: u32,
    /// PEM CA certificate of the learner (https URLs).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl RunArgs {
    pub fn worker_options(&self) -> WorkerOptions {
        let name = self.name.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        });
        WorkerOptions {
            client: GrpcClientConfig {
                url: self.learner.clone(),
                auth_token: self.token.clone(),
                tls_ca: self.tls_ca.clone(),
                ..Default::default()
            },
            name,
            device: self.device.clone(),
            capabilities: Vec::new(),
            max_prompts: self.max_prompts,
        }
    }

    pub fn status_server(&self) -> GrpcServerConfig {
        GrpcServerConfig {
            bind: self.status_bind,
            auth_token: self.token.clone(),
            insecure_no_auth: self.insecure_no_auth,
            ..Default::default()
        }
    }
}

/// Serves the status endpoint and runs the rollout loop until Ctrl-C.
pub async fn run<E: RolloutEngine>(args: &RunArgs, engine: E, reward: Arc<dyn RewardFn>) -> anyhow::Result<()> {
    let opts = args.worker_options();
    let status = WorkerStatusHandle::new(&opts.name, &opts.device, &opts.client.url);
    let server = serve_worker_status(&args.status_server(), status.clone()).await?;
    tracing::info!(addr = %server.local_addr(), "worker status endpoint listening");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupted; stopping after the current call");
            let _ = tx.send(true);
        }
    });
    let result = run_worker(opts, engine, reward, status, rx).await;
    server.shutdown().await?;
    Ok(result?)
}
