use serde::{Deserialize, Serialize};

/// How a rollout group is sampled. Defaults are the paper's GRPO settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Completions per prompt (the GRPO group size).
    pub n: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus sampling mass; 1 disables it.
    pub top_p: f64,
    /// Generation stops after this many new tokens (or at an eos token).
    pub max_new_tokens: usize,
    /// Seed of the sampler's RNG; the same seed, model and prompt give the same group.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { n: 6, temperature: 0.7, top_p: 0.95, max_new_tokens: 300, seed: 0 }
    }
}

/// A [`SamplingParams`] field, named as the config file and the wire name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingField {
    N,
    Temperature,
    TopP,
    MaxNewTokens,
}

impl SamplingField {
    /// The key under `[sampling]` (`sampling.n`, ...).
    pub fn config_key(self) -> &'static str {
        match self {
            Self::N => "sampling.n",
            Self::Temperature => "sampling.temperature",
            Self::TopP => "sampling.top_p",
            Self::MaxNewTokens => "sampling.max_new_tokens",
        }
    }

    /// The field of `asrl.v1.SamplingParams`.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::N => "group_size",
            Self::Temperature => "temperature",
            Self::TopP => "top_p",
            Self::MaxNewTokens => "max_new_tokens",
        }
    }
}

/// Why a [`SamplingParams`] cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", field.config_key())]
pub struct SamplingError {
    pub field: SamplingField,
    pub message: String,
}

impl SamplingParams {
    /// What any sampling call needs: `n >= 1`, a finite `temperature >= 0`, `top_p` in (0, 1].
    /// (`max_new_tokens = 0` samples empty completions; see [`Self::validate_for_rollout`].)
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |field, message: String| Err(SamplingError { field, message });
        if self.n == 0 {
            return bad(SamplingField::N, "must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(SamplingField::Temperature, format!("is {}: must be finite and >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(SamplingField::TopP, format!("is {}: must be in (0, 1]", self.top_p));
        }
        Ok(())
    }

    /// [`Self::validate`] plus `max_new_tokens >= 1`: the settings a GRPO rollout is leased with
    /// (the learner rejects empty completions, so a zero budget could never complete a prompt).
    pub fn validate_for_rollout(&self) -> Result<(), SamplingError> {
        self.validate()?;
        if self.max_new_tokens == 0 {
            return Err(SamplingError { field: SamplingField::MaxNewTokens, message: "must be at least 1".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_its_field() {
        let ok = SamplingParams::default();
        assert!(ok.validate_for_rollout().is_ok());
        let field = |p: SamplingParams| p.validate_for_rollout().unwrap_err().field;
        assert_eq!(field(SamplingParams { n: 0, ..ok.clone() }), SamplingField::N);
        assert_eq!(field(SamplingParams { temperature: f64::NAN, ..ok.clone() }), SamplingField::Temperature);
        assert_eq!(field(SamplingParams { temperature: -0.1, ..ok.clone() }), SamplingField::Temperature);
        assert_eq!(field(SamplingParams { top_p: 0.0, ..ok.clone() }), SamplingField::TopP);
        assert_eq!(field(SamplingParams { top_p: 1.5, ..ok.clone() }), SamplingField::TopP);
        let empty = SamplingParams { max_new_tokens: 0, ..ok };
        assert!(empty.validate().is_ok(), "a zero budget is valid for the sampler");
        assert_eq!(field(empty), SamplingField::MaxNewTokens);
        let e = SamplingParams { top_p: 0.0, ..Default::default() }.validate().unwrap_err();
        assert_eq!(e.to_string(), "sampling.top_p: is 0: must be in (0, 1]");
        assert_eq!(e.field.wire_name(), "top_p");
    }
}
