//! One lease end to end: parse it, make sure its adapter version is loaded, generate and score
//! every prompt's group in one batch, give back the prompts that failed (with their reason), submit the rest.

use std::time::{Duration, Instant};

use asrl_common::config::SamplingParams;
use asrl_common::reward::Reward;
use asrl_common::rollout::{AdapterVersion, GroupScorer, PromptWork, ScoredCompletion};
use asrl_common::sample::Completion;
use asrl_common::transport::convert::{completion_to_wire, prompt_from_wire, sampling_from_wire};
use asrl_common::transport::{fetch_adapter_into, recycle_buffer, with_deadline, AuthChannel, FetchError};
use asrl_proto::v1 as pb;
use asrl_proto::v1::learner_client::LearnerClient;
use tonic::Code;

use crate::engine::RolloutEngine;
use crate::worker::{Loop, SessionEnd, WorkerError};

/// Downloads of one adapter version that fail verification are tried this many times.
const ADAPTER_ATTEMPTS: usize = 3;

/// A prompt given back unfinished.
pub(crate) struct Failed {
    prompt_id: String,
    reason: pb::ReturnReason,
    message: String,
}

impl Failed {
    fn new(prompt_id: &str, reason: pb::ReturnReason, message: impl Into<String>) -> Self {
        Self { prompt_id: prompt_id.to_string(), reason, message: message.into() }
    }
}

fn reason_of(e: &WorkerError) -> pb::ReturnReason {
    match e {
        WorkerError::Failed { reason, .. } => *reason,
        WorkerError::Reward(_) => pb::ReturnReason::RewardError,
        WorkerError::BadGroup { .. } => pb::ReturnReason::MalformedGroup,
        _ => pb::ReturnReason::EngineError,
    }
}

impl<E: RolloutEngine> Loop<E> {
    /// One lease end to end. `Err` ends the session (the learner forgot this worker, or the
    /// engine is gone); everything else is answered to the learner, as groups or returns.
    pub(crate) async fn run_lease(
        &mut self,
        client: &mut LearnerClient<AuthChannel>,
        worker_id: u64,
        lease: pb::Lease,
    ) -> Result<(), SessionEnd> {
        let lease_id = lease.lease_id;
        let ids: Vec<String> = lease.prompts.iter().map(|p| p.prompt_id.clone()).collect();
        let parsed = sampling_from_wire(lease.sampling, "lease.sampling").and_then(|s| {
            let prompts = lease
                .prompts
                .into_iter()
                .enumerate()
                .map(|(i, p)| prompt_from_wire(p, &format!("lease.prompts[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((s, prompts))
        });
        self.status.lock().current_lease_id = lease_id;
        let (sampling, prompts) = match parsed {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(lease_id, error = %e, "malformed lease; giving its prompts back");
                let failed = ids.iter().map(|id| Failed::new(id, pb::ReturnReason::Unspecified, format!("malformed lease: {e}"))).collect();
                return self.give_back(client, worker_id, lease_id, failed).await;
            }
        };

        let lease_version = AdapterVersion::new(lease.adapter_version);
        if let Err(message) = self.ensure_adapter(client, worker_id, lease_version).await? {
            tracing::error!(lease_id, version = lease_version.get(), %message, "adapter unavailable; giving the lease back");
            let failed = ids.iter().map(|id| Failed::new(id, pb::ReturnReason::AdapterUnavailable, message.clone())).collect();
            self.give_back(client, worker_id, lease_id, failed).await?;
            // The version may simply be gone (the learner keeps only the latest few): have the
            // current one ready for the next lease.
            if let Err(message) = self.ensure_adapter(client, worker_id, AdapterVersion::NONE).await? {
                tracing::warn!(%message, "could not fetch the latest adapter either");
            }
            return Ok(());
        }

        self.status.set_state("generating");
        let started = Instant::now();
        let mut generated_tokens = 0u64;
        let mut groups = Vec::with_capacity(prompts.len());
        let mut failed = Vec::new();
        for (prompt, outcome) in self.generate(prompts, &sampling).await? {
            match outcome.map(|scored| (self.check_rewards(&scored), scored)) {
                Ok((Ok(()), scored)) => {
                    generated_tokens += scored.iter().map(|c| c.completion.tokens.len() as u64).sum::<u64>();
                    groups.push(group_to_wire(&prompt, &scored));
                }
                Ok((Err(message), _)) => failed.push(Failed::new(&prompt.prompt_id, pb::ReturnReason::RewardOutOfBounds, message)),
                Err(e) => {
                    tracing::error!(lease_id, prompt_id = %prompt.prompt_id, error = %e, "prompt failed; giving it back");
                    failed.push(Failed::new(&prompt.prompt_id, reason_of(&e), e.to_string()));
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();

        // Returns first: a submission closes the lease, after which returns would be ignored.
        if !failed.is_empty() {
            self.give_back(client, worker_id, lease_id, failed).await?;
        }
        if !groups.is_empty() {
            self.submit(client, worker_id, lease_id, groups, seconds, generated_tokens).await?;
        }
        if seconds > 0.0 && generated_tokens > 0 {
            self.status.lock().tokens_per_second = generated_tokens as f64 / seconds;
        }
        Ok(())
    }

    /// Samples every prompt of the lease in one batch (each with its own [`prompt_seed`]) and
    /// scores each group, on the engine thread. A batch the engine refuses is sampled again
    /// prompt by prompt, so one bad prompt is given back alone; a panic fails the whole lease's
    /// prompts. `Err`: the engine thread is gone.
    async fn generate(&mut self, prompts: Vec<PromptWork>, sampling: &SamplingParams) -> Result<Vec<Scored>, SessionEnd> {
        let leased = prompts.clone();
        let reward = self.reward.clone();
        let sampling = sampling.clone();
        let result = self
            .with_engine(move |engine| {
                let params: Vec<SamplingParams> =
                    prompts.iter().map(|p| SamplingParams { seed: prompt_seed(sampling.seed, &p.prompt_id), ..sampling.clone() }).collect();
                let batch = match engine.sample_groups(&prompts, &params) {
                    Ok(groups) if groups.len() == prompts.len() => groups.into_iter().map(Ok).collect(),
                    Ok(groups) if prompts.len() == 1 => {
                        vec![Err(WorkerError::BadGroup { prompt_id: prompts[0].prompt_id.clone(), message: format!("{} groups for one prompt", groups.len()) })]
                    }
                    Err(e) if prompts.len() == 1 => vec![Err(WorkerError::Engine(e))],
                    other => {
                        let why = other.map_or_else(|e| e.to_string(), |g| format!("{} groups for {} prompts", g.len(), prompts.len()));
                        tracing::warn!(prompts = prompts.len(), error = %why, "batched sampling failed; sampling the lease prompt by prompt");
                        prompts.iter().zip(&params).map(|(p, q)| engine.sample_group(p, q).map_err(WorkerError::Engine)).collect::<Vec<_>>()
                    }
                };
                let scored = prompts
                    .into_iter()
                    .zip(params)
                    .zip(batch)
                    .map(|((prompt, params), completions)| {
                        let outcome = completions.and_then(|c| score_group(reward.as_ref(), &prompt, &params, c));
                        (prompt, outcome)
                    })
                    .collect();
                Ok(scored)
            })
            .await;
        match result {
            Ok(scored) => Ok(scored),
            Err(e @ WorkerError::Join(_)) => Err(SessionEnd::Fatal(e)),
            Err(e) => {
                let (reason, message) = (reason_of(&e), e.to_string());
                Ok(leased.into_iter().map(|p| (p, Err(WorkerError::Failed { reason, message: message.clone() }))).collect())
            }
        }
    }

    /// Every total and component finite and within the learner's bound.
    fn check_rewards(&self, scored: &[ScoredCompletion]) -> Result<(), String> {
        let bound = self.max_abs_reward;
        for (j, c) in scored.iter().enumerate() {
            let Reward { total, components } = &c.reward;
            let named = std::iter::once(("total", *total)).chain(components.iter().map(|(k, v)| (k.as_str(), *v)));
            for (name, v) in named {
                if !(v.is_finite() && v.abs() <= bound) {
                    return Err(format!("completion {j}: reward {name} = {v:e} is outside ±{bound}"));
                }
            }
        }
        Ok(())
    }

    /// Makes `version` ([`AdapterVersion::NONE`]: the latest) the loaded adapter. `Ok(Err(_))`:
    /// it could not be had (not held by the learner, failed verification every try, or the
    /// engine refused it); the reason is given back with the prompts.
    async fn ensure_adapter(
        &mut self,
        client: &mut LearnerClient<AuthChannel>,
        worker_id: u64,
        version: AdapterVersion,
    ) -> Result<Result<(), String>, SessionEnd> {
        if !version.is_none() && version == self.loaded_version {
            return Ok(Ok(()));
        }
        self.status.set_state("fetching-adapter");
        let deadline = Duration::from_millis(self.opts.client.adapter_fetch_timeout_ms);
        let mut attempt = 0;
        let payload = loop {
            attempt += 1;
            let buf = std::mem::take(&mut self.adapter_buf);
            let result = self
                .retrying_fetch(client, worker_id, version, deadline, buf)
                .await;
            match result {
                Ok(p) => break p,
                Err(FetchError::Rpc(s)) if s.code() == Code::NotFound && s.message().starts_with("worker_id") => {
                    return Err(SessionEnd::Reregister);
                }
                Err(FetchError::Rpc(s)) => return Ok(Err(format!("FetchAdapter: {:?}: {}", s.code(), s.message()))),
                Err(FetchError::Transfer(e)) if attempt < ADAPTER_ATTEMPTS => {
                    tracing::warn!(version = version.get(), attempt, error = %e, "adapter download failed verification; downloading again");
                }
                Err(FetchError::Transfer(e)) => return Ok(Err(format!("adapter download failed verification {attempt} times: {e}"))),
            }
        };
        if payload.version == self.loaded_version {
            self.adapter_buf = recycle_buffer(payload.bytes);
            return Ok(Ok(()));
        }
        let loaded = payload.version;
        let result = self
            .with_engine(move |engine| {
                let r = engine.load_adapter(loaded, &payload.bytes).map_err(WorkerError::Engine);
                Ok((r, payload.bytes))
            })
            .await;
        match result {
            Ok((Ok(()), bytes)) => {
                self.adapter_buf = recycle_buffer(bytes);
                self.loaded_version = loaded;
                self.status.lock().adapter_version = loaded.get();
                tracing::info!(version = loaded.get(), "adapter loaded");
                Ok(Ok(()))
            }
            Ok((Err(e), _)) | Err(e @ WorkerError::Engine(_)) => Ok(Err(format!("loading adapter version {}: {e}", loaded.get()))),
            Err(e) => Err(SessionEnd::Fatal(e)),
        }
    }

    /// A download, retried from the start while the failure is transient.
    async fn retrying_fetch(
        &self,
        client: &mut LearnerClient<AuthChannel>,
        worker_id: u64,
        version: AdapterVersion,
        deadline: Duration,
        mut buf: Vec<u8>,
    ) -> Result<asrl_common::transport::AdapterPayload, FetchError> {
        let mut backoff = asrl_common::transport::Backoff::from_config(&self.opts.client);
        loop {
            match fetch_adapter_into(client, worker_id, version, deadline, std::mem::take(&mut buf)).await {
                Err(FetchError::Rpc(s)) if crate::worker::retryable(&s) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(code = ?s.code(), message = s.message(), retry_in_ms = wait.as_millis() as u64, "adapter download interrupted; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// `ReturnPrompts`, retried while transient. A learner that rejects it outright has already
    /// re-queued (or will expire) the lease, so that is logged, not fatal.
    async fn give_back(
        &mut self,
        client: &mut LearnerClient<AuthChannel>,
        worker_id: u64,
        lease_id: u64,
        failed: Vec<Failed>,
    ) -> Result<(), SessionEnd> {
        self.status.set_state("returning");
        let n = failed.len() as u64;
        if let Some(last) = failed.last() {
            let reason = last.reason.as_str_name().trim_start_matches("RETURN_REASON_").to_lowercase();
            self.status.lock().last_failure = format!("prompt {}: {reason}: {}", last.prompt_id, last.message);
        }
        let req = pb::ReturnPromptsRequest {
            worker_id,
            lease_id,
            prompts: failed
                .into_iter()
                .map(|f| pb::PromptReturn { prompt_id: f.prompt_id, reason: f.reason as i32, message: f.message })
                .collect(),
        };
        let deadline = self.unary_deadline();
        let result = self
            .retrying("ReturnPrompts", || {
                let mut c = client.clone();
                let req = req.clone();
                async move { c.return_prompts(with_deadline(req, deadline)).await }
            })
            .await;
        self.status.lock().prompts_returned += n;
        match result {
            Ok(r) => {
                let r = r.into_inner();
                tracing::warn!(lease_id, requeued = r.requeued, abandoned = r.abandoned, ignored = r.ignored, "prompts given back");
                Ok(())
            }
            Err(s) => match super::worker::classify("ReturnPrompts", s) {
                Some(end) => Err(end),
                None => Ok(()),
            },
        }
    }

    /// `SubmitGroups`, the same request retried while transient: the learner counts each group
    /// once however often it arrives.
    async fn submit(
        &mut self,
        client: &mut LearnerClient<AuthChannel>,
        worker_id: u64,
        lease_id: u64,
        groups: Vec<pb::GroupResult>,
        seconds: f64,
        generated_tokens: u64,
    ) -> Result<(), SessionEnd> {
        self.status.set_state("submitting");
        let n_groups = groups.len() as u64;
        let req = pb::SubmitGroupsRequest {
            lease_id,
            worker_id,
            adapter_version: self.loaded_version.get(),
            groups,
            timings: Some(pb::Timings { generation_seconds: seconds, generated_tokens }),
        };
        let deadline = self.unary_deadline();
        let result = self
            .retrying("SubmitGroups", || {
                let mut c = client.clone();
                let req = req.clone();
                async move { c.submit_groups(with_deadline(req, deadline)).await }
            })
            .await;
        match result {
            Ok(r) => {
                let r = r.into_inner();
                tracing::info!(lease_id, accepted = r.accepted, duplicates = r.duplicates, stale = r.stale, "groups submitted");
                self.status.lock().groups_completed += n_groups;
                Ok(())
            }
            Err(s) => match super::worker::classify("SubmitGroups", s) {
                Some(end) => Err(end),
                None => Ok(()),
            },
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

/// A prompt and what became of its group.
type Scored = (PromptWork, Result<Vec<ScoredCompletion>, WorkerError>);

/// Checks a sampled group's shape and scores it.
fn score_group(
    reward: &dyn GroupScorer,
    prompt: &PromptWork,
    params: &SamplingParams,
    completions: Vec<Completion>,
) -> Result<Vec<ScoredCompletion>, WorkerError> {
    check_group(prompt, params, &completions)?;
    let rewards = reward.score_group(prompt, &completions)?;
    if rewards.len() != completions.len() {
        return Err(WorkerError::BadGroup {
            prompt_id: prompt.prompt_id.clone(),
            message: format!("{} reward scores for {} completions", rewards.len(), completions.len()),
        });
    }
    Ok(completions.into_iter().zip(rewards).map(|(completion, reward)| ScoredCompletion { completion, reward }).collect())
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
