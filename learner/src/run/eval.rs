//! Validation: the loss (on the learner) and format accuracy / mean reward of completions the
//! workers generate for validation prompts.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use asrl_common::config::SamplingParams;
use asrl_common::data::Snapshot;
use asrl_common::reward::format_ok_strict;
use asrl_common::rollout::RolloutGroup;
use asrl_common::tokenizer::Tokenizer;

use super::data::{sft_example, stable_sample};
use super::{EpochLoop, RunError};
use crate::service::Activity;
use crate::training::SftExample;

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
    groups: &HashMap<String, RolloutGroup>,
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
                .decode(&c.completion.tokens, true)
                .map_err(|source| RunError::Decode { what: format!("a validation completion of {id}"), source })?;
            let good = format_ok_strict(&text);
            let total = c.reward.total;
            let entry = sums.entry(ty.clone()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(good);
            entry.2 += total;
            ok += usize::from(good);
            n += 1;
            reward += total;
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

impl EpochLoop {
    /// The validation-loss examples of this epoch: a stable sample of the validation split.
    pub(super) fn val_loss_set(&self, snapshot: &Snapshot) -> Result<Vec<SftExample>, RunError> {
        stable_sample(&snapshot.val, self.cfg.eval.loss_examples, self.cfg.run.seed)
            .into_iter()
            .map(|e| sft_example(&self.encoder, e))
            .collect()
    }

    pub(super) fn val_loss(&self, set: &[SftExample]) -> Result<Option<f64>, RunError> {
        if set.is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        let (loss, tokens) = self.trainer.eval_loss(set, self.cfg.eval.micro_batch_size)?;
        tracing::info!(loss, tokens, examples = set.len(), secs = started.elapsed().as_secs_f64(), "validation loss");
        Ok(loss.is_finite().then_some(loss))
    }

    /// Format accuracy and mean reward of worker-generated completions for a stable sample of the
    /// validation split; `None` when the split is empty.
    pub(super) fn validate_generation(&mut self, epoch: usize, snapshot: &Snapshot) -> Result<Option<GenerationEval>, RunError> {
        self.check_stop()?;
        let chosen = stable_sample(&snapshot.val, self.cfg.eval.generate_examples, self.cfg.run.seed);
        if chosen.is_empty() {
            tracing::warn!(epoch, "the validation split is empty: no format accuracy this epoch");
            return Ok(None);
        }
        let prefix = format!("e{epoch}-val");
        let prompts = self.prompt_work(&prefix, &chosen)?;
        let types: HashMap<String, String> =
            chosen.iter().enumerate().map(|(i, e)| (format!("{prefix}{i}"), e.example_type.clone())).collect();
        let e = &self.cfg.eval;
        let sampling = SamplingParams {
            n: e.samples_per_prompt,
            temperature: e.temperature,
            top_p: self.cfg.sampling.top_p,
            max_new_tokens: self.cfg.sampling.max_new_tokens,
            seed: self.cfg.sampling.seed,
        };
        let started = Instant::now();
        self.set_progress(epoch, Activity::Evaluating, BTreeMap::new());
        let wait = self.rollouts.start(prompts, sampling)?;
        let groups = self.rollouts.collect(wait)?;
        let gen = score_generations(&groups, &types, self.encoder.tokenizer())?;
        tracing::info!(
            epoch,
            format_accuracy = gen.format_accuracy,
            reward_mean = gen.reward_mean,
            completions = gen.completions,
            secs = started.elapsed().as_secs_f64(),
            "validation generations scored"
        );
        if let Some(s) = &gen.sample {
            tracing::info!("validation sample: {}", s.chars().take(300).collect::<String>().replace('\n', "⏎"));
        }
        Ok(Some(gen))
    }
}
