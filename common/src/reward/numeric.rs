//! `numeric`: the last number in the final answer equals the ground truth's within a tolerance.

use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

use super::answer::final_answer;
use super::{parse_params, RewardError, RewardFn, RewardInput};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NumericParams {
    /// Absolute tolerance. Default 1e-6.
    tolerance: f64,
    /// Relative tolerance (fraction of |truth|). Default 0.
    relative_tolerance: f64,
    correct: f64,
    wrong: f64,
    /// Score when the final answer holds no number. Default −1.
    no_number: f64,
}

impl Default for NumericParams {
    fn default() -> Self {
        Self {
            tolerance: 1e-6,
            relative_tolerance: 0.0,
            correct: 1.0,
            wrong: -0.5,
            no_number: -1.0,
        }
    }
}

/// `numeric`: params `tolerance` (1e-6), `relative_tolerance` (0), `correct` (1.0),
/// `wrong` (−0.5), `no_number` (−1.0). The ground truth must contain a number (an error
/// otherwise: restrict the component with `types` on mixed datasets).
#[derive(Debug, Clone)]
pub struct NumericReward {
    tolerance: f64,
    relative_tolerance: f64,
    correct: f64,
    wrong: f64,
    no_number: f64,
}

impl NumericReward {
    pub fn from_params(
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, RewardError> {
        let p: NumericParams = parse_params("numeric", params)?;
        Ok(Self {
            tolerance: p.tolerance,
            relative_tolerance: p.relative_tolerance,
            correct: p.correct,
            wrong: p.wrong,
            no_number: p.no_number,
        })
    }
}

/// The last number in `text`: optional sign, `1,234` thousands groups, decimals.
pub fn last_number(text: &str) -> Option<f64> {
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    let re = NUMBER.get_or_init(|| {
        Regex::new(r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?").expect("constant regex is valid")
    });
    let m = re.find_iter(text).last()?;
    m.as_str().replace(',', "").replace('−', "-").parse().ok()
}

impl RewardFn for NumericReward {
    fn name(&self) -> &str {
        "numeric"
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<f64, RewardError> {
        let truth = last_number(input.answer).ok_or_else(|| RewardError::NonNumericAnswer {
            reward: self.name().to_string(),
            answer: input.answer.to_string(),
        })?;
        let Some(predicted) = last_number(final_answer(input.completion)) else {
            return Ok(self.no_number);
        };
        let tol = self.tolerance + self.relative_tolerance * truth.abs();
        Ok(if (predicted - truth).abs() <= tol {
            self.correct
        } else {
            self.wrong
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_last_number() {
        assert_eq!(last_number("about 1,234.5 m"), Some(1234.5));
        assert_eq!(last_number("from 3 to -7"), Some(-7.0));
        assert_eq!(last_number("3500 m"), Some(3500.0));
        assert_eq!(last_number("none"), None);
    }

    #[test]
    fn tolerance_and_missing_numbers() {
        let mut p = serde_json::Map::new();
        p.insert("tolerance".into(), 0.01.into());
        let r = NumericReward::from_params(&p).unwrap();
        let s = |c: &str, a: &str| r.score(&RewardInput::new("q", c, a, "t"));
        assert_eq!(
            s("<|thinking|>x<|/thinking|>3.505 km", "3.5 km").unwrap(),
            1.0
        );
        assert_eq!(s("3.52", "3.5").unwrap(), -0.5);
        assert_eq!(s("I don't know", "3.5").unwrap(), -1.0);
        assert!(matches!(
            s("3", "Wednesday"),
            Err(RewardError::NonNumericAnswer { .. })
        ));
    }
}
