//! `asrl-rollout-worker run`: connect to a learner and roll out until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use asrl_common::config::{AsrlConfig, ConfigError, GrpcClientConfig, GrpcServerConfig, RewardConfig};
use asrl_common::rollout::GroupScorer;
use clap::Args;

use crate::engine::RolloutEngine;
use crate::status::{serve_worker_status, WorkerStatusHandle};
use crate::worker::{run_worker, WorkerOptions};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The learner's run config (TOML): supplies the model (`[model]` path and dtype), the reward
    /// (`[reward]`), the learner address and the auth token, so workers score exactly as
    /// configured. Flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Base model the learner trains: an HF model dir or a .gguf file (same as the learner's).
    /// Required without --config.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight dtype: f32, bf16 or f16 (default: the config's `model.dtype`, else f32).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Learner URL, e.g. http://127.0.0.1:50051 (https:// needs the `tls` feature). Default:
    /// http:// + the config's `workers.learner_addr`.
    #[arg(long)]
    pub learner: Option<String>,
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

/// What a worker runs with once the config file and the flags are merged.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub model: PathBuf,
    pub dtype: candle_core::DType,
    pub learner: String,
    pub token: Option<String>,
    pub reward: RewardConfig,
}

impl RunArgs {
    /// Merges `--config` (when given) with the flags; flags win.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let cfg = match &self.config {
            Some(path) => Some(AsrlConfig::load(path)?),
            None => None,
        };
        let missing = |field: &'static str, message: &str| ConfigError::Invalid {
            path: PathBuf::from("(command line)"),
            field,
            message: message.into(),
        };
        let model = match (&self.model, &cfg) {
            (Some(m), _) => m.clone(),
            (None, Some(c)) => c.model.path.clone(),
            (None, None) => return Err(missing("--model", "is required without --config").into()),
        };
        let dtype = match (&self.dtype, &cfg) {
            (Some(d), _) => asrl_common::model::parse_dtype(d)?,
            (None, Some(c)) => c.model.dtype.to_candle(),
            (None, None) => candle_core::DType::F32,
        };
        let learner = match (&self.learner, &cfg) {
            (Some(l), _) => l.clone(),
            (None, Some(c)) => format!("http://{}", c.workers.learner_addr),
            (None, None) => return Err(missing("--learner", "is required without --config").into()),
        };
        let config_token = cfg.as_ref().map(|c| c.workers.auth_token.trim().to_string()).filter(|t| !t.is_empty());
        Ok(Resolved {
            model,
            dtype,
            learner,
            token: self.token.clone().or(config_token),
            reward: cfg.map(|c| c.reward).unwrap_or_default(),
        })
    }

    pub fn worker_options(&self, resolved: &Resolved) -> WorkerOptions {
        let name = self.name.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        });
        WorkerOptions {
            client: GrpcClientConfig {
                url: resolved.learner.clone(),
                auth_token: resolved.token.clone(),
                tls_ca: self.tls_ca.clone(),
                ..Default::default()
            },
            name,
            device: self.device.clone(),
            capabilities: Vec::new(),
            max_prompts: self.max_prompts,
        }
    }

    pub fn status_server(&self, resolved: &Resolved) -> GrpcServerConfig {
        GrpcServerConfig {
            bind: self.status_bind,
            auth_token: resolved.token.clone(),
            insecure_no_auth: self.insecure_no_auth,
            ..Default::default()
        }
    }
}

/// Serves the status endpoint and runs the rollout loop until Ctrl-C.
pub async fn run<E: RolloutEngine>(
    args: &RunArgs,
    resolved: &Resolved,
    engine: E,
    reward: Arc<dyn GroupScorer>,
) -> anyhow::Result<()> {
    let opts = args.worker_options(resolved);
    let status = WorkerStatusHandle::new(&opts.name, &opts.device, &opts.client.url);
    let server = serve_worker_status(&args.status_server(resolved), status.clone()).await?;
    tracing::info!(addr = %server.local_addr(), "worker status endpoint listening");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        asrl_common::shutdown::stop_requested().await;
        tracing::info!("interrupted; stopping after the current call");
        let _ = tx.send(true);
    });
    let result = run_worker(opts, engine, reward, status, rx).await;
    server.shutdown_within(std::time::Duration::from_secs(5)).await?;
    Ok(result?)
}
