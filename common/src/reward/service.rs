//! A reward component computed by an external `asrl.v1.RewardService` (`name = "service"`).
//!
//! ```toml
//! [[reward.components]]
//! name = "service"
//! weight = 1.0
//! params = { url = "http://127.0.0.1:50061", timeout_ms = 10000, retries = 2, auth_token_env = "ASRL_REWARD_TOKEN" }
//! ```
//!
//! One `Score` call per group (all of a prompt's completions), each attempt with its own
//! deadline; UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED and broken connections
//! are retried with a doubling backoff. A service that stays down, answers too late or answers
//! malformed scores fails that group's reward with a [`RewardError::External`] naming the URL
//! and what went wrong; the caller decides what a failed prompt means (the scorer itself stays
//! usable: the next call tries again).
//!
//! The client runs on a small runtime of its own, so [`RewardFn::score_group`] can be called
//! from any thread (the worker calls it from its blocking sampling thread).

use std::sync::mpsc;
use std::time::Duration;

use asrl_proto::v1 as pb;
use asrl_proto::v1::reward_service_client::RewardServiceClient;
use serde::Deserialize;
use tonic::{Code, Status};

use super::{parse_params, Reward, RewardError, RewardFn, RewardInput};
use crate::config::GrpcClientConfig;
use crate::transport::client::endpoint;
use crate::transport::{is_transient, AuthChannel, AuthInterceptor};

const NAME: &str = "service";

/// `params` of a `service` component.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceParams {
    /// `http://host:port` (`https://` with the `tls` cargo feature). Required.
    pub url: String,
    /// Deadline of one attempt, in ms. Default 10 000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Further attempts after a retryable failure. Default 2.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, in ms; doubles per retry. Default 200.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// TCP connect timeout, in ms. Default 2 000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Sent as `authorization: Bearer <token>`. Prefer `auth_token_env`.
    #[serde(default)]
    pub auth_token: Option<String>,
    /// Environment variable holding the token, read when the worker starts (keeps the secret
    /// out of the config file).
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// Largest request or response, in MiB. Default 16.
    #[serde(default = "default_max_message_mib")]
    pub max_message_mib: usize,
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    200
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_max_message_mib() -> usize {
    16
}

impl ServiceParams {
    /// The token: `auth_token`, else the variable `auth_token_env` names (which must be set).
    fn token(&self) -> Result<Option<String>, RewardError> {
        match (&self.auth_token, &self.auth_token_env) {
            (Some(_), Some(_)) => Err(invalid("give `auth_token` or `auth_token_env`, not both")),
            (Some(t), None) => Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty())),
            (None, Some(var)) => match std::env::var(var) {
                Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
                _ => Err(invalid(&format!("auth_token_env: the environment variable {var} is not set"))),
            },
            (None, None) => Ok(None),
        }
    }
}

fn invalid(message: &str) -> RewardError {
    RewardError::InvalidParams { reward: NAME.into(), message: message.into() }
}

/// A client of one reward service.
pub struct ServiceReward {
    params: ServiceParams,
    client: RewardServiceClient<AuthChannel>,
    /// `Some` until dropped; shut down in the background so dropping never blocks.
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServiceReward {
    pub fn from_params(params: &serde_json::Map<String, serde_json::Value>) -> Result<Self, RewardError> {
        Self::new(parse_params(NAME, params)?)
    }

    /// Checks the params and prepares the channel; connects on the first call, so a service
    /// that starts later (or restarts) is picked up.
    pub fn new(params: ServiceParams) -> Result<Self, RewardError> {
        if params.timeout_ms == 0 {
            return Err(invalid("timeout_ms must be at least 1"));
        }
        if params.max_message_mib == 0 {
            return Err(invalid("max_message_mib must be at least 1"));
        }
        let token = params.token()?;
        let cfg = GrpcClientConfig {
            url: params.url.clone(),
            connect_timeout_ms: params.connect_timeout_ms,
            request_timeout_ms: params.timeout_ms,
            ..Default::default()
        };
        let endpoint = endpoint(&cfg).map_err(|e| invalid(&format!("url {:?}: {e}", params.url)))?;
        let auth = AuthInterceptor::new(token.as_deref()).map_err(|e| invalid(&e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("asrl-reward-service")
            .enable_all()
            .build()
            .map_err(|e| RewardError::External { reward: NAME.into(), message: format!("cannot start its runtime: {e}") })?;
        // The lazy channel spawns its connection task on the runtime it is created in.
        let channel = {
            let _entered = runtime.enter();
            endpoint.connect_lazy()
        };
        let max = params.max_message_mib << 20;
        let client = RewardServiceClient::with_interceptor(channel, auth)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        Ok(Self { params, client, runtime: Some(runtime) })
    }

    fn failure(&self, message: String) -> RewardError {
        RewardError::External { reward: NAME.into(), message: format!("{}: {message}", self.params.url) }
    }

    /// Sends the request with retries on the client's runtime and waits for the outcome.
    fn call(&self, request: pb::ScoreRequest) -> Result<pb::ScoreResponse, RewardError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let client = self.client.clone();
        let params = self.params.clone();
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            let _ = tx.send(call_with_retries(client, &params, request).await);
        });
        // A plain channel: waiting on it is fine on any thread, inside another runtime or not.
        match rx.recv() {
            Ok(result) => result.map_err(|message| self.failure(message)),
            Err(_) => Err(self.failure("the call was dropped before it finished".into())),
        }
    }
}

impl Drop for ServiceReward {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn call_with_retries(
    mut client: RewardServiceClient<AuthChannel>,
    params: &ServiceParams,
    request: pb::ScoreRequest,
) -> Result<pb::ScoreResponse, String> {
    let timeout = Duration::from_millis(params.timeout_ms);
    let attempts = params.retries.saturating_add(1);
    let mut backoff = Duration::from_millis(params.backoff_ms);
    let mut attempt = 1;
    loop {
        let mut r = tonic::Request::new(request.clone());
        r.set_timeout(timeout);
        // The client-side timer bounds the wait even when the server ignores `grpc-timeout`.
        let status = match tokio::time::timeout(timeout, client.score(r)).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            // tonic reports its own timers (the channel's, the server's `grpc-timeout`) as
            // CANCELLED "Timeout expired".
            Ok(Err(status)) if status.code() == Code::Cancelled && status.message().contains("Timeout expired") => {
                Status::deadline_exceeded(status.message().to_string())
            }
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded("no answer"),
        };
        let retryable = is_retryable(&status);
        if !retryable || attempt >= attempts {
            let tries = if attempt == 1 { "1 attempt".to_string() } else { format!("{attempt} attempts") };
            let what = match status.code() {
                Code::DeadlineExceeded => format!("no answer within the {} ms deadline", params.timeout_ms),
                Code::Unavailable => "unreachable".to_string(),
                Code::Unauthenticated | Code::PermissionDenied => {
                    "refused the credentials (check `auth_token` / `auth_token_env`)".to_string()
                }
                _ => "failed".to_string(),
            };
            return Err(format!("{what} ({tries}): {:?}: {}", status.code(), status.message()));
        }
        tracing::warn!(url = %params.url, attempt, code = ?status.code(), message = status.message(), retry_in_ms = backoff.as_millis() as u64, "reward service call failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
        attempt += 1;
    }
}

/// Failures a later attempt may not see: the service restarting, overloaded or slow.
fn is_retryable(status: &Status) -> bool {
    matches!(status.code(), Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted) || is_transient(status)
}

/// The request for one group: all inputs come from the same prompt.
fn request(inputs: &[RewardInput<'_>]) -> pb::ScoreRequest {
    let first = inputs[0];
    let kind = if first.answer.trim().is_empty() { pb::ExampleKind::Open } else { pb::ExampleKind::Verifiable };
    pb::ScoreRequest {
        prompt_id: first.prompt_id.to_string(),
        prompt_text: first.prompt.to_string(),
        ground_truth: first.answer.to_string(),
        kind: kind as i32,
        completions: inputs.iter().map(|i| i.completion.to_string()).collect(),
        example_type: first.example_type.to_string(),
    }
}

impl RewardFn for ServiceReward {
    fn name(&self) -> &str {
        NAME
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<f64, RewardError> {
        Ok(self.score_group(std::slice::from_ref(input))?[0].total)
    }

    fn score_group(&self, inputs: &[RewardInput<'_>]) -> Result<Vec<Reward>, RewardError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        // One call per prompt: split a batch that mixes prompts (never the case for a group).
        let same_prompt = |a: &RewardInput<'_>, b: &RewardInput<'_>| {
            a.prompt == b.prompt && a.answer == b.answer && a.example_type == b.example_type && a.prompt_id == b.prompt_id
        };
        let mut out = Vec::with_capacity(inputs.len());
        for run in inputs.chunk_by(same_prompt) {
            out.extend(self.score_one_prompt(run)?);
        }
        Ok(out)
    }
}

impl ServiceReward {
    fn score_one_prompt(&self, inputs: &[RewardInput<'_>]) -> Result<Vec<Reward>, RewardError> {
        let response = self.call(request(inputs))?;
        if response.scores.len() != inputs.len() {
            return Err(self.failure(format!("answered {} scores for {} completions", response.scores.len(), inputs.len())));
        }
        response
            .scores
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if !s.total.is_finite() {
                    return Err(self.failure(format!("scores[{i}].total is {}", s.total)));
                }
                let mut components = std::collections::BTreeMap::new();
                for (k, c) in s.components.into_iter().enumerate() {
                    if c.name.is_empty() || !c.score.is_finite() {
                        return Err(self.failure(format!("scores[{i}].components[{k}] {:?} = {}: needs a name and a finite score", c.name, c.score)));
                    }
                    components.insert(c.name, c.score);
                }
                Ok(Reward { total: s.total, components })
            })
            .collect()
    }
}
