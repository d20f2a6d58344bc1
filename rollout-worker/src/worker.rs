//! The rollout loop: register (advertising the batch capacity), heartbeat, lease work, fetch
//! the adapter version the lease requires, generate every group of the lease in one batch,
//! score each, submit, repeat (one lease: `lease.rs`).
//!
//! Failures are contained: a transient RPC failure is retried with backoff against the same
//! registration (and the same submission: `SubmitGroups` is idempotent); a per-prompt engine,
//! reward or adapter failure gives that prompt back to the learner with its reason and the
//! worker goes on. Only a learner that forgot this worker (restart) makes it register again, and
//! only a lost engine (a panic it could not recover from) ends it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use asrl_common::config::GrpcClientConfig;
use asrl_common::rollout::{AdapterVersion, GroupScoreError, GroupScorer};
use asrl_common::transport::{self, with_deadline, AuthChannel, Backoff};
use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::engine::{EngineError, RolloutEngine};
use crate::status::WorkerStatusHandle;

pub use crate::lease::prompt_seed;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub client: GrpcClientConfig,
    pub name: String,
    /// `cpu` or `cuda:N`, reported to the learner.
    pub device: String,
    pub capabilities: Vec<String>,
    /// Prompts per lease to ask for (0: the learner's default).
    pub max_prompts: u32,
    /// Sequences the engine decodes together, advertised at registration (lease sizing).
    pub max_sequences: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error("rollout engine: {0}")]
    Engine(EngineError),
    #[error(transparent)]
    Reward(#[from] GroupScoreError),
    #[error("engine returned a malformed group for prompt {prompt_id}: {message}")]
    BadGroup { prompt_id: String, message: String },
    #[error("learner refused registration: {0}")]
    Register(Status),
    #[error("engine thread panicked: {0}")]
    Join(String),
    /// A failure shared by every prompt of a lease (the batch's engine call panicked).
    #[error("{message}")]
    Failed { reason: pb::ReturnReason, message: String },
}

/// Why a session with the learner ended.
pub(crate) enum SessionEnd {
    Shutdown,
    /// Connection-level failure: reconnect after a backoff.
    Reconnect(Status),
    /// The learner no longer knows this worker id.
    Reregister,
    Fatal(WorkerError),
}

impl From<WorkerError> for SessionEnd {
    fn from(e: WorkerError) -> Self {
        SessionEnd::Fatal(e)
    }
}

fn forgot_me(status: &Status) -> bool {
    status.code() == Code::NotFound && status.message().starts_with("worker_id")
}

/// Worth the same call again: a dropped connection or a restarting learner (UNAVAILABLE, a
/// transport-level UNKNOWN) or a call that ran out of time. Every learner call a worker makes
/// may be repeated: `SubmitGroups` and `ReturnPrompts` are idempotent, and a lease whose
/// `LeaseWork` reply was lost is re-queued once heartbeats stop naming it.
pub fn retryable(status: &Status) -> bool {
    transport::is_transient(status) || status.code() == Code::DeadlineExceeded
}

/// Maps a failed call (after its retries) to how the session continues; `None`: log, carry on.
pub(crate) fn classify(rpc: &str, status: Status) -> Option<SessionEnd> {
    if forgot_me(&status) {
        return Some(SessionEnd::Reregister);
    }
    tracing::error!(rpc, code = ?status.code(), message = status.message(), "learner rejected the call");
    None
}

pub(crate) struct Loop<E: RolloutEngine> {
    pub(crate) opts: WorkerOptions,
    engine: Option<E>,
    pub(crate) reward: Arc<dyn GroupScorer>,
    pub(crate) status: WorkerStatusHandle,
    pub(crate) loaded_version: AdapterVersion,
    /// The last adapter's receive buffer, reused for the next download (its pages are already
    /// mapped: ~20-40 ms less per 80 MB adapter than fresh memory).
    pub(crate) adapter_buf: Vec<u8>,
    /// The learner's bound on |reward| (from registration; infinite when it states none).
    pub(crate) max_abs_reward: f64,
}

/// Runs until `shutdown` turns true (or its sender is dropped), or a fatal error.
pub async fn run_worker<E: RolloutEngine>(
    opts: WorkerOptions,
    engine: E,
    reward: Arc<dyn GroupScorer>,
    status: WorkerStatusHandle,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let mut backoff = Backoff::from_config(&opts.client);
    let mut this = Loop {
        opts,
        engine: Some(engine),
        reward,
        status,
        loaded_version: AdapterVersion::NONE,
        adapter_buf: Vec::new(),
        max_abs_reward: f64::INFINITY,
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        this.status.set_state("connecting");
        let channel = tokio::select! {
            ch = transport::connect_with_backoff(&this.opts.client) => ch?,
            _ = shutdown.changed() => return Ok(()),
        };
        let client = transport::learner_client(channel, &this.opts.client)?;
        match this.session(client, &mut shutdown).await {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Fatal(e) => return Err(e),
            SessionEnd::Reregister => {
                tracing::warn!("learner does not know this worker any more; registering again");
                backoff.reset();
            }
            SessionEnd::Reconnect(s) => {
                let wait = backoff.next_delay();
                tracing::warn!(code = ?s.code(), message = s.message(), retry_in_ms = wait.as_millis() as u64, "lost the learner; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    }
}

impl<E: RolloutEngine> Loop<E> {
    pub(crate) fn unary_deadline(&self) -> Duration {
        Duration::from_millis(self.opts.client.request_timeout_ms)
    }

    /// Runs `op` until it succeeds or fails with a status not worth retrying (see
    /// [`retryable`]), sleeping with backoff in between. The same registration throughout.
    pub(crate) async fn retrying<T, F, Fut>(&self, rpc: &'static str, mut op: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut backoff = Backoff::from_config(&self.opts.client);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(s) if retryable(&s) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(rpc, code = ?s.code(), message = s.message(), retry_in_ms = wait.as_millis() as u64, "learner call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(s) => return Err(s),
            }
        }
    }

    async fn session(&mut self, mut client: LearnerClient<AuthChannel>, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
        let register = pb::RegisterRequest {
            name: self.opts.name.clone(),
            device: self.opts.device.clone(),
            capabilities: self.opts.capabilities.clone(),
            max_sequences: self.opts.max_sequences,
        };
        let reg = match client.register(with_deadline(register, self.unary_deadline())).await {
            Ok(r) => r.into_inner(),
            Err(s) if retryable(&s) => return SessionEnd::Reconnect(s),
            Err(s) => return SessionEnd::Fatal(WorkerError::Register(s)),
        };
        let worker_id = reg.worker_id;
        self.max_abs_reward = if reg.max_abs_reward > 0.0 { reg.max_abs_reward } else { f64::INFINITY };
        // A restarted learner numbers its adapters again from its checkpoint: a version this
        // worker holds may now name other weights, so fetch afresh.
        self.loaded_version = AdapterVersion::NONE;
        self.status.lock().worker_id = worker_id;
        tracing::info!(worker_id, url = %self.opts.client.url, "registered with the learner");

        let heartbeat = heartbeat_loop(
            client.clone(),
            worker_id,
            Duration::from_millis(reg.heartbeat_interval_ms.max(100) as u64),
            self.unary_deadline(),
            self.status.clone(),
        );
        tokio::select! {
            end = self.work_loop(&mut client, worker_id) => end,
            end = heartbeat => end,
            _ = shutdown.changed() => SessionEnd::Shutdown,
        }
    }

    async fn work_loop(&mut self, client: &mut LearnerClient<AuthChannel>, worker_id: u64) -> SessionEnd {
        loop {
            self.status.set_state("idle");
            let req = pb::LeaseWorkRequest { worker_id, max_prompts: self.opts.max_prompts };
            let deadline = self.unary_deadline();
            let result = self
                .retrying("LeaseWork", || {
                    let mut c = client.clone();
                    async move { c.lease_work(with_deadline(req, deadline)).await }
                })
                .await;
            let outcome = match result {
                Ok(r) => r.into_inner().outcome,
                Err(s) => match classify("LeaseWork", s) {
                    Some(end) => return end,
                    None => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let lease = match outcome {
                Some(pb::lease_work_response::Outcome::Lease(l)) => l,
                Some(pb::lease_work_response::Outcome::NoWork(n)) => {
                    tracing::debug!(reason = %n.reason, "no work");
                    tokio::time::sleep(Duration::from_millis(n.retry_after_ms.clamp(10, 60_000) as u64)).await;
                    continue;
                }
                None => {
                    tracing::error!("LeaseWork answered without an outcome");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let done = self.run_lease(client, worker_id, lease).await;
            // Answered (or given back) either way: heartbeats stop naming it.
            self.status.lock().current_lease_id = 0;
            if let Err(end) = done {
                return end;
            }
        }
    }

    /// Runs `f` on a blocking thread with the engine moved in and back out. A panic in `f` is
    /// caught there and reported as an engine error, so the engine (and the worker) live on.
    pub(crate) async fn with_engine<T, F>(&mut self, f: F) -> Result<T, WorkerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut E) -> Result<T, WorkerError> + Send + 'static,
    {
        let mut engine = self.engine.take().ok_or_else(|| WorkerError::Join("engine lost by an earlier panic".into()))?;
        let (engine, result) = tokio::task::spawn_blocking(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut engine)))
                .unwrap_or_else(|panic| Err(WorkerError::Engine(format!("engine panicked: {}", panic_message(&panic)).into())));
            (engine, r)
        })
        .await
        .map_err(|e| WorkerError::Join(e.to_string()))?;
        self.engine = Some(engine);
        result
    }
}

async fn heartbeat_loop(
    mut client: LearnerClient<AuthChannel>,
    worker_id: u64,
    interval: Duration,
    deadline: Duration,
    status: WorkerStatusHandle,
) -> SessionEnd {
    loop {
        tokio::time::sleep(interval).await;
        let req = {
            let s = status.lock();
            pb::HeartbeatRequest {
                worker_id,
                tokens_per_second: s.tokens_per_second,
                adapter_version: s.adapter_version,
                lease_id: s.current_lease_id,
                lease_ids: Vec::new(),
            }
        };
        // A missed heartbeat is not retried: the next one follows within the interval, and
        // the learner tolerates a few missing before it drops this worker.
        match client.heartbeat(with_deadline(req, deadline)).await {
            Ok(_) => {}
            Err(s) if retryable(&s) => {
                tracing::warn!(code = ?s.code(), message = s.message(), "heartbeat failed; trying again next interval");
            }
            Err(s) => {
                if let Some(end) = classify("Heartbeat", s) {
                    return end;
                }
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
