//! Batched sampling equals one-group-at-a-time sampling bit for bit (CPU f32, merged weights),
//! on the committed tiny Qwen3 and Llama fixtures.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::model::{load, token_logprobs, LoadedModel};
use crate::sample::sample_group_until;

fn fixture(name: &str) -> LoadedModel {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
    load(&dir, &Device::Cpu, DType::F32).expect("fixture loads")
}

/// Prompts of different lengths with mixed settings: greedy and sampled, n from 1 to 4,
/// different length limits.
fn requests(vocab: usize) -> (Vec<Vec<u32>>, Vec<SamplingParams>) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let prompts: Vec<Vec<u32>> =
        [3usize, 11, 6, 19, 1].iter().map(|&len| (0..len).map(|_| rng.random_range(3..vocab as u32)).collect()).collect();
    let p = |n, temperature, top_p, max_new_tokens, seed| SamplingParams { n, temperature, top_p, max_new_tokens, seed };
    let params =
        vec![p(2, 0.0, 1.0, 9, 1), p(4, 1.0, 0.95, 14, 2), p(3, 0.7, 1.0, 5, 3), p(1, 0.0, 1.0, 12, 4), p(3, 1.3, 0.8, 16, 5)];
    (prompts, params)
}

fn alone(m: &LoadedModel, prompts: &[Vec<u32>], params: &[SamplingParams], stop: &[u32]) -> Vec<Vec<Completion>> {
    prompts.iter().zip(params).map(|(p, s)| sample_group_until(&m.model, None, &m.tokenizer, p, s, stop).unwrap()).collect()
}

fn batched(m: &LoadedModel, prompts: &[Vec<u32>], params: &[SamplingParams], stop: &[u32], max: usize) -> Vec<Vec<Completion>> {
    let reqs: Vec<GroupRequest<'_>> =
        prompts.iter().zip(params).map(|(p, s)| GroupRequest { prompt_ids: p, params: s.clone() }).collect();
    sample_groups_until(&m.model, None, &m.tokenizer, &reqs, max, stop).unwrap()
}

#[test]
fn batched_sampling_equals_sampling_alone() {
    for name in ["tiny-qwen3", "tiny-llama"] {
        let m = fixture(name);
        let (prompts, params) = requests(m.model.config().vocab_size);
        // Stop ids taken from a run without any, so that sequences end at different steps.
        let free = alone(&m, &prompts, &params, &[]);
        let stop = [free[1][0].tokens[3], free[4][2].tokens[6], free[3][0].tokens[7]];
        let want = alone(&m, &prompts, &params, &stop);
        let lengths: std::collections::BTreeSet<usize> = want.iter().flatten().map(|c| c.tokens.len()).collect();
        assert!(lengths.len() >= 4, "{name}: sequences should end at different steps: {lengths:?}");
        assert!(want.iter().flatten().any(|c| c.finish == FinishReason::Eos), "{name}: no sequence hit a stop id");
        // All at once; in batches of 5 sequences (groups wait for slots, join mid-way); and 4
        // (a group of 4 fills the batch alone).
        for max in [64, 5, 4] {
            assert_eq!(batched(&m, &prompts, &params, &stop, max), want, "{name}: batch of {max}");
        }
        // The behaviour log-probs are the training forward's log-probs of the sampled tokens.
        for (group, (prompt, s)) in want.iter().zip(prompts.iter().zip(&params)) {
            let t = if s.temperature == 0.0 { 1.0 } else { s.temperature };
            for c in group {
                let full: Vec<u32> = prompt.iter().chain(&c.tokens).copied().collect();
                let n = full.len();
                let input = Tensor::new(&full[..n - 1], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                let targets = Tensor::new(&full[1..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                let logits = m.model.forward(&input, None).unwrap();
                let lp = token_logprobs(&logits, &targets, t).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
                for (i, &got) in c.logprobs.iter().enumerate() {
                    let want = lp[prompt.len() - 1 + i];
                    assert!((got - want).abs() < 1e-4, "{name}: token {i}: {got} vs {want}");
                }
            }
        }
    }
}

#[test]
fn batched_sampling_checks_its_input() {
    let m = fixture("tiny-llama");
    let ok = SamplingParams { n: 2, temperature: 0.0, top_p: 1.0, max_new_tokens: 3, seed: 0 };
    let run = |prompt: &[u32], params: &SamplingParams, max: usize| {
        let reqs = [GroupRequest { prompt_ids: &[5, 6], params: ok.clone() }, GroupRequest { prompt_ids: prompt, params: params.clone() }];
        sample_groups(&m.model, None, &m.tokenizer, &reqs, max).map_err(|e| e.to_string())
    };
    assert!(run(&[], &ok, 8).unwrap_err().contains("group 1: the prompt has no tokens"));
    assert!(run(&[7], &SamplingParams { top_p: 0.0, ..ok.clone() }, 8).unwrap_err().contains("group 1"));
    assert!(run(&[7], &ok, 0).unwrap_err().contains("max_sequences"));
    assert!(run(&[9999], &ok, 8).is_err(), "a token outside the vocabulary");
    // A zero-length group returns empty completions next to the others.
    let out = run(&[7], &SamplingParams { max_new_tokens: 0, ..ok.clone() }, 1).unwrap();
    assert_eq!((out[0].len(), out[0][0].tokens.len(), out[1].len()), (2, 3, 2));
    assert!(out[1].iter().all(|c| c.tokens.is_empty() && c.finish == FinishReason::Length));
    assert!(sample_groups(&m.model, None, &m.tokenizer, &[], 4).unwrap().is_empty());
}

/// An f16 model goes through candle's ops and the masked attention; its batched log-probs
/// follow its own cached forward, one sequence at a time (to f16 rounding).
#[test]
fn batched_sampling_runs_candle_ops_for_other_dtypes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-llama");
    let m = load(&dir, &Device::Cpu, DType::F16).unwrap();
    let (prompts, params) = requests(m.model.config().vocab_size);
    let out = batched(&m, &prompts, &params, &[], 6);
    let mut worst = 0f32;
    for (group, (prompt, s)) in out.iter().zip(prompts.iter().zip(&params)) {
        assert_eq!(group.len(), s.n);
        let t = if s.temperature == 0.0 { 1.0 } else { s.temperature };
        for c in group {
            assert_eq!(c.tokens.len(), s.max_new_tokens);
            let mut cache = m.model.new_cache();
            let input = Tensor::new(prompt.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let mut logits = vec![m.model.forward_cached_last(&input, &mut cache, None).unwrap()];
            for &tok in &c.tokens[..c.tokens.len() - 1] {
                let x = Tensor::new(&[tok], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                logits.push(m.model.forward_cached_last(&x, &mut cache, None).unwrap());
            }
            let logits = Tensor::stack(&logits, 1).unwrap();
            let targets = Tensor::new(c.tokens.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let lp = token_logprobs(&logits, &targets, t).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            for (got, want) in c.logprobs.iter().zip(lp) {
                worst = worst.max((got - want).abs());
            }
        }
    }
    assert!(worst < 0.02, "f16 batched vs cached log-probs: max difference {worst}");
}
