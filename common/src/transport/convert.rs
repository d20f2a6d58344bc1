//! Conversions between the wire types (`asrl_proto::v1`) and the plain-Rust rollout types.
//! Wire → Rust conversions fail with the name of the offending field.

use std::sync::Arc;

use asrl_proto::v1 as pb;

use crate::config::SamplingParams;
use crate::rollout::{ExampleKind, PromptWork, ScoredCompletion};
use crate::sample::FinishReason;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("field {field}: {message}")]
pub struct WireError {
    pub field: String,
    pub message: String,
}

impl WireError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

pub fn example_kind_to_wire(kind: ExampleKind) -> pb::ExampleKind {
    match kind {
        ExampleKind::Verifiable => pb::ExampleKind::Verifiable,
        ExampleKind::Open => pb::ExampleKind::Open,
    }
}

pub fn example_kind_from_wire(value: i32, field: &str) -> Result<ExampleKind, WireError> {
    match pb::ExampleKind::try_from(value) {
        Ok(pb::ExampleKind::Verifiable) => Ok(ExampleKind::Verifiable),
        Ok(pb::ExampleKind::Open) => Ok(ExampleKind::Open),
        _ => Err(WireError::new(field, format!("example kind {value} is not VERIFIABLE (1) or OPEN (2)"))),
    }
}

pub fn finish_to_wire(finish: FinishReason) -> pb::FinishReason {
    match finish {
        FinishReason::Eos => pb::FinishReason::Eos,
        FinishReason::Length => pb::FinishReason::Length,
    }
}

pub fn finish_from_wire(value: i32, field: &str) -> Result<FinishReason, WireError> {
    match pb::FinishReason::try_from(value) {
        Ok(pb::FinishReason::Eos) => Ok(FinishReason::Eos),
        Ok(pb::FinishReason::Length) => Ok(FinishReason::Length),
        _ => Err(WireError::new(field, format!("finish reason {value} is not EOS (1) or LENGTH (2)"))),
    }
}

pub fn prompt_to_wire(p: &PromptWork) -> pb::PromptItem {
    pb::PromptItem {
        prompt_id: p.prompt_id.clone(),
        prompt_token_ids: p.prompt_tokens.to_vec(),
        prompt_text: p.prompt_text.clone(),
        ground_truth: p.ground_truth.clone(),
        kind: example_kind_to_wire(p.kind) as i32,
        example_type: p.example_type.clone(),
    }
}

pub fn prompt_from_wire(p: pb::PromptItem, field: &str) -> Result<PromptWork, WireError> {
    if p.prompt_id.is_empty() {
        return Err(WireError::new(format!("{field}.prompt_id"), "empty"));
    }
    if p.prompt_token_ids.is_empty() {
        return Err(WireError::new(format!("{field}.prompt_token_ids"), "empty"));
    }
    Ok(PromptWork {
        kind: example_kind_from_wire(p.kind, &format!("{field}.kind"))?,
        prompt_id: p.prompt_id,
        prompt_tokens: Arc::from(p.prompt_token_ids),
        prompt_text: p.prompt_text,
        ground_truth: p.ground_truth,
        example_type: p.example_type,
    })
}

pub fn sampling_to_wire(s: &SamplingParams) -> pb::SamplingParams {
    pb::SamplingParams {
        group_size: s.n as u32,
        temperature: s.temperature,
        top_p: s.top_p,
        max_new_tokens: s.max_new_tokens as u32,
        seed: s.seed,
    }
}

pub fn sampling_from_wire(s: Option<pb::SamplingParams>, field: &str) -> Result<SamplingParams, WireError> {
    let s = s.ok_or_else(|| WireError::new(field, "missing"))?;
    let params = SamplingParams {
        n: s.group_size as usize,
        temperature: s.temperature,
        top_p: s.top_p,
        max_new_tokens: s.max_new_tokens as usize,
        seed: s.seed,
    };
    params
        .validate_for_rollout()
        .map_err(|e| WireError::new(format!("{field}.{}", e.field.wire_name()), e.message))?;
    Ok(params)
}

pub fn completion_to_wire(c: &ScoredCompletion) -> pb::CompletionResult {
    let (completion, reward) = (&c.completion, &c.reward);
    pb::CompletionResult {
        token_ids: completion.tokens.clone(),
        logprobs: completion.logprobs.clone(),
        finish_reason: finish_to_wire(completion.finish) as i32,
        rewards: reward.components.iter().map(|(name, score)| pb::RewardComponent { name: name.clone(), score: *score }).collect(),
        total_reward: reward.total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_and_sampling_round_trip() {
        let p = PromptWork {
            prompt_id: "p1".into(),
            prompt_tokens: Arc::from(vec![1u32, 2, 3]),
            prompt_text: "hi".into(),
            ground_truth: "42".into(),
            kind: ExampleKind::Verifiable,
            example_type: String::new(),
        };
        assert_eq!(prompt_from_wire(prompt_to_wire(&p), "prompts[0]").unwrap(), p);
        let s = SamplingParams::default();
        assert_eq!(sampling_from_wire(Some(sampling_to_wire(&s)), "sampling").unwrap(), s);
    }

    #[test]
    fn rejections_name_the_field() {
        let mut w = prompt_to_wire(&PromptWork {
            prompt_id: "p".into(),
            prompt_tokens: Arc::from(vec![1u32]),
            prompt_text: String::new(),
            ground_truth: String::new(),
            kind: ExampleKind::Open,
            example_type: String::new(),
        });
        w.kind = 0;
        assert_eq!(prompt_from_wire(w, "prompts[3]").unwrap_err().field, "prompts[3].kind");
        let mut s = sampling_to_wire(&SamplingParams::default());
        s.top_p = 0.0;
        assert_eq!(sampling_from_wire(Some(s), "sampling").unwrap_err().field, "sampling.top_p");
        let mut s = sampling_to_wire(&SamplingParams::default());
        s.group_size = 0;
        assert_eq!(sampling_from_wire(Some(s), "lease.sampling").unwrap_err().field, "lease.sampling.group_size");
        assert_eq!(finish_from_wire(0, "f").unwrap_err().field, "f");
    }
}
