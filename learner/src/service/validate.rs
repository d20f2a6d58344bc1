//! Validation of `SubmitGroups` payloads. Every check names the offending field; nothing is
//! applied unless the whole request is valid.

use std::collections::HashSet;

use asrl_common::config::SamplingParams;
use asrl_common::rollout::FinishReason;
use asrl_common::transport::convert::{finish_from_wire, WireError};
use asrl_proto::v1 as pb;

/// A log-prob slightly above 0 is rounding; anything larger is not a log-probability.
const LOGPROB_TOLERANCE: f32 = 1e-3;

#[derive(Debug, Clone, PartialEq)]
pub struct ValidCompletion {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
    pub reward: f64,
    pub reward_components: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidGroup {
    pub prompt_id: String,
    pub completions: Vec<ValidCompletion>,
}

pub struct Limits<'a> {
    pub lease_id: u64,
    pub lease_prompts: &'a [String],
    pub sampling: &'a SamplingParams,
    pub vocab_size: u32,
}

pub fn validate_groups(groups: Vec<pb::GroupResult>, limits: &Limits<'_>) -> Result<Vec<ValidGroup>, WireError> {
    if groups.is_empty() {
        return Err(WireError::new("groups", "empty"));
    }
    let allowed: HashSet<&str> = limits.lease_prompts.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(groups.len());
    for (i, g) in groups.into_iter().enumerate() {
        let gf = format!("groups[{i}]");
        if !allowed.contains(g.prompt_id.as_str()) {
            return Err(WireError::new(
                format!("{gf}.prompt_id"),
                format!("{:?} is not a prompt of lease {}", g.prompt_id, limits.lease_id),
            ));
        }
        if !seen.insert(g.prompt_id.clone()) {
            return Err(WireError::new(format!("{gf}.prompt_id"), format!("{:?} appears twice in the request", g.prompt_id)));
        }
        if g.completions.len() != limits.sampling.n {
            return Err(WireError::new(
                format!("{gf}.completions"),
                format!("{} completions, the group size is {}", g.completions.len(), limits.sampling.n),
            ));
        }
        let completions = g
            .completions
            .into_iter()
            .enumerate()
            .map(|(j, c)| validate_completion(c, &format!("{gf}.completions[{j}]"), limits))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(ValidGroup { prompt_id: g.prompt_id, completions });
    }
    Ok(out)
}

fn validate_completion(c: pb::CompletionResult, cf: &str, limits: &Limits<'_>) -> Result<ValidCompletion, WireError> {
    let n = c.token_ids.len();
    if n == 0 {
        return Err(WireError::new(format!("{cf}.token_ids"), "empty"));
    }
    if n > limits.sampling.max_new_tokens {
        return Err(WireError::new(
            format!("{cf}.token_ids"),
            format!("{n} tokens exceed max_new_tokens {}", limits.sampling.max_new_tokens),
        ));
    }
    if c.logprobs.len() != n {
        return Err(WireError::new(format!("{cf}.logprobs"), format!("{} values for {n} token_ids", c.logprobs.len())));
    }
    if let Some((k, t)) = c.token_ids.iter().enumerate().find(|(_, t)| **t >= limits.vocab_size) {
        return Err(WireError::new(format!("{cf}.token_ids[{k}]"), format!("{t} ≥ vocab size {}", limits.vocab_size)));
    }
    if let Some((k, lp)) = c.logprobs.iter().enumerate().find(|(_, lp)| !(lp.is_finite() && **lp <= LOGPROB_TOLERANCE)) {
        return Err(WireError::new(format!("{cf}.logprobs[{k}]"), format!("{lp} is not a finite log-probability ≤ 0")));
    }
    let finish = finish_from_wire(c.finish_reason, &format!("{cf}.finish_reason"))?;
    if !c.total_reward.is_finite() {
        return Err(WireError::new(format!("{cf}.total_reward"), format!("{} is not finite", c.total_reward)));
    }
    let mut reward_components = Vec::with_capacity(c.rewards.len());
    for (k, r) in c.rewards.into_iter().enumerate() {
        if r.name.is_empty() {
            return Err(WireError::new(format!("{cf}.rewards[{k}].name"), "empty"));
        }
        if !r.score.is_finite() {
            return Err(WireError::new(format!("{cf}.rewards[{k}].score"), format!("{} is not finite", r.score)));
        }
        reward_components.push((r.name, r.score));
    }
    Ok(ValidCompletion { tokens: c.token_ids, logprobs: c.logprobs, finish, reward: c.total_reward, reward_components })
}

pub fn validate_timings(t: Option<&pb::Timings>) -> Result<(), WireError> {
    if let Some(t) = t {
        if !(t.generation_seconds.is_finite() && t.generation_seconds >= 0.0) {
            return Err(WireError::new("timings.generation_seconds", format!("{} is not a finite value ≥ 0", t.generation_seconds)));
        }
    }
    Ok(())
}
