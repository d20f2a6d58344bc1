//! The stages of one GRPO step as plain functions of the groups, each testable alone:
//! [`check_groups`] → [`group_advantages`] → [`RolloutStats::of`] → [`drop_stale`] →
//! [`with_signal`] → [`pack_micro_batch`] (the passes themselves need the policy and live in
//! `Trainer::grpo_step`).

use std::collections::BTreeMap;

use asrl_common::config::AdvantageScaling;
use asrl_common::rollout::{AdapterVersion, RolloutGroup};
use asrl_common::sample::{Completion, FinishReason};

use super::advantage::{compute_advantages, Advantages};
use super::trainer::check_token_ids;
use super::TrainError;

/// One completion that enters the loss: its group's prompt, the completion, its advantage.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub prompt: &'a [u32],
    pub completion: &'a Completion,
    pub advantage: f32,
}

/// Stage 1: every group has a prompt, every token id is in the vocabulary, and every completion
/// has one behaviour log-prob per token. Errors name the group and completion.
pub fn check_groups(groups: &[RolloutGroup], vocab: usize) -> Result<(), TrainError> {
    for (gi, group) in groups.iter().enumerate() {
        if group.prompt_tokens.is_empty() {
            return Err(TrainError::Input(format!("group {gi}: empty prompt")));
        }
        check_token_ids(&group.prompt_tokens, vocab, || format!("group {gi} prompt"))?;
        for (ci, c) in group.completions.iter().enumerate() {
            let c = &c.completion;
            check_token_ids(&c.tokens, vocab, || format!("group {gi} completion {ci}"))?;
            if c.tokens.len() != c.logprobs.len() {
                return Err(TrainError::Input(format!(
                    "group {gi} completion {ci}: {} tokens but {} behaviour log-probs",
                    c.tokens.len(),
                    c.logprobs.len()
                )));
            }
        }
    }
    Ok(())
}

/// Stage 2: group-relative advantages of the total rewards.
pub fn group_advantages(groups: &[RolloutGroup], scaling: AdvantageScaling, eps: f64) -> Advantages {
    let rewards: Vec<Vec<f64>> = groups.iter().map(|g| g.completions.iter().map(|c| c.reward.total).collect()).collect();
    compute_advantages(&rewards, scaling, eps)
}

/// Reward and length statistics over every completion received (stale ones included).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RolloutStats {
    pub completions: usize,
    pub reward_sum: f64,
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Mean of every reward component by name (a completion without it counts as 0).
    pub reward_components: BTreeMap<String, f64>,
    pub completion_len_mean: f64,
    /// Share of completions that stopped at max_new_tokens ([`FinishReason::Length`]).
    pub truncation_rate: f64,
}

impl RolloutStats {
    pub fn of(groups: &[RolloutGroup]) -> Self {
        let all: Vec<_> = groups.iter().flat_map(|g| &g.completions).collect();
        let n = all.len().max(1) as f64;
        let reward_sum: f64 = all.iter().map(|c| c.reward.total).sum();
        let reward_mean = reward_sum / n;
        let reward_std = (all.iter().map(|c| (c.reward.total - reward_mean).powi(2)).sum::<f64>() / n).sqrt();
        let mut reward_components: BTreeMap<String, f64> = BTreeMap::new();
        for c in &all {
            for (k, v) in &c.reward.components {
                *reward_components.entry(k.clone()).or_default() += v / n;
            }
        }
        Self {
            completions: all.len(),
            reward_sum,
            reward_mean,
            reward_std,
            reward_components,
            completion_len_mean: all.iter().map(|c| c.completion.tokens.len() as f64).sum::<f64>() / n,
            truncation_rate: all.iter().filter(|c| c.completion.finish == FinishReason::Length).count() as f64 / n,
        }
    }
}

/// Stage 3, the off-policy guard: the completions whose group was sampled at most
/// `max_staleness` versions behind `latest` ([`AdapterVersion::is_stale`], the same rule the
/// service applies at submission), each with its advantage; and how many were dropped.
pub fn drop_stale<'a>(
    groups: &'a [RolloutGroup],
    advantages: &Advantages,
    latest: AdapterVersion,
    max_staleness: u64,
) -> (Vec<Sample<'a>>, usize) {
    let mut kept = Vec::new();
    let mut stale = 0;
    for (group, adv) in groups.iter().zip(&advantages.per_group) {
        if group.adapter_version.is_stale(latest, max_staleness) {
            stale += group.completions.len();
            continue;
        }
        for (c, &a) in group.completions.iter().zip(adv) {
            kept.push(Sample { prompt: &group.prompt_tokens, completion: &c.completion, advantage: a as f32 });
        }
    }
    (kept, stale)
}

/// Stage 4: the samples worth a forward pass. Sequences without tokens, or (with no KL term,
/// `beta == 0`) with zero advantage, contribute exactly zero loss and gradient: they count in
/// the loss normaliser but skip the forward pass.
pub fn with_signal<'s, 'a>(kept: &'s [Sample<'a>], beta: f64) -> Vec<&'s Sample<'a>> {
    kept.iter().filter(|s| !s.completion.tokens.is_empty() && (beta != 0.0 || s.advantage != 0.0)).collect()
}

/// The loss inputs of one micro-batch, laid out like the forward's `ScoringBatch` of the same
/// rows (sequences `prompt ++ completion`, right-padded), one column narrower.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedBatch {
    pub rows: usize,
    /// Longest `prompt ++ completion`.
    pub seq: usize,
    /// (rows, seq - 1): 1 where logit position p predicts a completion token.
    pub mask: Vec<f32>,
    /// (rows, seq - 1): behaviour log-probs at the masked positions, 0 elsewhere.
    pub behaviour: Vec<f32>,
    /// One per row.
    pub advantages: Vec<f32>,
}

/// Stage 5 (per micro-batch of a pass): logit position `len(prompt) − 1 + j` predicts
/// completion token `j`.
pub fn pack_micro_batch(chunk: &[&Sample<'_>]) -> PackedBatch {
    let seq = chunk.iter().map(|s| s.prompt.len() + s.completion.tokens.len()).max().unwrap_or(0);
    let (rows, t) = (chunk.len(), seq.saturating_sub(1));
    let mut mask = vec![0f32; rows * t];
    let mut behaviour = vec![0f32; rows * t];
    let mut advantages = Vec::with_capacity(rows);
    for (row, s) in chunk.iter().enumerate() {
        let (prompt, tokens) = (s.prompt, &s.completion.tokens);
        let start = row * t + prompt.len() - 1;
        mask[start..start + tokens.len()].fill(1.0);
        behaviour[start..start + tokens.len()].copy_from_slice(&s.completion.logprobs);
        advantages.push(s.advantage);
    }
    PackedBatch { rows, seq, mask, behaviour, advantages }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use asrl_common::reward::Reward;
    use asrl_common::rollout::ScoredCompletion;

    use super::*;

    fn completion(tokens: &[u32], reward: f64, finish: FinishReason) -> ScoredCompletion {
        ScoredCompletion {
            completion: Completion { tokens: tokens.to_vec(), logprobs: vec![-0.5; tokens.len()], text: String::new(), finish },
            reward: Reward { total: reward, components: [("r".to_string(), reward)].into() },
        }
    }

    fn group(prompt: &[u32], version: u64, completions: Vec<ScoredCompletion>) -> RolloutGroup {
        RolloutGroup {
            prompt_id: "p".into(),
            prompt_tokens: Arc::from(prompt),
            adapter_version: AdapterVersion::new(version),
            worker_id: 1,
            completions,
        }
    }

    fn two_groups() -> Vec<RolloutGroup> {
        let eos = FinishReason::Eos;
        vec![
            group(&[1, 2], 3, vec![completion(&[4, 5], 1.0, eos), completion(&[6], 0.0, FinishReason::Length)]),
            group(&[7], 1, vec![completion(&[8, 9, 3], 0.5, eos), completion(&[2], 0.5, eos)]),
        ]
    }

    #[test]
    fn check_groups_names_the_bad_completion() {
        let mut g = two_groups();
        check_groups(&g, 10).unwrap();
        g[1].completions[1].completion.logprobs.push(-1.0);
        let e = check_groups(&g, 10).unwrap_err().to_string();
        assert!(e.contains("group 1 completion 1: 1 tokens but 2 behaviour log-probs"), "{e}");
        let e = check_groups(&two_groups(), 9).unwrap_err().to_string();
        assert!(e.contains("group 1 completion 0: token 1 is 9, vocab size is 9"), "{e}");
        let mut g = two_groups();
        g[0].prompt_tokens = Arc::from(Vec::new());
        assert!(check_groups(&g, 10).unwrap_err().to_string().contains("group 0: empty prompt"));
    }

    #[test]
    fn advantages_and_stats_cover_every_completion() {
        let g = two_groups();
        let adv = group_advantages(&g, AdvantageScaling::None, 0.0);
        assert_eq!(adv.per_group, vec![vec![0.5, -0.5], vec![0.0, 0.0]]);
        assert_eq!(adv.zero_std_groups, 1);
        let s = RolloutStats::of(&g);
        assert_eq!(s.completions, 4);
        assert_eq!((s.reward_sum, s.reward_mean), (2.0, 0.5));
        assert!((s.reward_std - (0.125f64).sqrt()).abs() < 1e-12);
        assert_eq!(s.reward_components["r"], 0.5);
        assert_eq!(s.completion_len_mean, 7.0 / 4.0);
        assert_eq!(s.truncation_rate, 0.25, "one Length finish out of four");
        assert_eq!(RolloutStats::of(&[]).reward_mean, 0.0);
    }

    #[test]
    fn stale_groups_are_dropped_whole_against_the_latest_version() {
        let g = two_groups();
        let adv = group_advantages(&g, AdvantageScaling::None, 0.0);
        let (kept, stale) = drop_stale(&g, &adv, AdapterVersion::new(3), 1);
        assert_eq!(stale, 2, "group 1 was sampled two versions behind");
        assert_eq!(kept.len(), 2);
        assert_eq!((kept[0].prompt, kept[0].advantage), (&[1u32, 2][..], 0.5));
        let (kept, stale) = drop_stale(&g, &adv, AdapterVersion::new(3), 2);
        assert_eq!((kept.len(), stale), (4, 0));

        // Zero-advantage samples need no forward pass unless the KL term reads them.
        assert_eq!(with_signal(&kept, 0.0).len(), 2);
        assert_eq!(with_signal(&kept, 0.1).len(), 4);
    }

    #[test]
    fn micro_batch_layout_puts_completion_tokens_after_their_prompt() {
        let g = two_groups();
        let adv = group_advantages(&g, AdvantageScaling::None, 0.0);
        let (kept, _) = drop_stale(&g, &adv, AdapterVersion::new(3), 5);
        let chunk: Vec<&Sample> = vec![&kept[0], &kept[2]];
        let b = pack_micro_batch(&chunk);
        assert_eq!((b.rows, b.seq), (2, 4));
        // The engine's scoring batch of the same rows: same ids, and its mask (one column wider)
        // scores exactly the positions the packed mask marks.
        let rows: Vec<(&[u32], &[u32])> = chunk.iter().map(|s| (s.prompt, s.completion.tokens.as_slice())).collect();
        let sb = asrl_common::model::ScoringBatch::completions(&rows, &candle_core::Device::Cpu).unwrap();
        assert_eq!(sb.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap(), vec![1, 2, 4, 5, 7, 8, 9, 3]);
        let sb_mask = sb.mask().narrow(1, 0, b.seq - 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(sb_mask, b.mask);
        // Row 0: prompt of 2, so positions 1 and 2 predict the completion; row 1: prompt of 1.
        assert_eq!(b.mask, vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(b.behaviour, vec![0.0, -0.5, -0.5, -0.5, -0.5, -0.5]);
        assert_eq!(b.advantages, vec![0.5, 0.0]);
    }
}
