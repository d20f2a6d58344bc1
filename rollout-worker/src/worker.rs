//! The rollout loop: register (advertising the batch capacity), heartbeat, lease work, fetch
//! the adapter version the lease requires, generate every group of the lease in one batch,
//! score each, submit, repeat. A learner that goes away is reconnected with backoff; a learner
//! that forgot this worker (restart) is re-registered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use asrl_common::config::{GrpcClientConfig, SamplingParams};
use asrl_common::rollout::{AdapterVersion, GroupScoreError, GroupScorer, PromptWork, ScoredCompletion};
use asrl_common::sample::Completion;
use asrl_common::transport::convert::{completion_to_wire, prompt_from_wire, sampling_from_wire};
use asrl_common::transport::{self, fetch_adapter_into, recycle_buffer, with_deadline, AuthChannel, Backoff, FetchError};
use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::engine::{EngineError, RolloutEngine};
use crate::status::WorkerStatusHandle;

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
}

/// Why a session with the learner ended.
enum SessionEnd {
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

/// Maps a failed call to how the session continues; `None`: log and carry on.
fn classify(rpc: &str, status: Status) -> Option<SessionEnd> {
    if transport::is_transient(&status) {
        return Some(SessionEnd::Reconnect(status));
    }
    if forgot_me(&status) {
        return Some(SessionEnd::Reregister);
    }
    tracing::error!(rpc, code = ?status.code(), message = status.message(), "learner rejected the call");
    None
}

struct Loop<E: RolloutEngine> {
    opts: WorkerOptions,
    engine: Option<E>,
    reward: Arc<dyn GroupScorer>,
    status: WorkerStatusHandle,
    loaded_version: AdapterVersion,
    /// The last adapter's receive buffer, reused for the next download (its pages are already
    /// mapped: ~20-40 ms less per 80 MB adapter than fresh memory).
    adapter_buf: Vec<u8>,
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
    let mut this = Loop { opts, engine: Some(engine), reward, status, loaded_version: AdapterVersion::NONE, adapter_buf: Vec::new() };
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
    fn unary_deadline(&self) -> Duration {
        Duration::from_millis(self.opts.client.request_timeout_ms)
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
            Err(s) if transport::is_transient(&s) => return SessionEnd::Reconnect(s),
            Err(s) => return SessionEnd::Fatal(WorkerError::Register(s)),
        };
        let worker_id = reg.worker_id;
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
            let outcome = match client.lease_work(with_deadline(req, self.unary_deadline())).await {
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
            if let Err(end) = self.run_lease(client, worker_id, lease).await {
                return end;
            }
        }
    }

    /// One lease end to end. `Err` ends the session; a lease that cannot be done is dropped
    /// (the learner re-leases it after its deadline).
    async fn run_lease(&mut self, client: &mut LearnerClient<AuthChannel>, worker_id: u64, lease: pb::Lease) -> Result<(), SessionEnd> {
        let lease_id = lease.lease_id;
        let parsed = sampling_from_wire(lease.sampling, "lease.sampling").and_then(|s| {
            let prompts = lease
                .prompts
                .into_iter()
                .enumerate()
                .map(|(i, p)| prompt_from_wire(p, &format!("lease.prompts[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((s, prompts))
        });
        let (sampling, prompts) = match parsed {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(lease_id, error = %e, "malformed lease dropped");
                return Ok(());
            }
        };
        self.status.lock().current_lease_id = lease_id;

        let lease_version = AdapterVersion::new(lease.adapter_version);
        if lease_version != self.loaded_version {
            self.status.set_state("fetching-adapter");
            let deadline = Duration::from_millis(self.opts.client.adapter_fetch_timeout_ms);
            let buf = std::mem::take(&mut self.adapter_buf);
            let payload = match fetch_adapter_into(client, worker_id, lease_version, deadline, buf).await {
                Ok(p) => p,
                Err(FetchError::Rpc(s)) => match classify("FetchAdapter", s) {
                    Some(end) => return Err(end),
                    None => return Ok(()),
                },
                Err(FetchError::Transfer(e)) => {
                    tracing::error!(lease_id, error = %e, "adapter download failed verification; lease dropped");
                    return Ok(());
                }
            };
            let version = payload.version;
            let bytes = self
                .with_engine(move |engine| {
                    engine.load_adapter(version, &payload.bytes).map_err(WorkerError::Engine)?;
                    Ok(payload.bytes)
                })
                .await
                .map_err(SessionEnd::Fatal)?;
            self.adapter_buf = recycle_buffer(bytes);
            self.loaded_version = version;
            self.status.lock().adapter_version = version.get();
            tracing::info!(version = version.get(), "adapter loaded");
        }

        self.status.set_state("generating");
        let started = Instant::now();
        let reward = self.reward.clone();
        let scored = self
            .with_engine(move |engine| generate_lease(engine, reward.as_ref(), prompts, &sampling))
            .await
            .map_err(SessionEnd::Fatal)?;
        let generated_tokens: u64 = scored.iter().flat_map(|(_, g)| g).map(|c| c.completion.tokens.len() as u64).sum();
        let groups: Vec<pb::GroupResult> = scored.iter().map(|(prompt, g)| group_to_wire(prompt, g)).collect();
        let seconds = started.elapsed().as_secs_f64();

        self.status.set_state("submitting");
        let n_groups = groups.len() as u64;
        let req = pb::SubmitGroupsRequest {
            lease_id,
            worker_id,
            adapter_version: self.loaded_version.get(),
            groups,
            timings: Some(pb::Timings { generation_seconds: seconds, generated_tokens }),
        };
        match client.submit_groups(with_deadline(req, self.unary_deadline())).await {
            Ok(r) => {
                let r = r.into_inner();
                tracing::info!(lease_id, accepted = r.accepted, duplicates = r.duplicates, stale = r.stale, "groups submitted");
            }
            Err(s) => {
                if let Some(end) = classify("SubmitGroups", s) {
                    return Err(end);
                }
            }
        }
        let mut st = self.status.lock();
        st.groups_completed += n_groups;
        st.current_lease_id = 0;
        if seconds > 0.0 {
            st.tokens_per_second = generated_tokens as f64 / seconds;
        }
        Ok(())
    }

    /// Runs `f` on a blocking thread with the engine moved in and back out.
    async fn with_engine<T, F>(&mut self, f: F) -> Result<T, WorkerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut E) -> Result<T, WorkerError> + Send + 'static,
    {
        let mut engine = self.engine.take().ok_or_else(|| WorkerError::Join("engine lost by an earlier panic".into()))?;
        let (engine, result) = tokio::task::spawn_blocking(move || {
            let r = f(&mut engine);
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
            }
        };
        if let Err(s) = client.heartbeat(with_deadline(req, deadline)).await {
            if let Some(end) = classify("Heartbeat", s) {
                return end;
            }
        }
    }
}

/// A per-prompt seed: the lease's seed mixed with the prompt id (FNV-1a), so prompts of one
/// lease are sampled independently yet reproducibly.
pub fn prompt_seed(seed: u64, prompt_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in prompt_id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Samples every prompt of a lease in one batch (each with its own [`prompt_seed`]), checks
/// and scores each group.
fn generate_lease<E: RolloutEngine>(
    engine: &mut E,
    reward: &dyn GroupScorer,
    prompts: Vec<PromptWork>,
    sampling: &SamplingParams,
) -> Result<Vec<(PromptWork, Vec<ScoredCompletion>)>, WorkerError> {
    let params: Vec<SamplingParams> =
        prompts.iter().map(|p| SamplingParams { seed: prompt_seed(sampling.seed, &p.prompt_id), ..sampling.clone() }).collect();
    let groups = engine.sample_groups(&prompts, &params).map_err(WorkerError::Engine)?;
    if groups.len() != prompts.len() {
        return Err(WorkerError::BadGroup {
            prompt_id: prompts.first().map(|p| p.prompt_id.clone()).unwrap_or_default(),
            message: format!("{} groups for a lease of {} prompts", groups.len(), prompts.len()),
        });
    }
    prompts
        .into_iter()
        .zip(groups)
        .zip(&params)
        .map(|((prompt, completions), params)| {
            check_group(&prompt, params, &completions)?;
            let rewards = reward.score_group(&prompt, &completions)?;
            if rewards.len() != completions.len() {
                return Err(WorkerError::BadGroup {
                    prompt_id: prompt.prompt_id.clone(),
                    message: format!("{} reward scores for {} completions", rewards.len(), completions.len()),
                });
            }
            let scored = completions.into_iter().zip(rewards).map(|(completion, reward)| ScoredCompletion { completion, reward }).collect();
            Ok((prompt, scored))
        })
        .collect()
}

fn check_group(prompt: &PromptWork, params: &SamplingParams, completions: &[Completion]) -> Result<(), WorkerError> {
    let bad = |message: String| WorkerError::BadGroup { prompt_id: prompt.prompt_id.clone(), message };
    if completions.len() != params.n {
        return Err(bad(format!("{} completions, group size {}", completions.len(), params.n)));
    }
    for (j, c) in completions.iter().enumerate() {
        if c.tokens.len() != c.logprobs.len() {
            return Err(bad(format!("completion {j}: {} tokens but {} log-probs", c.tokens.len(), c.logprobs.len())));
        }
    }
    Ok(())
}

fn group_to_wire(prompt: &PromptWork, completions: &[ScoredCompletion]) -> pb::GroupResult {
    pb::GroupResult { prompt_id: prompt.prompt_id.clone(), completions: completions.iter().map(completion_to_wire).collect() }
}
