//! The GRPO phase driver: prompts leased to the workers, a trainer step every
//! `grpo.groups_per_step` groups as they arrive, each new adapter published.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use asrl_common::data::{Example, Snapshot};
use asrl_common::phase::Phase;
use asrl_common::rollout::{ExampleKind, PromptWork, RolloutGroup};
use rand::seq::SliceRandom;

use super::position::{EpochCursor, GrpoCursor};
use super::{EpochLoop, RunError};
use crate::service::Activity;
use crate::training::{GrpoStepMetrics, PhaseMetrics};

impl EpochLoop {
    /// GRPO on `questions` training prompts: lease them to the workers, step every
    /// `groups_per_step` groups as they arrive, publish each new adapter, checkpoint every
    /// `checkpoint.every_steps`. A cursor already in GRPO (a resumed epoch) leases only the
    /// questions no update has used yet; groups that arrived after its checkpoint were lost with
    /// the process and their questions are sampled again.
    pub(super) fn grpo_phase(&mut self, snapshot: &Snapshot, cursor: &mut EpochCursor, questions: usize) -> Result<PhaseMetrics, RunError> {
        let epoch = cursor.epoch;
        let per_step = self.cfg.grpo.groups_per_step.max(1);
        if cursor.grpo.is_none() {
            let mut order: Vec<usize> = (0..snapshot.train.len()).collect();
            order.shuffle(self.trainer.rng_mut());
            order.truncate(questions);
            self.trainer.begin_phase(epoch as u64, Phase::Grpo, questions.div_ceil(per_step) as u64)?;
            cursor.grpo = Some(GrpoCursor { questions: order.into_iter().map(|i| i as u32).collect(), trained: Vec::new() });
        } else {
            self.check_resumed_phase(epoch, Phase::Grpo)?;
        }
        let (all, trained) = cursor.grpo.as_ref().map(|g| (g.questions.clone(), g.trained.clone())).unwrap_or_default();
        let done: HashSet<u32> = trained.into_iter().collect();
        let todo: Vec<usize> = (0..all.len()).filter(|p| !done.contains(&(*p as u32))).collect();
        let prefix = format!("e{epoch}-q");
        let chosen: Vec<&Example> = todo.iter().map(|&p| &snapshot.train[all[p] as usize]).collect();
        let mut prompts = self.prompt_work(&prefix, &chosen)?;
        // Prompt ids are the questions' positions, stable across a resume.
        for (prompt, &p) in prompts.iter_mut().zip(&todo) {
            prompt.prompt_id = format!("{prefix}{p}");
        }
        let started = Instant::now();
        self.set_progress(epoch, Activity::Training(Phase::Grpo), BTreeMap::new());
        if !prompts.is_empty() {
            let mut wait = self.rollouts.start(prompts, self.cfg.sampling.clone())?;
            tracing::info!(epoch, questions = todo.len(), of = all.len(), group_size = self.cfg.sampling.n, "GRPO phase: questions leased to the workers");
            let mut pending: Vec<RolloutGroup> = Vec::new();
            while let Some(group) = self.rollouts.next(&mut wait)? {
                pending.push(group);
                if pending.len() >= per_step || wait.remaining() == 0 {
                    self.grpo_step(epoch, &prefix, std::mem::take(&mut pending), cursor)?;
                }
            }
            // The phase can end with groups short of a step when its last prompts were abandoned.
            if !pending.is_empty() {
                self.grpo_step(epoch, &prefix, pending, cursor)?;
            }
        }
        let phase = self.trainer.end_phase()?;
        let leases = self.rollouts.handle().phase_counters();
        tracing::info!(
            epoch,
            steps = phase.steps,
            reward_mean = phase.reward_mean,
            stale_dropped = phase.stale_dropped,
            returned_prompts = leases.returned_prompts,
            rejected_groups = leases.rejected_groups,
            abandoned_prompts = leases.abandoned,
            expired_leases = leases.expired_leases,
            secs = started.elapsed().as_secs_f64(),
            "GRPO phase done"
        );
        Ok(phase)
    }

    /// One trainer step on `groups`, the adapter published, their questions marked trained.
    fn grpo_step(&mut self, epoch: usize, prefix: &str, groups: Vec<RolloutGroup>, cursor: &mut EpochCursor) -> Result<(), RunError> {
        for m in self.trainer.grpo_step(&groups)? {
            self.after_grpo_step(epoch, &m)?;
        }
        self.publish()?;
        if let Some(g) = &mut cursor.grpo {
            g.trained.extend(groups.iter().filter_map(|grp| question_position(prefix, &grp.prompt_id)));
            g.trained.sort_unstable();
        }
        self.checkpoint_if_due(cursor)
    }

    fn after_grpo_step(&mut self, epoch: usize, m: &GrpoStepMetrics) -> Result<(), RunError> {
        if !m.core.applied {
            // Nothing to learn from (every group's rewards equal) or a skipped non-finite step:
            // trainer.jsonl has the details; metrics.jsonl keeps optimiser steps only.
            tracing::info!(epoch, reward_mean = m.reward_mean, zero_std_groups = m.zero_std_group_fraction, "GRPO step skipped");
            return Ok(());
        }
        tracing::info!(
            epoch,
            step = m.core.global_step,
            loss = m.core.loss,
            reward_mean = m.reward_mean,
            zero_std_groups = m.zero_std_group_fraction,
            "GRPO step"
        );
        self.write_grpo_step(m)?;
        self.set_progress(epoch, Activity::Training(Phase::Grpo), BTreeMap::from([("reward_mean".into(), m.reward_mean)]));
        Ok(())
    }

    /// Prompts for the workers; ids are `<prefix><index>`, unique within the phase.
    pub(super) fn prompt_work(&self, prefix: &str, examples: &[&Example]) -> Result<Vec<PromptWork>, RunError> {
        examples
            .iter()
            .enumerate()
            .map(|(i, ex)| {
                let enc = self.encoder.encode(ex).map_err(|source| RunError::tokenise(ex, source))?;
                let prompt_text = self
                    .encoder
                    .tokenizer()
                    .decode(&enc.prompt, false)
                    .map_err(|source| RunError::Decode { what: format!("the prompt of {prefix}{i}"), source })?;
                Ok(PromptWork {
                    prompt_id: format!("{prefix}{i}"),
                    prompt_tokens: enc.prompt.into(),
                    prompt_text,
                    ground_truth: ex.answer.clone(),
                    kind: if ex.answer.trim().is_empty() { ExampleKind::Open } else { ExampleKind::Verifiable },
                    example_type: ex.example_type.clone(),
                })
            })
            .collect()
    }
}

/// The question position in a GRPO prompt id `<prefix><position>`.
fn question_position(prefix: &str, prompt_id: &str) -> Option<u32> {
    prompt_id.strip_prefix(prefix)?.parse().ok()
}
