//! `regex`: a pattern match on the completion or its final answer.

use regex::Regex;
use serde::Deserialize;

use super::answer::final_answer;
use super::{parse_params, RewardError, RewardFn, RewardInput};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchTarget {
    Completion,
    FinalAnswer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegexParams {
    /// Required. Rust `regex` syntax.
    pattern: String,
    #[serde(default = "default_target")]
    target: MatchTarget,
    #[serde(default = "plus_one")]
    match_score: f64,
    #[serde(default = "minus_one")]
    no_match_score: f64,
}

fn default_target() -> MatchTarget {
    MatchTarget::Completion
}
fn plus_one() -> f64 {
    1.0
}
fn minus_one() -> f64 {
    -1.0
}

/// `regex`: params `pattern` (required), `target` (`completion` default | `final_answer`),
/// `match_score` (+1), `no_match_score` (−1).
#[derive(Debug, Clone)]
pub struct RegexReward {
    pattern: Regex,
    target: MatchTarget,
    match_score: f64,
    no_match_score: f64,
}

impl RegexReward {
    pub fn from_params(
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, RewardError> {
        let p: RegexParams = parse_params("regex", params)?;
        let pattern = Regex::new(&p.pattern).map_err(|e| RewardError::InvalidParams {
            reward: "regex".to_string(),
            message: format!("pattern {:?}: {e}", p.pattern),
        })?;
        Ok(Self {
            pattern,
            target: p.target,
            match_score: p.match_score,
            no_match_score: p.no_match_score,
        })
    }
}

impl RewardFn for RegexReward {
    fn name(&self) -> &str {
        "regex"
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<f64, RewardError> {
        let text = match self.target {
            MatchTarget::Completion => input.completion,
            MatchTarget::FinalAnswer => final_answer(input.completion),
        };
        Ok(if self.pattern.is_match(text) {
            self.match_score
        } else {
            self.no_match_score
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn matches_target() {
        let r = RegexReward::from_params(&params(serde_json::json!({
            "pattern": r"^\d+$", "target": "final_answer", "match_score": 0.5
        })))
        .unwrap();
        let s = |c: &str| r.score(&RewardInput::new("q", c, "", "t")).unwrap();
        assert_eq!(s("<|thinking|>x 12 y<|/thinking|>\n42"), 0.5);
        assert_eq!(s("<|thinking|>x<|/thinking|>\nforty-two"), -1.0);
    }

    #[test]
    fn bad_pattern_and_missing_pattern_are_errors() {
        let e =
            RegexReward::from_params(&params(serde_json::json!({"pattern": "(("}))).unwrap_err();
        assert!(e.to_string().contains("(("), "{e}");
        let e = RegexReward::from_params(&params(serde_json::json!({}))).unwrap_err();
        assert!(e.to_string().contains("pattern"), "{e}");
    }
}
