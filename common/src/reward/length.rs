//! `length_penalty`: a penalty growing with the tokens beyond a target length.

use serde::Deserialize;

use super::{parse_params, RewardError, RewardFn, RewardInput};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LengthParams {
    /// Completions up to this many tokens are not penalised. Default 256.
    target_tokens: usize,
    /// Penalty per token beyond the target. Default 0.002.
    penalty_per_token: f64,
    /// The penalty never exceeds this. Default 1.0.
    max_penalty: f64,
}

impl Default for LengthParams {
    fn default() -> Self {
        Self {
            target_tokens: 256,
            penalty_per_token: 0.002,
            max_penalty: 1.0,
        }
    }
}

/// `length_penalty`: scores `−min(max_penalty, penalty_per_token · max(0, tokens − target))`.
/// Params `target_tokens` (256), `penalty_per_token` (0.002), `max_penalty` (1.0).
/// Tokens: `RewardInput::completion_tokens` when the caller knows them (workers do),
/// otherwise whitespace-separated words.
#[derive(Debug, Clone)]
pub struct LengthPenalty {
    target_tokens: usize,
    penalty_per_token: f64,
    max_penalty: f64,
}

impl LengthPenalty {
    pub fn from_params(
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, RewardError> {
        let p: LengthParams = parse_params("length_penalty", params)?;
        Ok(Self {
            target_tokens: p.target_tokens,
            penalty_per_token: p.penalty_per_token,
            max_penalty: p.max_penalty,
        })
    }
}

impl RewardFn for LengthPenalty {
    fn name(&self) -> &str {
        "length_penalty"
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<f64, RewardError> {
        let tokens = input
            .completion_tokens
            .unwrap_or_else(|| input.completion.split_whitespace().count());
        let over = tokens.saturating_sub(self.target_tokens) as f64;
        Ok(-(self.penalty_per_token * over).min(self.max_penalty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalises_tokens_beyond_target() {
        let p =
            serde_json::json!({"target_tokens": 10, "penalty_per_token": 0.1, "max_penalty": 0.5});
        let r = LengthPenalty::from_params(p.as_object().unwrap()).unwrap();
        let with = |n: usize| {
            r.score(&RewardInput::new("", "", "", "t").with_completion_tokens(n))
                .unwrap()
        };
        assert_eq!(with(10), 0.0);
        assert!((with(13) + 0.3).abs() < 1e-12);
        assert_eq!(with(1000), -0.5);
        // Word count fallback: 12 words, 2 over.
        let words = "w ".repeat(12);
        assert!((r.score(&RewardInput::new("", &words, "", "t")).unwrap() + 0.2).abs() < 1e-12);
    }
}
