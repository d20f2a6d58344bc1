//! Validation of `SubmitGroups` payloads into [`RolloutGroup`]s. Every check names the offending
//! field; nothing is applied unless the whole request is valid.

use std::collections::{BTreeMap, HashSet};

use asrl_common::config::SamplingParams;
use asrl_common::reward::Reward;
use asrl_common::rollout::{AdapterVersion, PromptWork, RolloutGroup, ScoredCompletion};
use asrl_common::sample::Completion;
use asrl_common::transport::convert::{finish_from_wire, WireError};
use asrl_proto::v1 as pb;

use super::limits::{MAX_REWARD_COMPONENTS, MAX_REWARD_NAME_BYTES};

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
    /// Bound on |reward| of totals and components (`reward.max_abs`).
    pub max_abs_reward: f64,
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
    check_reward(c.total_reward, &format!("{cf}.total_reward"), lease.max_abs_reward)?;
    if c.rewards.len() > MAX_REWARD_COMPONENTS {
        return Err(WireError::new(
            format!("{cf}.rewards"),
            format!("{} components exceed the limit of {MAX_REWARD_COMPONENTS}", c.rewards.len()),
        ));
    }
    let mut components = BTreeMap::new();
    for (k, r) in c.rewards.into_iter().enumerate() {
        if r.name.is_empty() || r.name.len() > MAX_REWARD_NAME_BYTES {
            return Err(WireError::new(
                format!("{cf}.rewards[{k}].name"),
                format!("must be 1 to {MAX_REWARD_NAME_BYTES} bytes, got {}", r.name.len()),
            ));
        }
        check_reward(r.score, &format!("{cf}.rewards[{k}].score"), lease.max_abs_reward)?;
        components.insert(r.name, r.score);
    }
    Ok(ScoredCompletion {
        // The wire carries token ids only; the learner decodes what it needs itself.
        completion: Completion { tokens: c.token_ids, logprobs: c.logprobs, text: String::new(), finish },
        reward: Reward { total: c.total_reward, components },
    })
}

/// A reward must be finite and within ±`bound`: a finite but absurd score (say 1e308) would
/// otherwise overflow the advantages' sums.
pub fn check_reward(value: f64, field: &str, bound: f64) -> Result<(), WireError> {
    if !value.is_finite() {
        return Err(WireError::new(field, format!("{value} is not finite")));
    }
    if value.abs() > bound {
        return Err(WireError::new(field, format!("{value:e} is outside the reward bound ±{bound} (reward.max_abs)")));
    }
    Ok(())
}

pub fn validate_timings(t: Option<&pb::Timings>) -> Result<(), WireError> {
    if let Some(t) = t {
        if !(t.generation_seconds.is_finite() && t.generation_seconds >= 0.0) {
            return Err(WireError::new("timings.generation_seconds", format!("{} is not a finite value ≥ 0", t.generation_seconds)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_must_be_finite_and_within_the_bound() {
        assert!(check_reward(999.0, "r", 1000.0).is_ok());
        assert!(check_reward(-1000.0, "r", 1000.0).is_ok());
        for bad in [1e308, -1e308, 1000.5, f64::NAN, f64::INFINITY] {
            let e = check_reward(bad, "groups[0].completions[1].total_reward", 1000.0).unwrap_err().to_string();
            assert!(e.contains("groups[0].completions[1].total_reward"), "{e}");
        }
        let e = check_reward(1e308, "x", 1000.0).unwrap_err().to_string();
        assert!(e.contains("1e308") && e.contains("reward.max_abs"), "{e}");
    }
}
