//! Batched sampling of many prompts' groups: one prefill per prompt, its cache shared by the
//! prompt's samples, then decode steps over every live sequence at once. Sequences that finish
//! leave the batch at once and free their slot; waiting prompts are admitted as slots free up
//! (continuous batching), so at most `max_sequences` sequences decode together.
//!
//! Each prompt keeps its own seeded generator, drawn in the same order as when it is sampled
//! alone, and each row's logits do not depend on the other rows (see `model::decode`), so a
//! (prompt, seed) gives the same completions alone or in any batch.

use std::collections::BTreeSet;

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{sample_token, Completion, FinishReason};
use crate::config::SamplingParams;
use crate::model::{BatchKvCache, LoraAdapter, Model, ModelError};
use crate::tokenizer::Tokenizer;

/// One prompt's group in a batched call: `params.n` samples of `prompt_ids` (`params.seed` is
/// this prompt's own).
#[derive(Debug, Clone)]
pub struct GroupRequest<'a> {
    pub prompt_ids: &'a [u32],
    pub params: SamplingParams,
}

/// Every request's group, sampled together with up to `max_sequences` sequences per decode
/// step (a group is never split: a larger `n` raises the limit to `n`). Groups come back in
/// request order, each as [`super::sample_group`] returns it alone.
pub fn sample_groups(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    tokenizer: &Tokenizer,
    requests: &[GroupRequest<'_>],
    max_sequences: usize,
) -> Result<Vec<Vec<Completion>>, ModelError> {
    sample_groups_until(model, adapter, tokenizer, requests, max_sequences, tokenizer.eos_token_ids())
}

/// [`sample_groups`] stopping on `stop_ids` instead of the tokenizer's eos ids (an empty slice
/// always generates `max_new_tokens`, e.g. for benchmarks).
pub fn sample_groups_until(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    tokenizer: &Tokenizer,
    requests: &[GroupRequest<'_>],
    max_sequences: usize,
    stop_ids: &[u32],
) -> Result<Vec<Vec<Completion>>, ModelError> {
    for (i, r) in requests.iter().enumerate() {
        r.params.validate().map_err(|e| ModelError::Input(format!("group {i}: {e}")))?;
        if r.prompt_ids.is_empty() {
            return Err(ModelError::Input(format!("group {i}: the prompt has no tokens")));
        }
    }
    if max_sequences == 0 {
        return Err(ModelError::Input("max_sequences must be at least 1".into()));
    }
    let mut batch = Batch::new(model, adapter, requests, max_sequences, stop_ids)?;
    // On the pool: a decode step makes hundreds of small parallel calls (see `asrl_ops::on_pool`).
    asrl_ops::on_pool(|| batch.run())?;
    batch
        .groups
        .into_iter()
        .map(|g| {
            g.rows
                .into_iter()
                .map(|row| {
                    let text = tokenizer.decode(&row.tokens, true)?;
                    let finish = row.finish.unwrap_or(FinishReason::Length);
                    Ok(Completion { tokens: row.tokens, logprobs: row.logprobs, text, finish })
                })
                .collect()
        })
        .collect()
}

#[derive(Default)]
struct Row {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
}

struct Group {
    rng: ChaCha8Rng,
    params: SamplingParams,
    rows: Vec<Row>,
    prompt_slot: Option<usize>,
    live: usize,
    /// This step's rows in [`Batch::live`].
    step_rows: std::ops::Range<usize>,
}

/// A sequence in the decode batch.
#[derive(Clone, Copy)]
struct Live {
    group: usize,
    sample: usize,
    slot: usize,
}

struct Batch<'a> {
    model: &'a Model,
    adapter: Option<&'a LoraAdapter>,
    requests: &'a [GroupRequest<'a>],
    stop_ids: &'a [u32],
    groups: Vec<Group>,
    /// Decoding sequences, ordered by (group, sample): each group draws in sample order.
    live: Vec<Live>,
    cache: Option<BatchKvCache>,
    free_slots: BTreeSet<usize>,
    free_prompts: BTreeSet<usize>,
    admitted: usize,
}

impl<'a> Batch<'a> {
    fn new(
        model: &'a Model,
        adapter: Option<&'a LoraAdapter>,
        requests: &'a [GroupRequest<'a>],
        max_sequences: usize,
        stop_ids: &'a [u32],
    ) -> Result<Self, ModelError> {
        let groups = requests
            .iter()
            .map(|r| Group {
                rng: ChaCha8Rng::seed_from_u64(r.params.seed),
                params: r.params.clone(),
                rows: (0..r.params.n).map(|_| Row::default()).collect(),
                prompt_slot: None,
                live: 0,
                step_rows: 0..0,
            })
            .collect();
        let seqs = requests.iter().map(|r| r.params.n).max().unwrap_or(1).max(max_sequences);
        // Only tokens fed back are cached: the last sampled one never is.
        let fed_back = requests.iter().map(|r| r.params.max_new_tokens.saturating_sub(1)).max().unwrap_or(0);
        let prompt_len = requests.iter().map(|r| r.prompt_ids.len()).max().unwrap_or(0);
        let prompts = requests.len().min(seqs);
        let cache = if fed_back > 0 { Some(model.new_batch_cache(prompts, prompt_len, seqs, fed_back)?) } else { None };
        Ok(Self {
            model,
            adapter,
            requests,
            stop_ids,
            groups,
            live: Vec::new(),
            cache,
            free_slots: (0..seqs).collect(),
            free_prompts: (0..prompts).collect(),
            admitted: 0,
        })
    }

    fn run(&mut self) -> Result<(), ModelError> {
        loop {
            while self.admitted < self.requests.len()
                && self.free_slots.len() >= self.requests[self.admitted].params.n
                && !self.free_prompts.is_empty()
            {
                self.admit(self.admitted)?;
                self.admitted += 1;
            }
            if self.live.is_empty() {
                if self.admitted == self.requests.len() {
                    return Ok(());
                }
                // Unreachable: with nothing live every slot is free, and a group fits them all.
                return Err(ModelError::Input("batched sampling: a group does not fit the batch".into()));
            }
            self.step()?;
        }
    }

    /// Prefills group `g`'s prompt, draws its first tokens and puts the unfinished samples in
    /// the batch.
    fn admit(&mut self, g: usize) -> Result<(), ModelError> {
        let request = &self.requests[g];
        if request.params.max_new_tokens == 0 {
            return Ok(());
        }
        let prompt = Tensor::new(request.prompt_ids, self.model.device())?.unsqueeze(0)?;
        let mut prefill = self.model.new_cache_with_capacity(request.prompt_ids.len());
        let logits = self.model.forward_cached_last(&prompt, &mut prefill, self.adapter)?; // (1, vocab)
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let group = &mut self.groups[g];
        let mut continuing = Vec::new();
        for sample in 0..group.rows.len() {
            if !draw(group, sample, &logits, self.stop_ids) {
                continuing.push(sample);
            }
        }
        if continuing.is_empty() {
            return Ok(());
        }
        let (Some(cache), Some(prompt_slot)) = (self.cache.as_mut(), self.free_prompts.pop_first()) else {
            return Err(ModelError::Input("batched sampling: no prompt slot or cache for a continuing group".into()));
        };
        cache.set_prompt(prompt_slot, &prefill)?;
        group.prompt_slot = Some(prompt_slot);
        group.live = continuing.len();
        for sample in continuing {
            let slot = self.free_slots.pop_first().expect("admission checked the free slots");
            cache.start_sequence(slot, prompt_slot)?;
            self.live.push(Live { group: g, sample, slot });
        }
        Ok(())
    }

    /// One decode step over every live sequence, then each group draws its rows' tokens.
    fn step(&mut self) -> Result<(), ModelError> {
        let cache = self.cache.as_mut().expect("live sequences have a cache");
        let tokens: Vec<u32> = self.live.iter().map(|l| *self.groups[l.group].rows[l.sample].tokens.last().unwrap_or(&0)).collect();
        let slots: Vec<usize> = self.live.iter().map(|l| l.slot).collect();
        let logits = self.model.decode_step(&tokens, &slots, cache, self.adapter)?;
        let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let vocab = logits.len() / self.live.len();
        let mut start = 0;
        for g in self.groups.iter_mut() {
            g.step_rows = 0..0;
        }
        while start < self.live.len() {
            let group = self.live[start].group;
            let end = start + self.live[start..].iter().take_while(|l| l.group == group).count();
            self.groups[group].step_rows = start..end;
            start = end;
        }
        // Groups draw in parallel, each from its own generator: same draws as alone.
        let (live, stop_ids) = (&self.live, self.stop_ids);
        self.groups.par_iter_mut().filter(|g| !g.step_rows.is_empty()).for_each(|group| {
            for j in group.step_rows.clone() {
                draw(group, live[j].sample, &logits[j * vocab..(j + 1) * vocab], stop_ids);
            }
        });
        let mut kept = Vec::with_capacity(self.live.len());
        for l in std::mem::take(&mut self.live) {
            let group = &mut self.groups[l.group];
            if group.rows[l.sample].finish.is_none() {
                kept.push(l);
                continue;
            }
            cache.end_sequence(l.slot);
            self.free_slots.insert(l.slot);
            group.live -= 1;
            if group.live == 0 {
                if let Some(p) = group.prompt_slot.take() {
                    self.free_prompts.insert(p);
                }
            }
        }
        self.live = kept;
        Ok(())
    }
}

/// Draws the next token of `group`'s `sample` from `logits`; true when the sample finished.
fn draw(group: &mut Group, sample: usize, logits: &[f32], stop_ids: &[u32]) -> bool {
    let (tok, lp) = sample_token(logits, group.params.temperature, group.params.top_p, &mut group.rng);
    let row = &mut group.rows[sample];
    row.tokens.push(tok);
    row.logprobs.push(lp);
    if stop_ids.contains(&tok) {
        row.finish = Some(FinishReason::Eos);
    } else if row.tokens.len() >= group.params.max_new_tokens {
        row.finish = Some(FinishReason::Length);
    }
    row.finish.is_some()
}

#[cfg(test)]
mod tests;
