//! Validation of `SubmitGroups` payloads into [`RolloutGroup`]s. Every check names the offending
//! field; nothing is applied unless the whole request is valid.

use std::collections::{BTreeMap, HashSet};

use asrl_common::config::SamplingParams;
use asrl_common::reward::Reward;
use asrl_common::rollout::{AdapterVersion, PromptWork, RolloutGroup, ScoredCompletion};
use asrl_common::sample::Completion;
use asrl_common::transport::convert::{finish_from_wire, WireError};
use asrl_proto::v1 as pb;

/// A log-prob slightly above 0 is rounding; anything larger is not a log-probability.
const LOGPROB_TOLERANCE: f32 = 1e-3;

/// The lease a submission answers, and what its completions must respect.
pub struct Submission<'a> {
    pub lease_id: u64,
    pub worker_id: u64,
    pub adapter_version: AdapterVersion,
    /// The lease's prompts: a group must answer one of them, at most once.
    pub prompts: &'a [&'a PromptWork],
    pub sampling: &'a SamplingParams,
    pub vocab_size: u32,
}

pub fn validate_groups(groups: Vec<pb::GroupResult>, lease: &Submission<'_>) -> Result<Vec<RolloutGroup>, WireError> {
    if groups.is_empty() {
        return Err(WireError::new("groups", "empty"));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(groups.len());
    for (i, g) in groups.into_iter().enumerate() {
        let gf = format!("groups[{i}]");
        let Some(prompt) = lease.prompts.iter().find(|p| p.prompt_id == g.prompt_id) else {
            return Err(WireError::new(
                format!("{gf}.prompt_id"),
                format!("{:?} is not a prompt of lease {}", g.prompt_id, lease.lease_id),
            ));
        };
        if !seen.insert(g.prompt_id.clone()) {
            return Err(WireError::new(format!("{gf}.prompt_id"), format!("{:?} appears twice in the request", g.prompt_id)));
        }
        if g.completions.len() != lease.sampling.n {
            return Err(WireError::new(
                format!("{gf}.completions"),
                format!("{} completions, the group size is {}", g.completions.len(), lease.sampling.n),
            ));
        }
        let completions = g
            .completions
            .into_iter()
            .enumerate()
            .map(|(j, c)| validate_completion(c, &format!("{gf}.completions[{j}]"), lease))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RolloutGroup {
            prompt_id: g.prompt_id,
            prompt_tokens: prompt.prompt_tokens.clone(),
            adapter_version: lease.adapter_version,
            worker_id: lease.worker_id,
            completions,
        });
    }
    Ok(out)
}

fn validate_completion(c: pb::CompletionResult, cf: &str, lease: &Submission<'_>) -> Result<ScoredCompletion, WireError> {
    let n = c.token_ids.len();
    if n == 0 {
        return Err(WireError::new(format!("{cf}.token_ids"), "empty"));
    }
    if n > lease.sampling.max_new_tokens {
        return Err(WireError::new(
            format!("{cf}.token_ids"),
            format!("{n} tokens exceed max_new_tokens {}", lease.sampling.max_new_tokens),
        ));
    }
    if c.logprobs.len() != n {
        return Err(WireError::new(format!("{cf}.logprobs"), format!("{} values for {n} token_ids", c.logprobs.len())));
    }
    if let Some((k, t)) = c.token_ids.iter().enumerate().find(|(_, t)| **t >= lease.vocab_size) {
        return Err(WireError::new(format!("{cf}.token_ids[{k}]"), format!("{t} ≥ vocab size {}", lease.vocab_size)));
    }
    if let Some((k, lp)) = c.logprobs.iter().enumerate().find(|(_, lp)| !(lp.is_finite() && **lp <= LOGPROB_TOLERANCE)) {
        return Err(WireError::new(format!("{cf}.logprobs[{k}]"), format!("{lp} is not a finite log-probability ≤ 0")));
    }
    let finish = finish_from_wire(c.finish_reason, &format!("{cf}.finish_reason"))?;
    if !c.total_reward.is_finite() {
        return Err(WireError::new(format!("{cf}.total_reward"), format!("{} is not finite", c.total_reward)));
    }
    let mut components = BTreeMap::new();
    for (k, r) in c.rewards.into_iter().enumerate() {
        if r.name.is_empty() {
            return Err(WireError::new(format!("{cf}.rewards[{k}].name"), "empty"));
        }
        if !r.score.is_finite() {
            return Err(WireError::new(format!("{cf}.rewards[{k}].score"), format!("{} is not finite", r.score)));
        }
        components.insert(r.name, r.score);
    }
    Ok(ScoredCompletion {
        // The wire carries token ids only; the learner decodes what it needs itself.
        completion: Completion { tokens: c.token_ids, logprobs: c.logprobs, text: String::new(), finish },
        reward: Reward { total: c.total_reward, components },
    })
}

pub fn validate_timings(t: Option<&pb::Timings>) -> Result<(), WireError> {
    if let Some(t) = t {
        if !(t.generation_seconds.is_finite() && t.generation_seconds >= 0.0) {
            return Err(WireError::new("timings.generation_seconds", format!("{} is not a finite value ≥ 0", t.generation_seconds)));
        }
    }
    Ok(())
}
