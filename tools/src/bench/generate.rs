//! `asrl-tools bench generate`: generation throughput. One prompt (or several `--prompt`s,
//! sampled together in one batch as a worker samples a lease), `-n` samples each of exactly
//! `--max-new-tokens` tokens (eos ignored, like transformers' `min_new_tokens`). Prints
//! tokens/s; `scripts/bench-generate.sh` compares it with transformers.

use std::time::Instant;

use anyhow::Context;
use asrl_common::cli::{ModelArgs, SamplingArgs};
use asrl_common::config::SamplingParams;
use asrl_common::sample::{sample_groups_until, GroupRequest};
use asrl_common::tokenizer::ChatMessage;

#[derive(clap::Args, Debug)]
#[command(mut_arg("model", |a| a.required(true)))]
#[command(mut_arg("max_new_tokens", |a| a.default_value("128")))]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Timed groups (after one untimed warm-up group).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// User message, rendered with the model's chat template. Repeat it for a batch: every
    /// prompt's group is sampled together, one batch of prompts × n sequences.
    #[arg(long, default_value = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?")]
    pub prompt: Vec<String>,
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let dtype = args.model.dtype().to_candle();
    let t0 = Instant::now();
    let path = args.model.model_path()?;
    let loaded = args.model.load_merged().with_context(|| format!("loading {}", path.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let tokenizer = &loaded.tokenizer;
    let prompts: Vec<Vec<u32>> = args
        .prompt
        .iter()
        .map(|p| tokenizer.encode(&tokenizer.apply_chat_template(&[ChatMessage::new("user", p.clone())], true)?, false))
        .collect::<Result<_, _>>()?;
    let sampling = args.sampling.params();
    let batch = prompts.len() * sampling.n;
    // One call = every prompt's group in one batch; each prompt gets its own seed.
    let run = |seed: u64, max_new_tokens: usize| -> anyhow::Result<usize> {
        let requests: Vec<GroupRequest<'_>> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| GroupRequest {
                prompt_ids: p,
                params: SamplingParams { seed: seed * 1000 + i as u64, max_new_tokens, ..sampling.clone() },
            })
            .collect();
        // No stop ids: every sample runs to the length limit.
        let out = sample_groups_until(&loaded.model, None, tokenizer, &requests, batch, &[])?;
        Ok(out.iter().flatten().map(|c| c.tokens.len()).sum())
    };
    run(sampling.seed, 8.min(sampling.max_new_tokens))?;

    let mut total_tokens = 0usize;
    let t = Instant::now();
    for r in 0..args.repeats {
        total_tokens += run(sampling.seed + 1 + r as u64, sampling.max_new_tokens)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let lens: Vec<String> = prompts.iter().map(|p| p.len().to_string()).collect();
    println!(
        "model {} | device {} {:?} | load {load_s:.2}s | prompts of {} tokens | {} batches x {} prompts x {} samples x {} new tokens",
        loaded.name,
        args.model.device,
        dtype,
        lens.join("/"),
        args.repeats,
        prompts.len(),
        sampling.n,
        sampling.max_new_tokens
    );
    println!("generated {total_tokens} tokens in {secs:.3}s");
    println!("tokens_per_s={:.2}", total_tokens as f64 / secs);
    Ok(())
}
