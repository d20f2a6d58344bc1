//! What one benchmark step trains on: an SFT sequence or a GRPO micro-batch of random tokens.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use asrl_common::model::ScoringBatch;
use asrl_common::phase::Phase;
use asrl_common::reward::Reward;
use asrl_common::rollout::{RolloutGroup, ScoredCompletion};
use asrl_common::sample::{Completion, FinishReason};
use asrl_learner::training::{LoraPolicy, SftExample, Trainer};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{BenchMode, SftArgs};

pub(super) enum Workload {
    /// Every token after the first is a label, like `labels = input_ids` in the PEFT reference.
    Sft(SftExample),
    /// One group: its completions share the prompt.
    Grpo(RolloutGroup),
}

impl Workload {
    pub(super) fn new(args: &SftArgs, vocab: usize) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut tokens = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..vocab as u32)).collect() };
        Ok(match args.mode {
            BenchMode::Sft => {
                if args.seq < 2 {
                    bail!("--seq must be >= 2");
                }
                Workload::Sft(SftExample { tokens: tokens(args.seq), label_mask: vec![true; args.seq] })
            }
            BenchMode::Grpo => {
                if args.group_size < 2 || args.prompt_tokens == 0 || args.completion_tokens == 0 {
                    bail!("--group-size must be >= 2 (advantages are relative), --prompt-tokens and --completion-tokens >= 1");
                }
                let prompt: Arc<[u32]> = tokens(args.prompt_tokens).into();
                let g = args.group_size;
                let completions = (0..g)
                    .map(|i| {
                        // Distinct rewards, so every completion carries an advantage.
                        let reward = i as f64 / (g - 1) as f64;
                        ScoredCompletion {
                            completion: Completion {
                                tokens: tokens(args.completion_tokens),
                                logprobs: Vec::new(),
                                text: String::new(),
                                finish: FinishReason::Length,
                            },
                            reward: Reward { total: reward, components: BTreeMap::from([("bench".to_string(), reward)]) },
                        }
                    })
                    .collect();
                Workload::Grpo(RolloutGroup {
                    prompt_id: "bench".into(),
                    prompt_tokens: prompt,
                    adapter_version: Default::default(),
                    worker_id: 0,
                    completions,
                })
            }
        })
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Workload::Sft(_) => "sft",
            Workload::Grpo(_) => "grpo",
        }
    }

    pub(super) fn rows(&self) -> usize {
        match self {
            Workload::Sft(_) => 1,
            Workload::Grpo(g) => g.completions.len(),
        }
    }

    /// Tokens through the forward per row (prompt + completion for GRPO).
    pub(super) fn tokens_per_row(&self) -> usize {
        match self {
            Workload::Sft(ex) => ex.tokens.len(),
            Workload::Grpo(g) => g.prompt_tokens.len() + g.completions.first().map_or(0, |c| c.completion.tokens.len()),
        }
    }

    /// The batch the trainer builds from this workload, scored as the trainer scores it.
    pub(super) fn scoring_batch(&self, device: &Device) -> anyhow::Result<ScoringBatch> {
        Ok(match self {
            Workload::Sft(ex) => {
                let labels: Vec<bool> = (0..ex.tokens.len()).map(|i| i > 0).collect();
                ScoringBatch::new(&[(ex.tokens.as_slice(), labels.as_slice())], device)?
            }
            Workload::Grpo(g) => {
                let rows: Vec<(&[u32], &[u32])> =
                    g.completions.iter().map(|c| (&*g.prompt_tokens, c.completion.tokens.as_slice())).collect();
                ScoringBatch::completions(&rows, device)?
            }
        })
    }

    /// GRPO: the behaviour log-probs are the adapter's own (`logprobs` from scoring
    /// [`Workload::scoring_batch`]), as if it had sampled the completions: ratios start at 1.
    pub(super) fn with_behaviour(mut self, logprobs: &Tensor) -> anyhow::Result<Self> {
        if let Workload::Grpo(g) = &mut self {
            let lp = logprobs.to_vec2::<f32>()?;
            let start = g.prompt_tokens.len() - 1;
            for (row, c) in lp.iter().zip(&mut g.completions) {
                let n = c.completion.tokens.len();
                c.completion.logprobs = row.get(start..start + n).context("scored row shorter than its completion")?.to_vec();
            }
        }
        Ok(self)
    }

    /// Starts the phase the steps belong to.
    pub(super) fn begin(&self, trainer: &mut Trainer<LoraPolicy>, planned_steps: usize) -> anyhow::Result<()> {
        let phase = match self {
            Workload::Sft(_) => Phase::Sft,
            Workload::Grpo(_) => Phase::Grpo,
        };
        trainer.begin_phase(0, phase, planned_steps as u64)?;
        Ok(())
    }

    /// One optimiser step (an error when the trainer skipped it); GRPO: the step's behaviour KL.
    pub(super) fn step(&mut self, trainer: &mut Trainer<LoraPolicy>) -> anyhow::Result<Option<f64>> {
        let (applied, kl) = match self {
            Workload::Sft(ex) => {
                let m = trainer.sft_micro_step(std::slice::from_ref(ex))?;
                (m.context("grad_accum_steps = 1 steps on every micro-batch")?.core.applied, None)
            }
            Workload::Grpo(g) => {
                // Sampled by the current adapter, so never dropped as stale.
                g.adapter_version = trainer.adapter_version();
                let m = trainer.grpo_step(std::slice::from_ref(g))?;
                let m = m.first().context("mu = 1 makes one pass")?;
                (m.core.applied, Some(m.behaviour_kl))
            }
        };
        if !applied {
            bail!("a benchmark step was skipped (non-finite loss or gradient)");
        }
        Ok(kl)
    }
}
