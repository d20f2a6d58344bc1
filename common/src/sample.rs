//! KV-cached group sampling: one prefill of each prompt shared by its `n` samples, decoded
//! as a batch (`batch`: many prompts' groups at once), and the [`Completion`] it returns (the
//! one completion type from sampler to trainer).

use rand::Rng;

use crate::config::SamplingParams;
use crate::model::{LoraAdapter, Model, ModelError};
use crate::tokenizer::Tokenizer;

mod batch;

pub use batch::{sample_groups, sample_groups_until, GroupRequest};

/// Why sampling of one completion stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// Sampled one of the tokenizer's eos ids (kept as the last token).
    Eos,
    /// Reached `max_new_tokens`.
    Length,
}

/// One sampled completion: what the worker's sampler returns, what is scored and submitted, and
/// (inside a [`crate::rollout::ScoredCompletion`]) what the trainer's GRPO step reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Sampled tokens, including the final eos token when `finish == Eos`.
    pub tokens: Vec<u32>,
    /// Behaviour log-prob of each sampled token under softmax(logits / T) (T = 1 when greedy),
    /// before top-p truncation: what the learner's PPO ratio divides by. Same length as `tokens`.
    pub logprobs: Vec<f32>,
    /// `tokens` decoded with special tokens skipped. Empty on the learner side: the wire carries
    /// token ids only, and the learner decodes what it needs itself.
    pub text: String,
    pub finish: FinishReason,
}

/// One prefill of `prompt_ids`, then `params.n` samples decoded together from copies of its
/// cache; finished rows leave the batch. Deterministic for a given `params.seed`.
pub fn sample_group(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
) -> Result<Vec<Completion>, ModelError> {
    sample_group_until(model, adapter, tokenizer, prompt_ids, params, tokenizer.eos_token_ids())
}

/// [`sample_group`] stopping on `stop_ids` instead of the tokenizer's eos ids (an empty
/// slice always generates `max_new_tokens`, e.g. for benchmarks).
pub fn sample_group_until(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    stop_ids: &[u32],
) -> Result<Vec<Completion>, ModelError> {
    let request = GroupRequest { prompt_ids, params: params.clone() };
    let mut groups = sample_groups_until(model, adapter, tokenizer, &[request], params.n, stop_ids)?;
    Ok(groups.pop().unwrap_or_default())
}

/// Samples one token; returns it with its log-prob under softmax(logits / T) before top-p
/// (T = 1 for greedy, `temperature == 0`).
pub fn sample_token(logits: &[f32], temperature: f64, top_p: f64, rng: &mut impl Rng) -> (u32, f32) {
    let greedy = temperature == 0.0;
    let inv_t = if greedy { 1.0 } else { (1.0 / temperature) as f32 };
    let scaled: Vec<f32> = logits.iter().map(|&l| l * inv_t).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f64> = scaled.iter().map(|&s| (s as f64 - max as f64).exp()).collect();
    let sum: f64 = probs.iter().sum();
    let lse = max as f64 + sum.ln();
    let logprob = |i: usize| (scaled[i] as f64 - lse) as f32;
    if greedy {
        // First maximum, like torch.argmax.
        let best = scaled.iter().position(|&s| s == max).unwrap_or(0);
        return (best as u32, logprob(best));
    }
    probs.iter_mut().for_each(|p| *p /= sum);
    let tok = if top_p >= 1.0 { sample_from(&probs, 0..probs.len(), 1.0, rng) } else { sample_top_p(&probs, top_p, rng) };
    (tok as u32, logprob(tok))
}

/// Walks `candidates` until the cumulative probability passes u ~ U[0, mass).
fn sample_from(probs: &[f64], candidates: impl Iterator<Item = usize> + Clone, mass: f64, rng: &mut impl Rng) -> usize {
    let u = rng.random::<f64>() * mass;
    let mut acc = 0.0;
    let mut last = 0;
    for i in candidates {
        acc += probs[i];
        last = i;
        if acc > u {
            return i;
        }
    }
    last
}

/// Nucleus sampling: the smallest set of most likely tokens whose mass reaches `top_p`.
/// Buckets by log2(p) first so only the few tokens near the top are sorted.
fn sample_top_p(probs: &[f64], top_p: f64, rng: &mut impl Rng) -> usize {
    const BUCKETS: usize = 64;
    // Bucket k holds p in [2^-(k+1), 2^-k), read off the float's exponent bits (no log2).
    let bucket = |p: f64| -> u8 {
        if p <= 0.0 {
            return (BUCKETS - 1) as u8;
        }
        let exp = ((p.to_bits() >> 52) & 0x7ff) as i64 - 1023; // floor(log2 p) <= 0
        (-exp - 1).clamp(0, BUCKETS as i64 - 1) as u8
    };
    let buckets: Vec<u8> = probs.iter().map(|&p| bucket(p)).collect();
    let mut mass = [0.0f64; BUCKETS];
    for (&p, &b) in probs.iter().zip(&buckets) {
        mass[b as usize] += p;
    }
    let mut cut = BUCKETS - 1;
    let mut acc = 0.0;
    for (k, m) in mass.iter().enumerate() {
        acc += m;
        if acc >= top_p {
            cut = k;
            break;
        }
    }
    let mut cand: Vec<usize> = (0..probs.len()).filter(|&i| buckets[i] as usize <= cut).collect();
    cand.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut kept = 0;
    let mut kept_mass = 0.0;
    for &i in &cand {
        kept += 1;
        kept_mass += probs[i];
        if kept_mass >= top_p {
            break;
        }
    }
    sample_from(probs, cand[..kept].iter().copied(), kept_mass, rng)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        let probs = [0.5, 0.05, 0.3, 0.15];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[sample_top_p(&probs, 0.8, &mut rng)] += 1;
        }
        // {0, 2} reaches 0.8; tokens 1 and 3 are cut.
        assert_eq!((seen[1], seen[3]), (0, 0));
        assert!(seen[0] > seen[2] && seen[2] > 0, "{seen:?}");
        // A long flat tail: the nucleus spans many buckets and is still the exact top set.
        let mut probs = vec![0.4, 0.3];
        probs.extend(std::iter::repeat_n(0.3 / 1000.0, 1000));
        for _ in 0..200 {
            let t = sample_top_p(&probs, 0.69, &mut rng);
            assert!(t < 2, "token {t} is outside the 0.69 nucleus");
        }
    }

    #[test]
    fn greedy_logprob_is_log_softmax_at_argmax() {
        let logits = [1.0f32, 3.0, 2.0];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (t, lp) = sample_token(&logits, 0.0, 1.0, &mut rng);
        let lse = (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert_eq!(t, 1);
        assert!((lp as f64 - (3.0 - lse)).abs() < 1e-6);
    }

    #[test]
    fn tempered_logprob_is_before_top_p() {
        let logits = [0.0f32, 1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (t, lp) = sample_token(&logits, 0.5, 0.5, &mut rng);
        // top_p 0.5 keeps only token 1; its log-prob is still under the full softmax(l / 0.5).
        let expected = 2.0 - (1f64 + 2f64.exp()).ln();
        assert_eq!(t, 1);
        assert!((lp as f64 - expected).abs() < 1e-6);
    }
}
