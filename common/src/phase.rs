//! The two alternating phases of an ASRL epoch: the one name training, schedules, configs and
//! `metrics.jsonl` use for them.

use serde::{Deserialize, Serialize};

/// An ASRL training phase. Serialised as `"sft"` / `"grpo"` (TOML, `metrics.jsonl`,
/// `trainer.jsonl`, `trainer_state.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Supervised fine-tuning on the dataset's responses.
    Sft,
    /// GRPO on groups sampled by the rollout workers.
    Grpo,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Sft => "sft",
            Phase::Grpo => "grpo",
        }
    }

    /// The other phase (ARES switches stage with it).
    pub fn other(self) -> Self {
        match self {
            Phase::Sft => Phase::Grpo,
            Phase::Grpo => Phase::Sft,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_lowercase_like_the_files_expect() {
        assert_eq!(serde_json::to_string(&Phase::Grpo).unwrap(), "\"grpo\"");
        assert_eq!(serde_json::from_str::<Phase>("\"sft\"").unwrap(), Phase::Sft);
        assert_eq!(Phase::Sft.other(), Phase::Grpo);
        assert_eq!(Phase::Grpo.to_string(), "grpo");
    }
}
