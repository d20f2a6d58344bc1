//! The paper's correctness reward: 1.0 exact, 0.5 when the answer is contained, −0.5 otherwise.

use serde::Deserialize;

use super::answer::{final_answer, normalize_answer};
use super::{parse_params, RewardError, RewardFn, RewardInput};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectnessMode {
    /// Compare with the final answer after the thinking block (default).
    FinalAnswer,
    /// The paper's comparison against the whole response, thinking included.
    WholeResponse,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CorrectnessParams {
    mode: CorrectnessMode,
    exact: f64,
    contained: f64,
    wrong: f64,
}

impl Default for CorrectnessParams {
    fn default() -> Self {
        Self {
            mode: CorrectnessMode::FinalAnswer,
            exact: 1.0,
            contained: 0.5,
            wrong: -0.5,
        }
    }
}

/// `correctness`: params `mode` (`final_answer` default | `whole_response`), `exact` (1.0),
/// `contained` (0.5), `wrong` (−0.5). Both sides are normalised (trim, collapse whitespace,
/// lowercase, strip a trailing period); "contained" = the answer occurs inside the prediction.
#[derive(Debug, Clone)]
pub struct CorrectnessReward {
    pub mode: CorrectnessMode,
    pub exact: f64,
    pub contained: f64,
    pub wrong: f64,
}

impl CorrectnessReward {
    pub fn new(mode: CorrectnessMode) -> Self {
        let p = CorrectnessParams::default();
        Self {
            mode,
            exact: p.exact,
            contained: p.contained,
            wrong: p.wrong,
        }
    }

    pub fn from_params(
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, RewardError> {
        let p: CorrectnessParams = parse_params("correctness", params)?;
        Ok(Self {
            mode: p.mode,
            exact: p.exact,
            contained: p.contained,
            wrong: p.wrong,
        })
    }
}

impl RewardFn for CorrectnessReward {
    fn name(&self) -> &str {
        "correctness"
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<f64, RewardError> {
        let answer = normalize_answer(input.answer);
        if answer.is_empty() {
            return Err(RewardError::MissingAnswer {
                reward: self.name().to_string(),
            });
        }
        let predicted = match self.mode {
            CorrectnessMode::FinalAnswer => normalize_answer(final_answer(input.completion)),
            CorrectnessMode::WholeResponse => normalize_answer(input.completion),
        };
        Ok(if predicted == answer {
            self.exact
        } else if predicted.contains(&answer) {
            self.contained
        } else {
            self.wrong
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(mode: CorrectnessMode, completion: &str, answer: &str) -> f64 {
        CorrectnessReward::new(mode)
            .score(&RewardInput::new("q", completion, answer, "t"))
            .unwrap()
    }

    const THINK: &str = "<|thinking|>\n[LOGIC]47 + 38 = 85[/LOGIC]\n[INTUITION]near 90[/INTUITION]\n<|/thinking|>\n";

    #[test]
    fn exact_contained_wrong_on_final_answer() {
        let fa = CorrectnessMode::FinalAnswer;
        assert_eq!(score(fa, &format!("{THINK}85"), "85"), 1.0);
        assert_eq!(score(fa, &format!("{THINK}  85.  "), "85"), 1.0);
        assert_eq!(
            score(
                fa,
                &format!("{THINK}The Answer is\n85."),
                "the answer is 85"
            ),
            1.0
        );
        assert_eq!(score(fa, &format!("{THINK}The sum is 85."), "85"), 0.5);
        assert_eq!(score(fa, &format!("{THINK}84"), "85"), -0.5);
        // The thinking block mentions 85 but the final answer does not: no credit.
        assert_eq!(score(fa, &format!("{THINK}I am not sure"), "85"), -0.5);
        // Truncated inside the thinking block: no answer yet.
        assert_eq!(score(fa, "<|thinking|>\n[LOGIC]47 + 38 = 85", "85"), -0.5);
        // No thinking block: the whole response is the answer.
        assert_eq!(score(fa, "85", "85"), 1.0);
    }

    #[test]
    fn paper_whole_response_mode() {
        let wr = CorrectnessMode::WholeResponse;
        assert_eq!(score(wr, "Paris", "paris."), 1.0);
        assert_eq!(score(wr, &format!("{THINK}I am not sure"), "85"), 0.5);
        assert_eq!(score(wr, "London", "Paris"), -0.5);
    }

    #[test]
    fn empty_ground_truth_is_an_error() {
        let r = CorrectnessReward::new(CorrectnessMode::FinalAnswer);
        assert!(matches!(
            r.score(&RewardInput::new("q", "x", "  ", "t")),
            Err(RewardError::MissingAnswer { .. })
        ));
    }
}
