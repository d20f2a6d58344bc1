//! The `asrl.v1.Learner` gRPC service, independent of the training math.
//!
//! [`new_learner`] returns three ends:
//! - [`LearnerService`]: the gRPC side, served with [`serve_learner`] on the tokio runtime;
//! - [`LearnerHandle`]: the training thread's side (plain blocking calls, any thread):
//!   publish adapter versions, start GRPO rollout phases, report progress;
//! - a `crossbeam_channel::Receiver<RolloutGroup>` delivering every validated, non-duplicate,
//!   fresh-enough group exactly once to the training thread.
//!
//! Requests are validated in full before anything changes; every rejection is logged with its
//! gRPC status and leaves the learner as it was.

mod handle;
mod leases;
pub mod limits;
mod live_sink;
mod progress;
mod registry;
mod submit;
mod validate;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asrl_common::config::{GrpcServerConfig, LeaseConfig, DEFAULT_MAX_ABS_REWARD};
use asrl_common::rollout::{AdapterVersion, RolloutGroup};
use asrl_common::transport::convert::{prompt_to_wire, sampling_to_wire};
use asrl_common::transport::{self, AdapterPayload, RunningServer, TransportError};
use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_server::{Learner, LearnerServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub use handle::LearnerHandle;
pub use leases::{FailureKind, GroupFate, LeaseCounters, LeaseError, LeaseGrant, LeaseManager, ReturnOutcome};
pub use live_sink::LiveFileSink;
pub use progress::{Activity, Progress};
pub use registry::{WorkerEntry, WorkerRegistry};
pub use validate::{check_reward, validate_groups, Submission};

/// Full name of the service, for health checks.
pub const LEARNER_SERVICE_NAME: &str = "asrl.v1.Learner";

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub leases: LeaseConfig,
    /// Token ids at or above this are rejected.
    pub vocab_size: u32,
    /// Bound on |reward| of submitted totals and components (`reward.max_abs`), told to
    /// workers at registration.
    pub max_abs_reward: f64,
}

impl ServiceOptions {
    /// Options with the default reward bound.
    pub fn new(leases: LeaseConfig, vocab_size: u32) -> Self {
        Self { leases, vocab_size, max_abs_reward: DEFAULT_MAX_ABS_REWARD }
    }
}

/// Where `AddExamples` lines go: the live dataset (implemented by the data side).
pub trait ExampleSink: Send + Sync + 'static {
    /// Parses and appends JSON lines; reports per-line rejections (1-based line numbers). An
    /// error means nothing of this call was kept.
    fn add_jsonl(&self, jsonl: &str) -> Result<AddExamplesOutcome, SinkError>;
    fn dataset_size(&self) -> u64;
}

/// The live dataset could not take the lines (I/O); nothing of the call was written.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
    /// Out of space (ENOSPC / EDQUOT / over the file size limit): RESOURCE_EXHAUSTED.
    pub no_space: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddExamplesOutcome {
    pub accepted: u32,
    pub rejected: Vec<(u32, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("adapter version {got} must be greater than the published version {current}")]
    VersionNotIncreasing { current: AdapterVersion, got: AdapterVersion },
    #[error("rollout phase: {0}")]
    Phase(#[from] LeaseError),
}

struct Inner {
    adapters: VecDeque<AdapterPayload>,
    leases: LeaseManager,
    registry: WorkerRegistry,
    progress: Progress,
}

impl Inner {
    fn latest_version(&self) -> AdapterVersion {
        self.adapters.back().map_or(AdapterVersion::NONE, |a| a.version)
    }

    /// Drops workers silent past the timeout, re-queueing their leases at once, and expires
    /// leases past their deadline. Leases follow liveness, not only the (long) lease timeout.
    fn expire(&mut self, now: Instant) {
        for worker_id in self.registry.prune(now) {
            self.leases.release_worker(worker_id);
        }
        self.leases.sweep(now);
    }

    /// The live entry of `worker_id`, marked seen, after [`Self::expire`].
    fn touch(&mut self, worker_id: u64, now: Instant) -> Option<&mut registry::WorkerEntry> {
        self.expire(now);
        self.registry.touch(worker_id, now)
    }
}

struct Shared {
    opts: ServiceOptions,
    inner: Mutex<Inner>,
    groups: crossbeam_channel::Sender<RolloutGroup>,
    examples: Option<Arc<dyn ExampleSink>>,
}

impl Shared {
    /// A panic elsewhere must not take the service down with it: keep serving the state as is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The gRPC service. Serve it with [`serve_learner`].
#[derive(Clone)]
pub struct LearnerService {
    shared: Arc<Shared>,
}

pub fn new_learner(
    opts: ServiceOptions,
    examples: Option<Arc<dyn ExampleSink>>,
) -> (LearnerService, LearnerHandle, crossbeam_channel::Receiver<RolloutGroup>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let inner = Inner {
        adapters: VecDeque::new(),
        leases: LeaseManager::new(opts.leases.clone()),
        registry: WorkerRegistry::new(
            Duration::from_millis(opts.leases.worker_timeout_ms),
            opts.leases.max_workers,
            Instant::now(),
        ),
        progress: Progress::default(),
    };
    let shared = Arc::new(Shared { opts, inner: Mutex::new(inner), groups: tx, examples });
    (LearnerService { shared: shared.clone() }, LearnerHandle { shared }, rx)
}

fn reject(rpc: &'static str, status: Status) -> Status {
    tracing::warn!(rpc, code = ?status.code(), message = status.message(), "request rejected");
    status
}

fn unix_ms(deadline: Instant, now: Instant) -> u64 {
    let wall = SystemTime::now() + deadline.saturating_duration_since(now);
    wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn no_worker_warning(absent: Duration) -> String {
    format!(
        "no rollout worker alive for {} s: the rollout phase is waiting with its state kept (start one: asrl-rollout-worker run)",
        absent.as_secs()
    )
}

fn unknown_worker(worker_id: u64) -> Status {
    Status::not_found(format!("worker_id {worker_id} is not registered (learner restarted or worker timed out): register again"))
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::AdapterChunk, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Learner for LearnerService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        limits::check_register(&r).map_err(|s| reject("Register", s))?;
        let interval = self.shared.opts.leases.heartbeat_interval_ms;
        let now = Instant::now();
        let id = {
            let mut inner = self.shared.lock();
            inner.expire(now);
            let id = inner.registry.register(r.name.clone(), r.device.clone(), r.capabilities, now);
            if let Some(w) = id.and_then(|id| inner.registry.touch(id, now)) {
                w.max_sequences = r.max_sequences;
            }
            id
        };
        let Some(id) = id else {
            let max = self.shared.opts.leases.max_workers;
            return Err(reject(
                "Register",
                Status::resource_exhausted(format!("{max} workers are registered (leases.max_workers): no room for another")),
            ));
        };
        tracing::info!(worker_id = id, name = %r.name, device = %r.device, max_sequences = r.max_sequences, "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            worker_id: id,
            heartbeat_interval_ms: interval.min(u32::MAX as u64) as u32,
            max_abs_reward: self.shared.opts.max_abs_reward,
        }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        if !(r.tokens_per_second.is_finite() && r.tokens_per_second >= 0.0) {
            return Err(reject("Heartbeat", Status::invalid_argument("tokens_per_second: not a finite value ≥ 0")));
        }
        let cap = self.shared.opts.leases.max_leases_per_worker;
        if r.lease_ids.len() > cap {
            return Err(reject(
                "Heartbeat",
                Status::invalid_argument(format!("lease_ids: {} entries exceed leases.max_leases_per_worker = {cap}", r.lease_ids.len())),
            ));
        }
        let now = Instant::now();
        let mut inner = self.shared.lock();
        let latest = inner.latest_version();
        // Claim before expiring: a heartbeat that names a lease keeps it alive.
        let mut held = r.lease_ids.clone();
        held.push(r.lease_id);
        inner.leases.claim(r.worker_id, &held, now);
        let Some(w) = inner.touch(r.worker_id, now) else {
            return Err(reject("Heartbeat", unknown_worker(r.worker_id)));
        };
        w.tokens_per_second = r.tokens_per_second;
        w.adapter_version = AdapterVersion::new(r.adapter_version);
        w.lease_id = r.lease_id;
        Ok(Response::new(pb::HeartbeatResponse { latest_adapter_version: latest.get() }))
    }

    async fn lease_work(&self, request: Request<pb::LeaseWorkRequest>) -> Result<Response<pb::LeaseWorkResponse>, Status> {
        let r = request.into_inner();
        let now = Instant::now();
        let mut inner = self.shared.lock();
        let Some(max_sequences) = inner.touch(r.worker_id, now).map(|w| w.max_sequences) else {
            return Err(reject("LeaseWork", unknown_worker(r.worker_id)));
        };
        let held = inner.leases.active_leases(r.worker_id);
        let cap = self.shared.opts.leases.max_leases_per_worker;
        if held >= cap {
            return Err(reject(
                "LeaseWork",
                Status::resource_exhausted(format!(
                    "worker_id {} holds {held} unsubmitted leases (leases.max_leases_per_worker = {cap}): submit or return them first",
                    r.worker_id
                )),
            ));
        }
        let retry = self.shared.opts.leases.no_work_retry_ms.min(u32::MAX as u64) as u32;
        let no_work = |reason: &str| pb::LeaseWorkResponse {
            outcome: Some(pb::lease_work_response::Outcome::NoWork(pb::NoWork { retry_after_ms: retry, reason: reason.into() })),
        };
        let version = inner.latest_version();
        if version.is_none() {
            return Ok(Response::new(no_work("no adapter published yet")));
        }
        let size = inner.leases.lease_size(r.max_prompts, max_sequences, inner.registry.len());
        let Some(grant) = inner.leases.lease(r.worker_id, size, version, now) else {
            let reason = if inner.leases.is_phase_done() { "no rollout phase in progress" } else { "every prompt is leased" };
            return Ok(Response::new(no_work(reason)));
        };
        if let Some(w) = inner.registry.touch(r.worker_id, now) {
            w.lease_id = grant.lease_id;
        }
        let lease = pb::Lease {
            lease_id: grant.lease_id,
            prompts: grant.prompts.iter().map(prompt_to_wire).collect(),
            sampling: Some(sampling_to_wire(&grant.sampling)),
            adapter_version: grant.adapter_version.get(),
            deadline_unix_ms: unix_ms(grant.deadline, now),
        };
        tracing::debug!(lease_id = grant.lease_id, worker_id = r.worker_id, prompts = lease.prompts.len(), "lease granted");
        Ok(Response::new(pb::LeaseWorkResponse { outcome: Some(pb::lease_work_response::Outcome::Lease(lease)) }))
    }

    type FetchAdapterStream = ChunkStream;

    async fn fetch_adapter(&self, request: Request<pb::FetchAdapterRequest>) -> Result<Response<ChunkStream>, Status> {
        let r = request.into_inner();
        let mut inner = self.shared.lock();
        if inner.touch(r.worker_id, Instant::now()).is_none() {
            return Err(reject("FetchAdapter", unknown_worker(r.worker_id)));
        }
        let wanted = AdapterVersion::new(r.version);
        let payload = if wanted.is_none() {
            inner.adapters.back().cloned()
        } else {
            inner.adapters.iter().find(|a| a.version == wanted).cloned()
        };
        let Some(payload) = payload else {
            let kept: Vec<u64> = inner.adapters.iter().map(|a| a.version.get()).collect();
            let status = if kept.is_empty() {
                Status::failed_precondition("no adapter published yet")
            } else {
                Status::not_found(format!("version: adapter version {} is not held (kept: {kept:?})", r.version))
            };
            return Err(reject("FetchAdapter", status));
        };
        drop(inner);
        Ok(Response::new(Box::pin(tokio_stream::iter(payload.chunks().map(Ok)))))
    }

    async fn submit_groups(&self, request: Request<pb::SubmitGroupsRequest>) -> Result<Response<pb::SubmitGroupsResponse>, Status> {
        self.submit(request.into_inner()).map(Response::new).map_err(|s| reject("SubmitGroups", s))
    }

    async fn return_prompts(&self, request: Request<pb::ReturnPromptsRequest>) -> Result<Response<pb::ReturnPromptsResponse>, Status> {
        self.return_prompts(request.into_inner()).map(Response::new).map_err(|s| reject("ReturnPrompts", s))
    }

    async fn get_status(&self, _request: Request<pb::GetStatusRequest>) -> Result<Response<pb::LearnerStatus>, Status> {
        let dataset_size = self.shared.examples.as_ref().map_or(0, |e| e.dataset_size());
        let now = Instant::now();
        let mut inner = self.shared.lock();
        inner.expire(now);
        let c = inner.leases.counters();
        let absent = inner.registry.absent_for(now);
        let alert = Duration::from_millis(self.shared.opts.leases.no_worker_alert_ms);
        let warning = match absent {
            Some(d) if d >= alert && !inner.leases.is_phase_done() => no_worker_warning(d),
            _ => String::new(),
        };
        let mut workers: Vec<pb::WorkerInfo> = inner
            .registry
            .iter()
            .map(|(id, w)| pb::WorkerInfo {
                worker_id: *id,
                name: w.name.clone(),
                device: w.device.clone(),
                tokens_per_second: w.tokens_per_second,
                adapter_version: w.adapter_version.get(),
                groups_completed: w.groups_completed,
                last_seen_ms_ago: now.saturating_duration_since(w.last_seen).as_millis() as u64,
            })
            .collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name).then(a.worker_id.cmp(&b.worker_id)));
        let p = &inner.progress;
        Ok(Response::new(pb::LearnerStatus {
            epoch: p.epoch,
            phase: p.activity.as_str().into(),
            step: p.step,
            adapter_version: inner.latest_version().get(),
            dataset_size,
            workers,
            metrics: p.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            prompts_pending: c.pending,
            prompts_leased: c.leased,
            prompts_completed: c.completed,
            duplicate_groups: c.duplicate_groups,
            stale_groups: c.stale_groups,
            expired_leases: c.expired_leases,
            returned_prompts: c.returned_prompts,
            returns_by_reason: inner.leases.returns_by_reason().map(|(k, v)| (k.to_string(), v)).collect(),
            rejected_groups: c.rejected_groups,
            abandoned_prompts: c.abandoned,
            no_worker_ms: absent.map_or(0, |d| d.as_millis() as u64),
            warning,
            last_failure: inner.leases.last_failure().to_string(),
        }))
    }

    async fn add_examples(&self, request: Request<pb::AddExamplesRequest>) -> Result<Response<pb::AddExamplesResponse>, Status> {
        let Some(sink) = self.shared.examples.clone() else {
            return Err(reject("AddExamples", Status::failed_precondition("this learner has no live dataset attached")));
        };
        let jsonl = request.into_inner().jsonl;
        if jsonl.trim().is_empty() {
            return Err(reject("AddExamples", Status::invalid_argument("jsonl: empty")));
        }
        let lines = jsonl.lines().count();
        if lines > limits::MAX_ADD_EXAMPLES_LINES {
            return Err(reject(
                "AddExamples",
                Status::invalid_argument(format!(
                    "jsonl: {lines} lines exceed the limit of {} per request: split it",
                    limits::MAX_ADD_EXAMPLES_LINES
                )),
            ));
        }
        // Parsing and appending may touch disk: keep it off the async workers.
        let outcome = tokio::task::spawn_blocking(move || sink.add_jsonl(&jsonl))
            .await
            .map_err(|e| reject("AddExamples", Status::internal(format!("dataset append failed: {e}"))))?
            .map_err(|e| {
                let status = if e.no_space {
                    Status::resource_exhausted(format!("nothing appended: {e}"))
                } else {
                    Status::internal(format!("nothing appended: {e}"))
                };
                reject("AddExamples", status)
            })?;
        let rejected_total = outcome.rejected.len() as u32;
        Ok(Response::new(pb::AddExamplesResponse {
            accepted: outcome.accepted,
            rejected: outcome
                .rejected
                .into_iter()
                .take(limits::MAX_REJECTIONS_LISTED)
                .map(|(line, reason)| pb::LineRejection { line, reason })
                .collect(),
            rejected_total,
        }))
    }
}

/// Serves the learner (with reflection, health and the config's auth/limits) and reports
/// SERVING once listening.
pub async fn serve_learner(cfg: &GrpcServerConfig, service: LearnerService) -> Result<RunningServer, TransportError> {
    let server = LearnerServer::new(service)
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes);
    let routes = tonic::service::Routes::new(server);
    let running = transport::serve(cfg, routes, &[asrl_proto::FILE_DESCRIPTOR_SET], &[LEARNER_SERVICE_NAME]).await?;
    running.mark_serving().await;
    Ok(running)
}
