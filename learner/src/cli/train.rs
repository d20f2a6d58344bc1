//! `asrl-learner train --config FILE`: serve the rollout workers and run the ASRL epochs.
//!
//! The gRPC service runs on a tokio runtime; the model math runs on its own thread and talks to
//! the service only through [`crate::service::LearnerHandle`] and a channel of finished groups,
//! so a long optimiser step never blocks a worker's call.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use asrl_common::cli::TokenArgs;
use asrl_common::config::{AsrlConfig, GrpcServerConfig, ScheduleKind};
use asrl_common::data::live_append_path;
use clap::Args;

use crate::report::TENSORBOARD_DIR;
use crate::run::{EpochLoop, Rollouts, RunError, RunLayout, RunSummary, StopReason, BEST_ADAPTER, FINAL_ADAPTER};
use crate::service::{new_learner, serve_learner, LiveFileSink, ServiceOptions};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Run config (TOML). Every field and its default: docs/config.md. Presets:
    /// configs/paper.toml (the paper's settings), configs/demo-cpu.toml (the CPU demo).
    #[arg(long)]
    pub config: PathBuf,
    /// Output directory (overrides `run.dir`). A directory holding a checkpoint is resumed.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Dataset: a JSONL file or a directory of them (overrides `data.path`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Schedule (overrides `schedule.kind`).
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Maximum epochs (overrides `schedule.epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Seed of every RNG of the run (overrides `run.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// host:port the learner listens on (overrides `learner.addr`; port 0 picks one).
    #[arg(long)]
    pub bind: Option<String>,
    /// Write the bound address to this file once the service is up (for scripts and tests).
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Start over: delete the run directory's checkpoints, metrics and adapters first.
    #[arg(long)]
    pub fresh: bool,
    /// The shared auth token: `--token-file`, else $ASRL_TOKEN, else `learner.auth_token`.
    #[command(flatten)]
    pub token: TokenArgs,
    /// PEM certificate chain to serve TLS with (overrides `learner.tls_cert`; needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (overrides `learner.tls_key`).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The config file with the command line's overrides, validated.
pub fn resolve_config(args: &TrainArgs) -> anyhow::Result<AsrlConfig> {
    let mut cfg = AsrlConfig::load(&args.config)?;
    if let Some(dir) = &args.run_dir {
        cfg.run.dir = dir.clone();
    }
    if let Some(data) = &args.data {
        cfg.data.path = Some(data.clone());
    }
    if let Some(kind) = args.schedule {
        cfg.schedule.kind = kind;
    }
    if let Some(epochs) = args.epochs {
        cfg.schedule.epochs = epochs;
    }
    if let Some(seed) = args.seed {
        cfg.run.seed = seed;
    }
    if let Some(bind) = &args.bind {
        cfg.learner.addr = bind.clone();
    }
    if let Some(token) = args.token.resolve(None, cfg.learner.token())? {
        cfg.learner.auth_token = token;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        cfg.learner.tls_cert = Some(cert.clone());
        cfg.learner.tls_key = Some(key.clone());
    }
    // Overrides are checked like the file's own values, named by the file they override.
    cfg.validate(&args.config)?;
    Ok(cfg)
}

fn server_config(cfg: &AsrlConfig) -> anyhow::Result<GrpcServerConfig> {
    let addr = &cfg.learner.addr;
    let bind: SocketAddr = addr
        .to_socket_addrs()
        .with_context(|| format!("learner.addr {addr:?}"))?
        .next()
        .with_context(|| format!("learner.addr {addr:?} resolves to no address"))?;
    Ok(GrpcServerConfig {
        bind,
        auth_token: cfg.learner.token(),
        max_message_bytes: cfg.learner.max_message_bytes(),
        tls_cert: cfg.learner.tls_cert.clone(),
        tls_key: cfg.learner.tls_key.clone(),
        ..Default::default()
    })
}

/// Removes what a previous run left in `run.dir` (only the files a run writes).
fn clear_run_dir(cfg: &AsrlConfig) -> anyhow::Result<()> {
    let (dirs, files) = RunLayout::new(&cfg.run.dir).outputs(&cfg.train_config().checkpoint.dir);
    for path in dirs.iter().filter(|p| p.is_dir()) {
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    for path in files.iter().filter(|p| p.is_file()) {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let cfg = resolve_config(&args)?;
    if args.fresh {
        clear_run_dir(&cfg)?;
    }
    let server_cfg = server_config(&cfg)?;
    let loaded = EpochLoop::load_model(&cfg)?;
    let vocab_size = loaded.model.config().vocab_size as u32;

    let data_path = cfg.data.path.as_ref().context("`data.path` is not set: pass --data or set it in the config")?;
    if !data_path.exists() {
        bail!("data.path {}: no such file or directory", data_path.display());
    }
    let sink = live_append_path(&cfg.data).map(|p| Arc::new(LiveFileSink::new(p, cfg.data.max_line_bytes, 0)));
    let (service, handle, groups) = new_learner(
        ServiceOptions { leases: cfg.lease_config(), vocab_size, max_abs_reward: cfg.reward.max_abs },
        sink.clone().map(|s| s as Arc<dyn crate::service::ExampleSink>),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("asrl-grpc")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let server = runtime.block_on(serve_learner(&server_cfg, service))?;
    let addr = server.local_addr();
    let scheme = if cfg.learner.tls_cert.is_some() { "https" } else { "http" };
    eprintln!("learner listening on {addr} (workers: asrl-rollout-worker run --learner {scheme}://{addr} ...)");
    if let Some(file) = &args.addr_file {
        std::fs::write(file, addr.to_string()).with_context(|| format!("writing {}", file.display()))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let rollouts = Rollouts::new(handle, groups, stop.clone());
    let train_cfg = cfg.clone();
    let train_stop = stop.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("asrl-train".into())
        .spawn(move || {
            let result = EpochLoop::open(train_cfg, loaded, rollouts, train_stop).and_then(|l| {
                let l = match sink {
                    Some(s) => l.with_live_sink(s),
                    None => l,
                };
                l.run()
            });
            let _ = done_tx.send(result);
        })
        .context("starting the training thread")?;

    let result = runtime.block_on(async {
        tokio::pin!(done_rx);
        tokio::select! {
            r = &mut done_rx => r,
            _ = asrl_common::shutdown::stop_requested() => {
                eprintln!("interrupted: stopping at the next safe point (Ctrl-C again to quit now)");
                stop.store(true, Ordering::Relaxed);
                tokio::select! {
                    r = &mut done_rx => r,
                    _ = asrl_common::shutdown::stop_requested() => std::process::exit(130),
                }
            }
        }
    });
    let _ = runtime.block_on(server.shutdown_within(std::time::Duration::from_secs(5)));
    let result = result.context("the training thread ended without a result")?;
    match result {
        Ok(summary) => {
            print_summary(&summary);
            Ok(())
        }
        Err(RunError::Interrupted) => {
            eprintln!(
                "stopped; `asrl-learner train --config {}` resumes from the last checkpoint in {}",
                args.config.display(),
                cfg.run.dir.display()
            );
            std::process::exit(130)
        }
        Err(e) => Err(e.into()),
    }
}

fn print_summary(s: &RunSummary) {
    println!("{}", s.table);
    let why = match s.reason {
        StopReason::EpochBudget => "epoch budget reached".to_string(),
        StopReason::EarlyStopping { best_epoch } => format!("early stopping (best epoch {best_epoch})"),
    };
    println!("run finished after epoch {}: {why}", s.last_epoch);
    println!("outputs in {}:", s.run_dir.display());
    println!("  metrics.jsonl, {FINAL_ADAPTER}/ (PEFT){}", match s.best_epoch {
        Some(e) => format!(", {BEST_ADAPTER}/ (epoch {e})"),
        None => String::new(),
    });
    for p in &s.plots {
        println!("  {}", p.display());
    }
    let board = s.run_dir.join(TENSORBOARD_DIR);
    if board.is_dir() {
        println!("  {}/ (tensorboard --logdir {})", board.display(), s.run_dir.display());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    #[test]
    fn flags_override_the_config_and_are_typed() {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo-cpu.toml");
        let parse = |extra: &[&str]| Cli::try_parse_from(["train", "--config", config].iter().chain(extra)).map(|c| c.train);
        let args = parse(&["--schedule", "ares", "--bind", "127.0.0.1:0", "--epochs", "2"]).unwrap();
        let cfg = resolve_config(&args).unwrap();
        assert_eq!((cfg.schedule.kind, cfg.schedule.epochs), (ScheduleKind::Ares, 2));
        assert_eq!(server_config(&cfg).unwrap().bind.port(), 0);
        assert_eq!(server_config(&cfg).unwrap().max_message_bytes, cfg.learner.max_message_mib << 20);
        let err = parse(&["--schedule", "alternate"]).unwrap_err().to_string();
        assert!(err.contains("alternate") && err.contains("sequential"), "{err}");
        let bad_bind = parse(&["--bind", "nowhere"]).unwrap();
        assert!(resolve_config(&bad_bind).unwrap_err().to_string().contains("learner.addr"));
    }

    #[test]
    fn token_file_and_tls_flags_reach_the_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "from-file\n").unwrap();
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo-cpu.toml");
        let flags = ["train", "--config", config, "--token-file", token.to_str().unwrap(), "--tls-cert", "c.pem", "--tls-key", "k.pem"];
        let args = Cli::try_parse_from(flags).unwrap().train;
        let server = server_config(&resolve_config(&args).unwrap()).unwrap();
        assert_eq!(server.auth_token.as_deref(), Some("from-file"));
        assert_eq!((server.tls_cert.as_deref(), server.tls_key.as_deref()), (Some(Path::new("c.pem")), Some(Path::new("k.pem"))));
        assert!(Cli::try_parse_from(["train", "--config", config, "--tls-cert", "c.pem"]).is_err(), "a cert needs its key");
    }
}
