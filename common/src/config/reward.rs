use serde::{Deserialize, Serialize};

/// The reward: a weighted sum of named reward functions (see `asrl_common::reward`).
///
/// Default: the paper's `0.85 · correctness (final answer) + 0.15 · format (strict)`.
///
/// ```toml
/// [[reward.components]]
/// name = "correctness"
/// weight = 0.85
/// params = { mode = "final_answer" } # or "whole_response" (the paper's comparison)
///
/// [[reward.components]]
/// name = "format"
/// weight = 0.15
/// params = { mode = "strict" }     # or "lenient" (the paper's tag check)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    pub components: Vec<RewardComponentConfig>,
    /// Bound on the absolute value of every reward total and component a worker reports
    /// (plug-ins and external scorers included). Out-of-bound groups are given back by the
    /// worker and rejected by the learner (INVALID_ARGUMENT), so no finite but absurd score
    /// reaches the advantages. Default [`DEFAULT_MAX_ABS_REWARD`] (1000).
    pub max_abs: f64,
}

/// Default bound on |reward|: far above any weighted sum of the built-in rewards (each in
/// [-1, 1] or [0, 1]), far below where squares of rewards lose precision.
pub const DEFAULT_MAX_ABS_REWARD: f64 = 1000.0;

impl Default for RewardConfig {
    fn default() -> Self {
        let mode = |m: &str| {
            let mut p = serde_json::Map::new();
            p.insert("mode".into(), serde_json::Value::String(m.into()));
            p
        };
        Self {
            components: vec![
                RewardComponentConfig {
                    name: "correctness".into(),
                    label: None,
                    weight: 0.85,
                    types: Vec::new(),
                    params: mode("final_answer"),
                },
                RewardComponentConfig {
                    name: "format".into(),
                    label: None,
                    weight: 0.15,
                    types: Vec::new(),
                    params: mode("strict"),
                },
            ],
            max_abs: DEFAULT_MAX_ABS_REWARD,
        }
    }
}

/// One reward function in the sum. `name` is required; the other fields have defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardComponentConfig {
    /// Registered reward function: `format`, `correctness`, `numeric`, `regex`,
    /// `length_penalty`, or one registered by the embedding program.
    pub name: String,
    /// Key of this component in per-component metrics. Default: `name` (set it when the same
    /// function is used twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Multiplier of the component's score in the total. Default 1.0.
    #[serde(default = "one")]
    pub weight: f64,
    /// Example `type`s the component applies to; empty (default) = all. Elsewhere it scores 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Function-specific parameters, checked by the function (unknown keys are rejected).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

fn one() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let text = toml::to_string(&RewardConfig::default()).unwrap();
        assert_eq!(toml::from_str::<RewardConfig>(&text).unwrap(), RewardConfig::default());
        assert!(toml::from_str::<RewardConfig>("component = []").is_err());
    }
}
