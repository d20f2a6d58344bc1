//! `asrl-tools bench generate`: generation throughput. One prompt, `-n` samples of exactly
//! `--max-new-tokens` tokens each (eos ignored, like transformers' `min_new_tokens`),
//! KV-cached group sampling as the rollout worker runs it. Prints tokens/s;
//! `scripts/bench-generate.sh` compares it with transformers.

use std::time::Instant;

use anyhow::Context;
use asrl_common::cli::{ModelArgs, SamplingArgs};
use asrl_common::config::SamplingParams;
use asrl_common::sample::sample_group_until;
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
    /// User message, rendered with the model's chat template.
    #[arg(long, default_value = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?")]
    pub prompt: String,
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let dtype = args.model.dtype().to_candle();
    let t0 = Instant::now();
    let path = args.model.model_path()?;
    let loaded = args.model.load_merged().with_context(|| format!("loading {}", path.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let tokenizer = &loaded.tokenizer;
    let prompt = tokenizer.apply_chat_template(&[ChatMessage::new("user", args.prompt.clone())], true)?;
    let prompt_ids = tokenizer.encode(&prompt, false)?;
    let sampling = args.sampling.params();
    let params = |seed, max_new_tokens| SamplingParams { seed, max_new_tokens, ..sampling.clone() };
    // No stop ids: every sample runs to the length limit.
    let warm_up = params(sampling.seed, 8.min(sampling.max_new_tokens));
    sample_group_until(&loaded.model, None, tokenizer, &prompt_ids, &warm_up, &[])?;

    let mut total_tokens = 0usize;
    let t = Instant::now();
    for r in 0..args.repeats {
        let p = params(sampling.seed + 1 + r as u64, sampling.max_new_tokens);
        let out = sample_group_until(&loaded.model, None, tokenizer, &prompt_ids, &p, &[])?;
        total_tokens += out.iter().map(|c| c.tokens.len()).sum::<usize>();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "model {} | device {} {:?} | load {load_s:.2}s | prompt {} tokens | {} groups x {} samples x {} new tokens",
        loaded.name,
        args.model.device,
        dtype,
        prompt_ids.len(),
        args.repeats,
        sampling.n,
        sampling.max_new_tokens
    );
    println!("generated {total_tokens} tokens in {secs:.3}s");
    println!("tokens_per_s={:.2}", total_tokens as f64 / secs);
    Ok(())
}
