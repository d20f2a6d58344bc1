//! `asrl-rollout-worker run`: connect to a learner and roll out until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use asrl_common::cli::{ModelArgs, TokenArgs};
use asrl_common::config::{
    AsrlConfig, ConfigError, GrpcClientConfig, GrpcServerConfig, RewardConfig, WeightDtype, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_SEQUENCES,
};
use asrl_common::rollout::GroupScorer;
use clap::Args;

use crate::engine::RolloutEngine;
use crate::status::{serve_worker_status, WorkerStatusHandle};
use crate::worker::{run_worker, WorkerOptions};

#[derive(Debug, Clone, Args)]
#[command(mut_arg("model", |a| a.help("Base model the learner trains (the learner's `model.path`): an HF model dir or a .gguf file. Required without --config")))]
#[command(mut_arg("adapter", |a| a.hide(true)))]
pub struct RunArgs {
    /// The learner's run config (TOML): supplies the model (`[model]` path and dtype), the reward
    /// (`[reward]`), the learner address, auth token and message limit (`[learner]`), so workers
    /// score exactly as configured. Flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    // `--device` is this worker's own: the config's `model.device` is the learner's.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Learner URL, e.g. http://127.0.0.1:50051 or https://host:50051. Default: the config's
    /// `learner.addr`, over https when the config sets `learner.tls_cert` or `learner.tls_ca`.
    #[arg(long)]
    pub learner: Option<String>,
    /// Name shown in the learner's status (default: hostname-pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Shared auth token for the learner and this worker's status endpoint. Prefer
    /// --token-file or $ASRL_TOKEN: a flag's value shows in `ps`.
    #[arg(long, env = "ASRL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub token_source: TokenArgs,
    /// Where this worker's own status service listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub status_bind: SocketAddr,
    /// Allow a non-loopback --status-bind without a token.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Prompts per lease to ask for (0: the learner's default).
    #[arg(long, default_value_t = 0)]
    pub max_prompts: u32,
    /// Sequences decoded together (a lease's prompts × samples), advertised to the learner,
    /// which sizes leases by it. Default: the config's `workers.max_sequences`, else 48.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sequences: Option<u32>,
    /// PEM CA certificate of the learner (https URLs). Default: the config's `learner.tls_ca`,
    /// else its `learner.tls_cert` (a self-signed certificate is its own CA).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

/// What a worker runs with once the config file and the flags are merged.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub model: PathBuf,
    pub dtype: WeightDtype,
    pub learner: String,
    pub token: Option<String>,
    /// `learner.max_message_mib` of the config, else the client default.
    pub max_message_bytes: usize,
    pub reward: RewardConfig,
    /// CA that verifies the learner's certificate (https URLs).
    pub tls_ca: Option<PathBuf>,
    /// `--max-sequences`, else the config's `workers.max_sequences`.
    pub max_sequences: usize,
}

impl RunArgs {
    /// Merges `--config` (when given) with the flags; flags win.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        self.model.no_adapter("a worker samples with the adapter the learner sends")?;
        let cfg = match &self.config {
            Some(path) => Some(AsrlConfig::load(path)?),
            None => None,
        };
        let missing = |field: &'static str, message: &str| ConfigError::Invalid {
            path: PathBuf::from("(command line)"),
            field,
            message: message.into(),
        };
        let model = match (&self.model.model, &cfg) {
            (Some(m), _) => m.clone(),
            (None, Some(c)) => c.model.path.clone(),
            (None, None) => return Err(missing("--model", "is required without --config").into()),
        };
        let dtype = match (self.model.dtype, &cfg) {
            (Some(d), _) => d,
            (None, Some(c)) => c.model.dtype,
            (None, None) => WeightDtype::F32,
        };
        let learner = match (&self.learner, &cfg) {
            (Some(l), _) => l.clone(),
            (None, Some(c)) => c.learner.url(),
            (None, None) => return Err(missing("--learner", "is required without --config").into()),
        };
        let token = self.token_source.resolve(self.token.as_deref(), cfg.as_ref().and_then(|c| c.learner.token()))?;
        Ok(Resolved {
            model,
            dtype,
            learner,
            token,
            max_message_bytes: cfg.as_ref().map_or(DEFAULT_MAX_MESSAGE_BYTES, |c| c.learner.max_message_bytes()),
            tls_ca: self.tls_ca.clone().or_else(|| cfg.as_ref().and_then(|c| c.learner.worker_ca())),
            max_sequences: match (self.max_sequences, &cfg) {
                (Some(n), _) => n as usize,
                (None, Some(c)) => c.workers.max_sequences,
                (None, None) => DEFAULT_MAX_SEQUENCES,
            },
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
                tls_ca: resolved.tls_ca.clone(),
                max_message_bytes: resolved.max_message_bytes,
                ..Default::default()
            },
            name,
            device: self.model.device.to_string(),
            capabilities: Vec::new(),
            max_prompts: self.max_prompts,
            max_sequences: resolved.max_sequences.min(u32::MAX as usize) as u32,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(a: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("run").chain(a.iter().copied())).unwrap().run
    }

    #[test]
    fn config_supplies_model_learner_endpoint_and_message_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        let toml = "[model]\npath = \"m.gguf\"\ndtype = \"bf16\"\ndevice = \"cuda:0\"\n\
                    [learner]\naddr = \"10.0.0.2:7000\"\nauth_token = \" t \"\nmax_message_mib = 8\n\
                    [workers]\nmax_sequences = 12\n";
        std::fs::write(&path, toml).unwrap();
        let run = args(&["--config", path.to_str().unwrap(), "--device", "cuda:1"]);
        let r = run.resolve().unwrap();
        assert_eq!((r.model.as_path(), r.dtype), (Path::new("m.gguf"), WeightDtype::Bf16));
        assert_eq!((r.learner.as_str(), r.token.as_deref()), ("http://10.0.0.2:7000", Some("t")));
        let opts = run.worker_options(&r);
        assert_eq!(opts.client.max_message_bytes, 8 << 20);
        assert_eq!((r.max_sequences, opts.max_sequences), (12, 12));
        // The worker's own device, not the learner's `model.device`.
        assert_eq!(opts.device, "cuda:1");

        // Flags win; without a config the client keeps its default limit.
        let flags = args(&["--config", path.to_str().unwrap(), "--model", "x", "--dtype", "f16", "--learner", "http://h:1", "--max-sequences", "7"]);
        let r = flags.resolve().unwrap();
        assert_eq!(r.max_sequences, 7);
        assert_eq!((r.model.as_path(), r.dtype, r.learner.as_str()), (Path::new("x"), WeightDtype::F16, "http://h:1"));
        let bare = args(&["--model", "x", "--learner", "http://h:1"]).resolve().unwrap();
        assert_eq!((bare.dtype, bare.max_message_bytes), (WeightDtype::F32, DEFAULT_MAX_MESSAGE_BYTES));
        assert_eq!(bare.max_sequences, DEFAULT_MAX_SEQUENCES);
    }

    #[test]
    fn tls_config_gives_an_https_url_and_the_ca_and_a_token_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        let toml = "[model]\npath = \"m.gguf\"\n[learner]\naddr = \"h:7000\"\nauth_token = \"cfg\"\n\
                    tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";
        std::fs::write(&path, toml).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "file-token\n").unwrap();
        let run = args(&["--config", path.to_str().unwrap(), "--token-file", token.to_str().unwrap()]);
        let r = run.resolve().unwrap();
        assert_eq!(r.learner, "https://h:7000");
        assert_eq!(r.token.as_deref(), Some("file-token"));
        let opts = run.worker_options(&r);
        assert_eq!(opts.client.tls_ca.as_deref(), Some(Path::new("cert.pem")));
        let flag = args(&["--config", path.to_str().unwrap(), "--tls-ca", "ca.pem"]).resolve().unwrap();
        assert_eq!(flag.tls_ca.as_deref(), Some(Path::new("ca.pem")));
    }

    #[test]
    fn missing_model_and_an_adapter_are_errors() {
        let msg = args(&["--learner", "http://h:1"]).resolve().unwrap_err().to_string();
        assert!(msg.contains("--model"), "{msg}");
        let msg = args(&["--model", "x", "--learner", "http://h:1", "--adapter", "a"]).resolve().unwrap_err().to_string();
        assert!(msg.contains("--adapter"), "{msg}");
    }
}
