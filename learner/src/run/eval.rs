//! Validation: the loss (on the learner) and format accuracy / mean reward of completions the
//! workers generate for validation prompts.

use std::collections::{BTreeMap, HashMap};

use asrl_common::reward::format_ok_strict;
use asrl_common::rollout::ExperienceGroup;
use asrl_common::tokenizer::Tokenizer;

use super::RunError;

/// Validation completions, scored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationEval {
    /// Share of completions in the strict format, in [0, 1].
    pub format_accuracy: f64,
    /// Mean total reward (as the workers scored it).
    pub reward_mean: f64,
    pub completions: usize,
    /// Per example type: (completions, format accuracy, mean reward).
    pub by_type: BTreeMap<String, (usize, f64, f64)>,
    /// One completion's text, for the log.
    pub sample: Option<String>,
}

/// Scores `groups`; `types` maps a prompt id to its example type.
pub fn score_generations(
    groups: &HashMap<String, ExperienceGroup>,
    types: &HashMap<String, String>,
    tokenizer: &Tokenizer,
) -> Result<GenerationEval, RunError> {
    let mut ids: Vec<&String> = groups.keys().collect();
    ids.sort();
    let mut sums: BTreeMap<String, (usize, usize, f64)> = BTreeMap::new();
    let (mut ok, mut n, mut reward) = (0usize, 0usize, 0f64);
    // One completion for the log: the first well-formed one, else the first.
    let mut sample: Option<(String, bool)> = None;
    for id in ids {
        let ty = types.get(id).cloned().unwrap_or_else(|| "unknown".into());
        for c in &groups[id].completions {
            let text = tokenizer
                .decode(&c.completion_tokens, true)
                .map_err(|e| RunError::Data(format!("decoding a validation completion of {id}: {e}")))?;
            let good = format_ok_strict(&text);
            let entry = sums.entry(ty.clone()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(good);
            entry.2 += c.reward;
            ok += usize::from(good);
            n += 1;
            reward += c.reward;
            if sample.as_ref().is_none_or(|(_, sample_good)| good && !sample_good) {
                sample = Some((text, good));
            }
        }
    }
    let ratio = |a: f64, b: usize| if b > 0 { a / b as f64 } else { 0.0 };
    Ok(GenerationEval {
        format_accuracy: ratio(ok as f64, n),
        reward_mean: ratio(reward, n),
        completions: n,
        by_type: sums.into_iter().map(|(t, (c, g, r))| (t, (c, ratio(g as f64, c), ratio(r, c)))).collect(),
        sample: sample.map(|(text, _)| text),
    })
}
